"""Loading and validating the user's journey, rules, workflows and guard rails.

The workflows module (``workflows`` by default) may define:

- ``JOURNEY``: a ``Journey`` (default: ``lifecycle_journey()``)
- ``RULES``: a list of ``EventRule``
- ``WORKFLOWS``: a list of ``Workflow``
- ``EVENTS``: extra event types workflows may wait for (beyond those rules name)
- ``GUARDRAILS``: a ``Guardrails`` (frequency cap, quiet hours) over all marketing email

``build_registry`` checks all of it together and raises one ``WorkflowDefinitionError``
listing every problem found, each with the file and line of the workflow.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType

from engine.conditions import Condition
from engine.errors import WorkflowDefinitionError
from engine.machine import StageMachine
from engine.rules import EventRule, RuleSet
from engine.stages import Journey, lifecycle_journey
from engine.steps import (
    WAITS,
    Branch,
    Exit,
    MoveStage,
    SendEmail,
    Split,
    Step,
    Wait,
    WaitForEvent,
    WaitUntil,
    WaitUntilDate,
)
from engine.templates import TemplateRenderer
from engine.workflow import (
    ConditionMet,
    EventReceived,
    Guardrails,
    Scheduled,
    StageEntered,
    StageLeft,
    Window,
    Workflow,
)

# Events the engine itself records (delivery and engagement feedback, lifecycle).
BUILTIN_EVENTS = frozenset({
    "contact.created", "crm.lifecycle_changed", "crm.contact_changed",
    "email.processed", "email.delivered", "email.deferred", "email.opened", "email.clicked",
    "email.bounced", "email.dropped", "email.spam_reported", "email.unsubscribed",
    "email.group_unsubscribed", "email.group_resubscribed",
})  # fmt: skip
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_SENDGRID_TEMPLATE = re.compile(r"^d-[0-9a-f]{32}$")


@dataclass
class Registry:
    journey: Journey
    machine: StageMachine
    rules: RuleSet
    workflows: dict[str, Workflow]
    templates: TemplateRenderer
    guardrails: Guardrails = field(default_factory=Guardrails)
    events: frozenset[str] = frozenset()

    @cached_property
    def condition_items(self) -> tuple[tuple[tuple[str, str, int], Condition], ...]:
        """Every condition-based trigger, goal and exit of the workflows, as ((workflow,
        role, index), condition): worked out once, as a registry's workflows do not change
        after it is built (every event evaluates them all, twice)."""
        found = []
        for workflow in self.workflows.values():
            for role, items in (
                ("trigger", (workflow.trigger,)),
                ("goal", workflow.goals),
                ("exit", workflow.exit_when),
            ):
                for index, item in enumerate(items):
                    if isinstance(item, ConditionMet):
                        found.append(((workflow.name, role, index), item.condition))
        return tuple(found)

    def triggered_by_stage(self, stage: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, StageEntered) and w.trigger.stage == stage
        ]

    def triggered_by_stage_left(self, stage: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, StageLeft) and w.trigger.stage == stage
        ]

    def triggered_by_event(self, event_type: str) -> list[Workflow]:
        return [
            w
            for w in self.workflows.values()
            if isinstance(w.trigger, EventReceived) and w.trigger.type == event_type
        ]

    def triggered_by_condition(self) -> list[Workflow]:
        return [w for w in self.workflows.values() if isinstance(w.trigger, ConditionMet)]

    def triggered_by_schedule(self) -> list[Workflow]:
        return [w for w in self.workflows.values() if isinstance(w.trigger, Scheduled)]

    def knows_event(self, event_type: str) -> bool:
        return self.rules.knows(event_type) or event_type in self.events


def build_registry(
    *,
    journey: Journey | None = None,
    rules: Iterable[EventRule] = (),
    workflows: Iterable[Workflow] = (),
    templates_dir: Path,
    events: Iterable[str] = (),
    guardrails: Guardrails | None = None,
) -> Registry:
    journey = journey or lifecycle_journey()
    problems = journey.problems()
    rule_set = RuleSet(rules)
    problems += rule_set.problems(journey.triggers)
    renderer = TemplateRenderer(templates_dir)
    known_events = frozenset(events) | BUILTIN_EVENTS | rule_set.event_types
    guardrails = guardrails or Guardrails()
    if guardrails.quiet_hours is not None:
        problems += _window_problems("GUARDRAILS quiet hours", guardrails.quiet_hours)
    by_name: dict[str, Workflow] = {}
    for wf in workflows:
        if wf.name in by_name:
            problems.append(f"{_where(wf)}: workflow name {wf.name!r} is used twice")
        by_name[wf.name] = wf
        problems += _workflow_problems(wf, journey, renderer, known_events)
    if problems:
        raise WorkflowDefinitionError(problems)
    return Registry(
        journey, StageMachine(journey), rule_set, by_name, renderer, guardrails, known_events
    )


def _where(wf: Workflow) -> str:
    return f"workflow {wf.name!r}" + (f" ({wf.source})" if wf.source else "")


def _walk(steps: Sequence[Step]) -> Iterator[Step]:
    for step in steps:
        yield step
        if isinstance(step, Branch):
            yield from _walk(step.then)
            yield from _walk(step.otherwise)
        elif isinstance(step, Split):
            for sub in step.variants.values():
                yield from _walk(sub)
        elif isinstance(step, WaitForEvent):
            yield from _walk(step.on_event)
            yield from _walk(step.on_timeout)


def _conditions(wf: Workflow) -> Iterator[Condition]:
    if wf.entry_if is not None:
        yield wf.entry_if
    for item in (wf.trigger, *wf.goals, *wf.exit_when):
        if isinstance(item, ConditionMet):
            yield item.condition
    if isinstance(wf.trigger, Scheduled) and wf.trigger.condition is not None:
        yield wf.trigger.condition
    for step in _walk(wf.steps):
        if isinstance(step, Branch):
            yield step.condition


def _workflow_problems(
    wf: Workflow, journey: Journey, renderer: TemplateRenderer, events: frozenset[str]
) -> list[str]:
    where = _where(wf)
    found: list[str] = []
    stages = set(journey.stage_names)
    for item in (wf.trigger, *wf.goals, *wf.exit_when):
        if isinstance(item, StageEntered | StageLeft) and item.stage not in stages:
            found.append(f"{where}: names unknown stage {item.stage!r}")
        if isinstance(item, EventReceived) and item.type not in events:
            found.append(f"{where}: names unknown event {item.type!r} (no rule or EVENTS entry)")
    for condition in _conditions(wf):
        found += [
            f"{where}: condition names unknown stage {s!r}"
            for s in condition.stages()
            if s not in stages
        ]
    if isinstance(wf.trigger, Scheduled):
        found += _schedule_problems(where, wf.trigger)
    if not wf.steps:
        found.append(f"{where}: has no steps")
    if wf.reentry.policy not in ("never", "always", "after"):
        found.append(f"{where}: re-entry policy {wf.reentry.policy!r} is not never/always/after")
    if wf.send_window is not None:
        found += _window_problems(f"{where}: send window", wf.send_window)
    if wf.cap is not None and (wf.cap.max < 1 or wf.cap.per.total_seconds() <= 0):
        found.append(f"{where}: a frequency cap needs max >= 1 and a positive window")
    found += _block_problems(wf, wf.steps, journey, renderer, events, top=True)
    seen: set[str] = set()
    for node in wf.program:
        if node.id in seen:
            found.append(f"{where}: step id {node.id!r} is used twice")
        seen.add(node.id)
    return found


def _block_problems(
    wf: Workflow,
    steps: Sequence[Step],
    journey: Journey,
    renderer: TemplateRenderer,
    events: frozenset[str],
    *,
    top: bool,
) -> list[str]:
    where = _where(wf)
    found: list[str] = []
    for position, step in enumerate(steps):
        label = f"{where}, step {step.id or position + 1} ({type(step).__name__})"
        if position > 0 and isinstance(steps[position - 1], Exit):
            found.append(f"{label}: unreachable, it follows an exit step")
        if isinstance(step, SendEmail) and step.sendgrid_template:
            if not _SENDGRID_TEMPLATE.match(step.sendgrid_template):
                found.append(
                    f"{label}: sendgrid_template {step.sendgrid_template!r} is not a SendGrid "
                    "dynamic template id ('d-' and 32 lowercase hex digits)"
                )
        elif isinstance(step, SendEmail):
            found += [f"{label}: {p}" for p in renderer.problems(step.template)]
        elif isinstance(step, Wait) and step.duration.total_seconds() <= 0:
            found.append(f"{label}: a wait must be longer than zero")
        elif (
            isinstance(step, WaitUntil | WaitUntilDate) and step.time and not _TIME.match(step.time)
        ):
            found.append(f"{label}: time {step.time!r} is not HH:MM")
        elif isinstance(step, WaitForEvent):
            if step.timeout.total_seconds() <= 0:
                found.append(f"{label}: a wait for an event needs a timeout (it has no exit)")
            if step.type not in events:
                found.append(f"{label}: waits for unknown event {step.type!r}")
        elif isinstance(step, MoveStage) and step.trigger not in journey.triggers:
            found.append(
                f"{label}: unknown stage trigger {step.trigger!r}; known: {list(journey.triggers)}"
            )
        elif isinstance(step, Split):
            if set(step.weights) != set(step.variants):
                found.append(
                    f"{label}: weights {sorted(step.weights)} do not match variants "
                    f"{sorted(step.variants)}"
                )
            elif any(w <= 0 for w in step.weights.values()) or sum(step.weights.values()) != 100:
                found.append(
                    f"{label}: weights must be positive and add up to 100, got {dict(step.weights)}"
                )
            for sub in step.variants.values():
                found += _block_problems(wf, sub, journey, renderer, events, top=False)
        if isinstance(step, Branch):
            found += _block_problems(wf, step.then, journey, renderer, events, top=False)
            found += _block_problems(wf, step.otherwise, journey, renderer, events, top=False)
        elif isinstance(step, WaitForEvent):
            found += _block_problems(wf, step.on_event, journey, renderer, events, top=False)
            found += _block_problems(wf, step.on_timeout, journey, renderer, events, top=False)
    if top and steps and isinstance(steps[-1], WAITS) and not isinstance(steps[-1], WaitForEvent):
        found.append(f"{where}: a wait as the last step does nothing")
    return found


def _schedule_problems(where: str, trigger: Scheduled) -> list[str]:
    from engine.schedules import cron_problem

    found = []
    problem = cron_problem(trigger.cron)
    if problem:
        found.append(
            f"{where}: schedule {trigger.cron!r} is not a valid cron expression ({problem})"
        )
    if trigger.max_delay is not None and trigger.max_delay.total_seconds() <= 0:
        found.append(f"{where}: a schedule's max_delay must be positive")
    return found


def _window_problems(label: str, window: Window) -> list[str]:
    return [
        f"{label}: time {t!r} is not HH:MM"
        for t in (window.start, window.end)
        if not _TIME.match(t)
    ]


def load_registry(module_name: str, *, templates_dir: Path | None = None) -> Registry:
    """Import the workflows module ``module_name`` and validate everything in it."""
    module = importlib.import_module(module_name)
    return registry_from_module(module, templates_dir=templates_dir)


def registry_from_module(module: ModuleType, *, templates_dir: Path | None = None) -> Registry:
    if templates_dir is None:
        if module.__file__ is None:
            raise WorkflowDefinitionError([f"module {module.__name__!r} has no file location"])
        templates_dir = Path(module.__file__).parent / "templates"
    return build_registry(
        journey=getattr(module, "JOURNEY", None),
        rules=getattr(module, "RULES", ()),
        workflows=getattr(module, "WORKFLOWS", ()),
        templates_dir=templates_dir,
        events=getattr(module, "EVENTS", ()),
        guardrails=getattr(module, "GUARDRAILS", None),
    )
