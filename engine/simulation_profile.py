"""How a simulated population behaves: daily chances of each event by stage, how emails
change them for a while, open and click rates. The shipped defaults; a profile file merges
over them (``Profile.from_file``); every value is checked, and stages and event types
against the workflows' registry when a run starts (``Profile.registry_problems``)."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ValidationError
from engine.registry import Registry
from engine.steps import SendEmail

# --- the defaults ----------------------------------------------------------------

DEFAULT_BEHAVIOUR: dict[str, dict[str, float]] = {
    "awareness": {"page.viewed": 0.15, "content.downloaded": 0.08, "webinar.attended": 0.03,
                  "demo.requested": 0.01, "trial.started": 0.012},
    "consideration": {"page.viewed": 0.12, "content.downloaded": 0.04, "demo.requested": 0.05,
                      "trial.started": 0.06},
    "decision": {"page.viewed": 0.1, "order.completed": 0.06},
    "purchase": {"product.activated": 0.3},
    "onboarding": {"product.activated": 0.15, "product.used": 0.2,
                   "subscription.cancelled": 0.004},
    "engagement": {"product.used": 0.2, "subscription.renewed": 0.02, "nps.answered": 0.01,
                   "product.inactive": 0.01, "subscription.cancelled": 0.004},
    "retention": {"product.used": 0.2, "order.completed": 0.03, "nps.answered": 0.01,
                  "product.inactive": 0.01, "subscription.cancelled": 0.003},
    "loyalty": {"product.used": 0.2, "nps.answered": 0.03, "subscription.cancelled": 0.002},
    "advocacy": {"product.used": 0.2},
    "churned": {"order.completed": 0.005},
}  # fmt: skip

# An email with this template multiplies the daily chance of an event, for ``days`` days.
DEFAULT_REACTIONS: dict[str, dict[str, Any]] = {
    "trial_offer": {"boost": {"trial.started": 3.0, "order.completed": 1.5}, "days": 7},
    "trial_invitation": {"boost": {"trial.started": 3.0}, "days": 7},
    "trial_reminder": {"boost": {"order.completed": 2.0}, "days": 5},
    "trial_nudge": {"boost": {"order.completed": 1.5}, "days": 5},
    "demo_invitation": {"boost": {"demo.requested": 3.0}, "days": 7},
    "comparison_guide": {"boost": {"trial.started": 1.5}, "days": 7},
    "onboarding_welcome": {"boost": {"product.activated": 1.5}, "days": 5},
    "onboarding_help": {"boost": {"product.activated": 2.0}, "days": 5},
    "winback": {"boost": {"product.used": 2.0, "subscription.cancelled": 0.5}, "days": 10},
    "winback_offer": {"boost": {"order.completed": 2.0}, "days": 10},
    "renewal_reminder": {"boost": {"subscription.renewed": 3.0}, "days": 10},
    "nps_survey": {"boost": {"nps.answered": 25.0}, "days": 3},
}  # fmt: skip


class ProfileError(ValidationError):
    """A behaviour profile that cannot be simulated; ``problems`` names every one found, each
    with its key path (``behaviour["awareness"]["trial.started"]``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message, field="profile")


_SHARES = (
    "open_rate",
    "click_rate",
    "promoter_share",
    "detractor_share",
    "new_contacts_share_day0",
)


@dataclass(frozen=True)
class Profile:
    """How the synthetic population behaves. Built directly, each table given replaces the
    default one; ``from_dict`` / ``from_file`` merge what they are given over the defaults.
    Values are checked here (shares and daily chances from 0 to 1, a click needs an open);
    stages and event types against a registry by ``registry_problems``."""

    behaviour: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_BEHAVIOUR)
    reactions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_REACTIONS)
    open_rate: float = 0.35
    click_rate: float = 0.08  # of all delivered, not of opens
    promoter_share: float = 0.45
    detractor_share: float = 0.15
    new_contacts_share_day0: float = 0.3  # the rest arrive spread over the run

    def __post_init__(self) -> None:
        problems = _value_problems(self)
        if problems:
            raise ProfileError(problems)

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """A profile that overrides the defaults only where ``data`` says: ``behaviour`` per
        stage and per event (a chance of 0 removes that event), ``reactions`` per template
        (``null`` removes a template's reaction), any other field as given."""
        if not isinstance(data, Mapping):
            raise ProfileError([f"a profile is a JSON object, not {type(data).__name__}"])
        known = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(data) - set(known))
        if unknown:
            hints = "".join(_close(key, known) for key in unknown)
            raise ProfileError([f"unknown profile keys {unknown}{hints}; known: {known}"])
        options = dict(data)
        if _is_table(options.get("behaviour")):
            table = {stage: dict(events) for stage, events in DEFAULT_BEHAVIOUR.items()}
            for stage, events in options["behaviour"].items():
                table.setdefault(stage, {}).update(events)
            options["behaviour"] = {
                stage: {event: chance for event, chance in events.items() if chance != 0}
                for stage, events in table.items()
            }
        if isinstance(options.get("reactions"), Mapping):
            merged = {**DEFAULT_REACTIONS, **options["reactions"]}
            options["reactions"] = {k: v for k, v in merged.items() if v is not None}
        return cls(**options)

    @classmethod
    def from_file(cls, path: Path) -> Profile:
        """``from_dict`` of a JSON file."""
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError([f"not valid JSON: {exc}"]) from exc
        return cls.from_dict(data)

    def registry_problems(
        self, registry: Registry, *, sent_elsewhere: Collection[str] = ()
    ) -> list[str]:
        """The stages and event types of this profile that ``registry`` does not know, and
        reactions to templates none of its workflows send.

        Entries the profile shares with the defaults are not checked: the defaults are
        written for the shipped journey, and one for a stage or event another journey lacks
        simply never happens there. ``sent_elsewhere``: templates sent by the other side of
        a comparison; a reaction to one of them is for that side (see ``for_registry``)."""
        stages = list(registry.journey.stage_names)
        events = ", ".join(sorted(registry.events))
        found = []
        for stage, chances in self.behaviour.items():
            default = DEFAULT_BEHAVIOUR.get(stage, {})
            if stage not in stages:
                if chances != default:
                    found.append(
                        f"{_path('behaviour', stage)}: unknown stage{_close(stage, stages)}; "
                        f"stages: {', '.join(stages)}"
                    )
                continue
            found += [
                f"{_path('behaviour', stage, event)}: unknown event type"
                f"{_close(event, registry.events)}; known: {events}"
                for event, chance in chances.items()
                if not registry.knows_event(event) and default.get(event) != chance
            ]
        sent = sorted(sent_templates(registry))
        for template, reaction in self.reactions.items():
            if reaction == DEFAULT_REACTIONS.get(template):
                continue
            if template not in sent:
                if template not in sent_elsewhere:
                    found.append(
                        f"{_path('reactions', template)}: no workflow sends this template"
                        f"{_close(template, sent)}, so the reaction would never apply; "
                        f"templates sent: {', '.join(sent)}"
                    )
                continue  # its events are checked against the side that sends it
            found += [
                f"{_path('reactions', template, 'boost', event)}: unknown event type"
                f"{_close(event, registry.events)}; known: {events}"
                for event in reaction["boost"]
                if not registry.knows_event(event)
            ]
        return found

    def for_registry(self, registry: Registry) -> Profile:
        """This profile without the reactions to templates ``registry`` never sends. They
        would never apply in its run, which is the same with or without them; ``--compare``
        runs each side with its own, so that a reaction to the template only the new version
        sends is not refused for the old one."""
        sent = sent_templates(registry)
        kept = {t: r for t, r in self.reactions.items() if t in sent}
        return (
            self if len(kept) == len(self.reactions) else dataclasses.replace(self, reactions=kept)
        )


