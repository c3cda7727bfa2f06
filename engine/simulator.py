"""``journeyline simulate``: a population living through months of virtual time.

Synthetic contacts behave by stage (daily chances of each event, from a profile), react to
what the workflows send them (they open and click at the profile's rates, and an email can
raise the chance of an event for a while: a trial offer makes a trial likelier), and the
engine moves them through the journey. Deterministic for a seed. The result is a funnel
(contacts reaching each stage, conversion, median time in stage), emails per step, goal
conversions per workflow and per A/B variant, a stage-over-time series, and an HTML report.

It runs the real pipeline on a throw-away SQLite file with the inline broker, so what it
shows is what the workflows do.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, select

from connectors.email import RecordingEmailConnector
from engine.clock import VirtualClock
from engine.db import make_engine
from engine.models import Action, Contact, Enrollment, StageTransition
from engine.registry import Registry, load_registry, registry_from_module
from engine.runtime import Runtime
from engine.settings import Settings

# --- the behaviour profile ----------------------------------------------------------------

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

PLANS = (("starter", 49), ("team", 149), ("business", 499))
ZONES = (
    "Europe/Madrid",
    "America/New_York",
    "Europe/London",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Australia/Sydney",
)


@dataclass(frozen=True)
class Profile:
    behaviour: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_BEHAVIOUR)
    reactions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_REACTIONS)
    open_rate: float = 0.35
    click_rate: float = 0.08  # of all delivered, not of opens
    promoter_share: float = 0.45
    detractor_share: float = 0.15
    new_contacts_share_day0: float = 0.3  # the rest arrive spread over the run

    @classmethod
    def from_file(cls, path: Path) -> Profile:
        data = json.loads(path.read_text())
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown profile keys {unknown}; known: {sorted(known)}")
        return cls(**data)


# --- results ------------------------------------------------------------------------------


@dataclass
class FunnelRow:
    stage: str
    reached: int
    conversion: float | None  # reached / reached of the stage before, in journey order
    median_days_in_stage: float | None


@dataclass
class SimulationResult:
    label: str
    contacts: int
    days: int
    seed: int
    events: int
    seconds: float
    funnel: list[FunnelRow]
    emails: dict[str, int]  # "workflow:step" -> sent
    goals: dict[str, tuple[int, int]]  # workflow -> (entered, converted)
    variants: dict[str, tuple[int, int]]  # "workflow:split=variant" -> (entered, converted)
    daily: list[dict[str, int]]  # per day: stage -> contacts
    stages: list[str]


# --- running --------------------------------------------------------------------------------


def load_workflows(source: str | Path) -> Registry:
    """A module name (``workflows``) or a folder holding a workflows package."""
    path = Path(source)
    if not path.is_dir():
        return load_registry(str(source))
    init = path / "__init__.py"
    if not init.exists():
        raise FileNotFoundError(f"{path} has no __init__.py: not a workflows package")
    name = f"_journeyline_sim_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return registry_from_module(module, templates_dir=path / "templates")


def simulate(
    registry: Registry,
    *,
    contacts: int = 1000,
    days: int = 90,
    seed: int = 7,
    profile: Profile | None = None,
    label: str = "",
    on_day: Callable[[int], None] | None = None,
) -> SimulationResult:
    profile = profile or Profile()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="journeyline-simulate-"))
    rng = random.Random(seed)
    url = f"sqlite:///{folder / 'sim.db'}"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    clock = VirtualClock(datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    email = RecordingEmailConnector()
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://", outbox_dir=folder / "outbox"),
        clock=clock,
        registry=registry,
        email=email,
        db=db,
    )
    people = _population(rng, contacts, days, profile)
    boosts: dict[str, dict[str, tuple[float, int]]] = defaultdict(
        dict
    )  # email -> event -> (x, until)
    events = 0
    seen_emails = 0
    daily: list[dict[str, int]] = []
    try:
        for day in range(days):
            stages = _stages(runtime)
            plans = []
            for person in people:
                if person["arrives"] > day:
                    continue
                stage = stages.get(person["email"])
                for event_type, props in _plan(rng, person, stage, day, profile, boosts):
                    plans.append((rng.randrange(8, 21), person, event_type, props))
            plans.sort(key=lambda p: p[0])
            hour_done = 0
            for hour, person, event_type, props in plans:
                if hour > hour_done:
                    clock.advance(hours=hour - hour_done)
                    hour_done = hour
                    runtime.run_until_idle()
                first = stages.get(person["email"]) is None and not person["seen"]
                runtime.track(
                    person["email"],
                    event_type,
                    props,
                    source="simulation",
                    idempotency_key=f"sim:{events}",
                    attributes=person["attributes"] if first else None,
                    timezone=person["timezone"] if first else None,
                )
                person["seen"] = True
                events += 1
            runtime.run_until_idle()
            clock.advance(hours=24 - hour_done)
            runtime.run_until_idle()
            # What the workflows sent today: contacts open, click, and react.
            for message in email.sent[seen_emails:]:
                events += _react(rng, runtime, message, day, profile, boosts)
            seen_emails = len(email.sent)
            runtime.run_until_idle()
            daily.append(Counter(_stages(runtime).values()))
            if on_day is not None:
                on_day(day)
        return _result(
            runtime,
            registry,
            label,
            contacts,
            days,
            seed,
            events,
            time.perf_counter() - started,
            email,
            daily,
        )
    finally:
        runtime.close()
        shutil.rmtree(folder, ignore_errors=True)


def _population(
    rng: random.Random, count: int, days: int, profile: Profile
) -> list[dict[str, Any]]:
    people = []
    for n in range(count):
        plan = rng.choice(PLANS)
        arrives = 0 if rng.random() < profile.new_contacts_share_day0 else rng.randrange(days)
        people.append(
            {
                "email": f"person{n:06d}@sim.example",
                "timezone": rng.choice(ZONES),
                "attributes": {"first_name": f"P{n}", "plan": plan[0]},
                "price": plan[1],
                "intent": min(2.5, max(0.2, rng.lognormvariate(0, 0.5))),
                "arrives": arrives,
                "seen": False,
            }
        )
    return people


def _plan(
    rng: random.Random,
    person: dict[str, Any],
    stage: str | None,
    day: int,
    profile: Profile,
    boosts: dict[str, dict[str, tuple[float, int]]],
) -> list[tuple[str, dict[str, Any]]]:
    if stage is None:
        return [("page.viewed", {"url": "/"})] if not person["seen"] else []
    chosen = []
    mine = boosts.get(person["email"], {})
    for event_type, chance in profile.behaviour.get(stage, {}).items():
        factor, until = mine.get(event_type, (1.0, -1))
        chance *= (
            person["intent"]
            if event_type not in ("product.inactive", "subscription.cancelled")
            else 1.0
        )
        if day <= until:
            chance *= factor
        if rng.random() < min(chance, 0.95):
            chosen.append((event_type, _props(rng, person, event_type, profile)))
    return chosen


def _props(
    rng: random.Random, person: dict[str, Any], event_type: str, profile: Profile
) -> dict[str, Any]:
    if event_type == "order.completed":
        return {"total": person["price"], "plan": person["attributes"]["plan"]}
    if event_type == "trial.started":
        return {"plan": person["attributes"]["plan"]}
    if event_type == "nps.answered":
        roll = rng.random()
        if roll < profile.promoter_share:
            return {"score": rng.choice((9, 10))}
        if roll < profile.promoter_share + profile.detractor_share:
            return {"score": rng.randrange(0, 7)}
        return {"score": rng.choice((7, 8))}
    return {}


def _react(
    rng: random.Random,
    runtime: Runtime,
    message: Any,
    day: int,
    profile: Profile,
    boosts: dict[str, dict[str, tuple[float, int]]],
) -> int:
    action_id = message.custom_args.get("jl_action_id")
    made = 0
    if rng.random() < profile.open_rate:
        runtime.track(
            message.to,
            "email.opened",
            {"action_id": action_id},
            source="simulation",
            idempotency_key=f"open:{action_id}",
        )
        made += 1
        reaction = profile.reactions.get(message.headers.get("X-Journeyline-Template", ""))
        if reaction:
            for event_type, factor in reaction["boost"].items():
                boosts[message.to][event_type] = (float(factor), day + int(reaction["days"]))
        if rng.random() < profile.click_rate / max(profile.open_rate, 1e-9):
            runtime.track(
                message.to,
                "email.clicked",
                {"action_id": action_id},
                source="simulation",
                idempotency_key=f"click:{action_id}",
            )
            made += 1
    return made


def _stages(runtime: Runtime) -> dict[str, str]:
    with Session(runtime.db) as session:
        return dict(session.exec(select(Contact.email, Contact.stage)).all())  # type: ignore[arg-type]


# --- the report -------------------------------------------------------------------------------


def _result(
    runtime: Runtime,
    registry: Registry,
    label: str,
    contacts: int,
    days: int,
    seed: int,
    events: int,
    seconds: float,
    email: RecordingEmailConnector,
    daily: list[Counter[str]],
) -> SimulationResult:
    stages = list(registry.journey.stage_names)
    with Session(runtime.db) as session:
        moves = session.exec(
            select(
                StageTransition.contact_id, StageTransition.to_stage, StageTransition.at
            ).order_by(StageTransition.contact_id, StageTransition.at, StageTransition.id)
        ).all()
        enrollments = session.exec(
            select(Enrollment.workflow, Enrollment.status, Enrollment.context)
        ).all()
        sent = session.exec(
            select(Action.reason).where(Action.kind == "email", Action.status == "sent")
        ).all()
    reached: dict[str, set[int]] = defaultdict(set)
    durations: dict[str, list[float]] = defaultdict(list)
    by_contact: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for contact_id, stage, at in moves:
        reached[stage].add(contact_id)
        by_contact[contact_id].append((stage, at))
    for path in by_contact.values():
        for (stage, entered), (_next, left) in itertools.pairwise(path):
            durations[stage].append((left - entered).total_seconds() / 86400)
    # A funnel counts a contact at every stage up to the furthest they reached: skipping
    # consideration on the way to a trial still passed through it, as funnels are read.
    order = {stage: i for i, stage in enumerate(stages)}
    exits = {s.name for s in registry.journey.stages if s.journey == "exit"}
    furthest: dict[int, int] = {}
    for contact_id, path in by_contact.items():
        ranks = [order[stage] for stage, _ in path if stage not in exits]
        if ranks:
            furthest[contact_id] = max(ranks)
    funnel = []
    previous: int | None = None
    for stage in stages:
        if stage in exits:
            funnel.append(FunnelRow(stage, len(reached.get(stage, ())), None, None))
            continue
        count = sum(1 for rank in furthest.values() if rank >= order[stage])
        conversion = (count / previous) if previous else None
        median = statistics.median(durations[stage]) if durations[stage] else None
        funnel.append(FunnelRow(stage, count, conversion, median))
        previous = count
    emails = Counter(f"{r.get('workflow')}:{r.get('step')}" for r in sent)
    goals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    variants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for workflow, status, context in enrollments:
        goals[workflow][0] += 1
        goals[workflow][1] += status == "converted"
        for split_id, variant in (context.get("variants") or {}).items():
            key = f"{workflow}:{split_id}={variant}"
            variants[key][0] += 1
            variants[key][1] += status == "converted"
    return SimulationResult(
        label=label,
        contacts=contacts,
        days=days,
        seed=seed,
        events=events,
        seconds=seconds,
        funnel=funnel,
        emails=dict(sorted(emails.items())),
        goals={k: (v[0], v[1]) for k, v in sorted(goals.items())},
        variants={k: (v[0], v[1]) for k, v in sorted(variants.items())},
        daily=[dict(d) for d in daily],
        stages=stages,
    )