def sent_templates(registry: Registry) -> set[str]:
    """The email templates the workflows of ``registry`` send."""
    return {
        node.step.template
        for workflow in registry.workflows.values()
        for node in workflow.program
        if isinstance(node.step, SendEmail)
    }


def _path(name: str, *keys: str) -> str:
    """A key path in a profile, as in its JSON: ``behaviour["awareness"]["trial.started"]``."""
    return name + "".join(f"[{json.dumps(key)}]" for key in keys)


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_problems(profile: Profile) -> list[str]:
    """Every value of ``profile`` out of its range, with its key path."""
    found = []
    for name in _SHARES:
        value = getattr(profile, name)
        if not _is_number(value) or not 0 <= value <= 1:
            found.append(f"{name}: {value!r} is not a share: use a number from 0 to 1")
    if not found and profile.click_rate > profile.open_rate:
        found.append(
            f"click_rate: {profile.click_rate!r} is more than open_rate {profile.open_rate!r}: "
            "a click needs an open (both count among all delivered emails)"
        )
    if not found and profile.promoter_share + profile.detractor_share > 1:
        found.append(
            "promoter_share + detractor_share: more than 1 "
            f"({profile.promoter_share!r} + {profile.detractor_share!r})"
        )
    if isinstance(profile.behaviour, Mapping) and not _is_table(profile.behaviour):
        found += [  # naming the stage whose value is not a table
            "behaviour: not a table of stage -> {event: daily chance}: "
            f"{_path('behaviour', stage)} is {chances!r}, not a table such as "
            '{"trial.started": 0.02}'
            for stage, chances in profile.behaviour.items()
            if not isinstance(chances, Mapping)
        ]
    elif not _is_table(profile.behaviour):
        found.append(
            "behaviour: not a table of stage -> {event: daily chance}, e.g. "
            '{"awareness": {"trial.started": 0.02}}'
        )
    else:
        for stage, chances in profile.behaviour.items():
            for event, chance in chances.items():
                if not _is_number(chance) or not 0 <= chance <= 1:
                    found.append(
                        f"{_path('behaviour', stage, event)}: {chance!r} is not a daily chance: "
                        "use a number from 0 to 1"
                    )
    if not isinstance(profile.reactions, Mapping):
        found.append('reactions: not a table of template -> {"boost": {event: factor}, "days": n}')
        return found
    for template, reaction in profile.reactions.items():
        where = _path("reactions", template)
        if not isinstance(reaction, Mapping) or set(reaction) != {"boost", "days"}:
            found.append(f'{where}: not {{"boost": {{event: factor}}, "days": n}}')
            continue
        days = reaction["days"]
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            found.append(f'{where}["days"]: {days!r} is not a whole number of days (0 or more)')
        if not isinstance(reaction["boost"], Mapping):
            found.append(f'{where}["boost"]: not a table of event -> factor')
            continue
        for event, factor in reaction["boost"].items():
            if not _is_number(factor) or not factor >= 0:
                found.append(
                    f"{_path('reactions', template, 'boost', event)}: {factor!r} is not a "
                    "factor: use a number from 0 (never) up (1: unchanged)"
                )
    return found


def _close(name: str, known: Collection[str]) -> str:
    """ " (did you mean 'x'?)" for a name one typo from a known one, else nothing."""
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {found[0]!r}?)" if found else ""
