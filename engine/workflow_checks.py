"""Checks of a workflow definition, each problem a sentence naming the workflow, its file
and line, and what is wrong: unknown stages, events, templates and step ids; arguments of
the wrong type (a timeout of None, a wait of "3 days"); splits, windows, caps and guard
rails that cannot work. ``build_registry`` runs them all and reports every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta

from engine.conditions import Condition, DidEvent
from engine.stages import Journey
from engine.steps import (
    WAITS,
    Branch,
    ChangeScore,
    CreateCRMNote,
    CreateCRMTask,
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
from engine.templates import TemplateRenderer, snippet_problems
from engine.workflow import (
    ConditionMet,
    EventReceived,
    FrequencyCap,
    GoalOrExit,
    Guardrails,
    Reentry,
    Scheduled,
    StageEntered,
    StageLeft,
    Trigger,
    Window,
    Workflow,
)

_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_SENDGRID_TEMPLATE = re.compile(r"^d-[0-9a-f]{32}$")


def where_defined(wf: Workflow) -> str:
    return f"workflow {wf.name!r}" + (f" ({wf.source})" if wf.source else "")


def _blocks(step: Step) -> list[Sequence[object]]:
    """The lists of steps nested in ``step`` (a branch's two, a split's variants...)."""
    if isinstance(step, Branch):
        return [step.then, step.otherwise]
    if isinstance(step, WaitForEvent):
        return [step.on_event, step.on_timeout]
    if isinstance(step, Split) and isinstance(step.variants, Mapping):
        return list(step.variants.values())
    return []


def _walk(steps: Sequence[object]) -> Iterator[object]:
    """Every step, nested ones too; a value that is not a step is yielded, not entered."""
    for step in steps:
        yield step
        if isinstance(step, Step):
            for block in _blocks(step):
                yield from _walk(block)


def _conditions(wf: Workflow) -> Iterator[object]:
    """Every condition of ``wf``, as given (validation checks that each is a Condition)."""
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


def _flatten(condition: object) -> Iterator[object]:
    yield condition
    if isinstance(condition, Condition):
        for part in condition.parts():
            yield from _flatten(part)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return isinstance(value, timedelta) and value > timedelta(0)


def _is_time(value: object) -> bool:
    return isinstance(value, str) and _TIME.match(value) is not None


def workflow_problems(
    wf: Workflow, journey: Journey, renderer: TemplateRenderer, events: frozenset[str]
) -> list[str]:
    where = where_defined(wf)
    found: list[str] = []
    stages = set(journey.stage_names)
    if not isinstance(wf.trigger, Trigger):
        found.append(
            f"{where}: trigger {wf.trigger!r} is not a trigger (on_event, on_stage_entered, "
            "on_stage_left, on_condition, on_segment_joined or on_schedule)"
        )
    for role, items in (("goal", wf.goals), ("exit", wf.exit_when)):
        found += [
            f"{where}: {role} {item!r} is not on_event(...), on_stage_entered(...) "
            "or on_condition(...)"
            for item in items
            if not isinstance(item, GoalOrExit)
        ]
    for item in (wf.trigger, *wf.goals, *wf.exit_when):
        if isinstance(item, StageEntered | StageLeft) and item.stage not in stages:
            found.append(f"{where}: names unknown stage {item.stage!r}")
        if isinstance(item, EventReceived) and item.type not in events:
            found.append(f"{where}: names unknown event {item.type!r} (no rule or EVENTS entry)")
    well_formed = all(isinstance(step, Step) for step in _walk(wf.steps))
    step_ids = [node.id for node in wf.program] if well_formed else None
    for condition in _conditions(wf):
        found += _condition_problems(where, condition, stages, events, step_ids)
    if isinstance(wf.trigger, Scheduled):
        found += _schedule_problems(where, wf.trigger)
    if not wf.steps:
        found.append(f"{where}: has no steps")
    if not isinstance(wf.reentry, Reentry):
        found.append(
            f"{where}: reentry {wf.reentry!r} is not reenter_never(), reenter_always() "
            "or reenter_after(...)"
        )
    elif wf.reentry.policy not in ("never", "always", "after"):
        found.append(f"{where}: re-entry policy {wf.reentry.policy!r} is not never/always/after")
    elif wf.reentry.policy == "after" and not _positive(wf.reentry.after):
        found.append(
            f"{where}: re-entry after a time needs a positive time, e.g. reenter_after(days=30), "
            f"got {wf.reentry.after!r}"
        )
    if wf.send_window is not None:
        found += _window_problems(f"{where}: send window", wf.send_window)
    if wf.cap is not None:
        found += _cap_problems(where, wf.cap)
    found += _block_problems(wf, wf.steps, journey, renderer, events, top=True)
    if step_ids is not None:
        seen: set[str] = set()
        for step_id in step_ids:
            if step_id in seen:
                found.append(f"{where}: step id {step_id!r} is used twice")
            seen.add(step_id)
    if not found:
        try:
            wf.version  # noqa: B018 - the spec must serialize, for versions to exist
        except TypeError as exc:
            found.append(f"{where}: {exc}")
    return found


def _condition_problems(
    where: str,
    condition: object,
    stages: set[str],
    events: frozenset[str],
    step_ids: list[str] | None,
) -> list[str]:
    """What is wrong with one of a workflow's conditions (``step_ids``: its steps' ids,
    ``None`` when its steps are too broken to know them)."""
    parts = list(_flatten(condition))
    strays = [c for c in parts if not isinstance(c, Condition)]
    if strays:
        return [
            f"{where}: {c!r} is not a condition (e.g. did_event(...), attribute(...), "
            "has_tag(...), opened(...))"
            for c in strays
        ]
    assert isinstance(condition, Condition)
    found = [
        f"{where}: condition names unknown stage {s!r}"
        for s in condition.stages()
        if s not in stages
    ]
    found += [
        f"{where}: condition names unknown event {e!r} (no rule or EVENTS entry)"
        for e in condition.events()
        if e not in events
    ]
    if step_ids is not None:
        known = ", ".join(repr(i) for i in step_ids[:12]) + (", ..." if len(step_ids) > 12 else "")
        found += [
            f"{where}: condition names step {i!r}, which is not a step of this workflow "
            f"(its steps: {known})"
            for i in condition.step_ids()
            if i not in step_ids
        ]
    found += [
        f"{where}: did_event({c.type!r}) needs within= a positive timedelta, e.g. "
        f"within=timedelta(days=7), not {c.within!r}"
        for c in parts
        if isinstance(c, DidEvent) and c.within is not None and not _positive(c.within)
    ]
    return found


def _block_problems(
    wf: Workflow,
    steps: Sequence[object],
    journey: Journey,
    renderer: TemplateRenderer,
    events: frozenset[str],
    *,
    top: bool,
) -> list[str]:
    where = where_defined(wf)
    found: list[str] = []
    for position, step in enumerate(steps):
        if not isinstance(step, Step):
            found.append(
                f"{where}, step {position + 1}: {step!r} is not a step (send_email(...), "
                "wait(...), branch(...), ...)"
            )
            continue
        label = f"{where}, step {step.id or position + 1} ({type(step).__name__})"
        if position > 0 and isinstance(steps[position - 1], Exit):
            found.append(f"{label}: unreachable, it follows an exit step")
        wrong = _argument_problems(step)
        found += [f"{label}: {p}" for p in wrong]
        if not wrong:
            found += [f"{label}: {p}" for p in _step_problems(step, journey, renderer, events)]
        for block in _blocks(step):
            found += _block_problems(wf, block, journey, renderer, events, top=False)
    if top and steps and isinstance(steps[-1], WAITS) and not isinstance(steps[-1], WaitForEvent):
        found.append(f"{where}: a wait as the last step does nothing")
    return found


def _argument_problems(step: Step) -> list[str]:
    """Arguments of the wrong type, which the other checks (and the engine) cannot take."""
    found = [] if isinstance(step.id, str) else [f"id must be a string, not {step.id!r}"]
    if isinstance(step, SendEmail) and not isinstance(step.template, str):
        found.append(f"the template must be named by a string, not {step.template!r}")
    elif isinstance(step, Wait) and not isinstance(step.duration, timedelta):
        found.append(f"a wait takes days=, hours=, minutes= or a timedelta, not {step.duration!r}")
    elif isinstance(step, WaitUntil) and not isinstance(step.time, str):
        found.append(f"time must be 'HH:MM', not {step.time!r}")
    elif isinstance(step, WaitUntilDate):
        if not isinstance(step.attribute, str) or not step.attribute:
            found.append(f"attribute must name a date attribute, not {step.attribute!r}")
        if not isinstance(step.offset, timedelta):
            found.append(f"the offset must be a timedelta, not {step.offset!r}")
        if not isinstance(step.time, str):
            found.append(f"time must be 'HH:MM' (or left out), not {step.time!r}")
    elif isinstance(step, WaitForEvent):
        if not isinstance(step.type, str):
            found.append(f"the event type must be a string, not {step.type!r}")
        if not isinstance(step.timeout, timedelta):
            found.append(
                "a wait for an event needs a timeout (it has no other exit), a timedelta "
                f"such as timeout=timedelta(days=3), not {step.timeout!r}"
            )
    elif isinstance(step, Split):
        if not isinstance(step.variants, Mapping):
            found.append(f"variants must map names to steps, not {step.variants!r}")
        if not isinstance(step.weights, Mapping):
            found.append(f"weights must map variant names to numbers, not {step.weights!r}")
        elif not all(_whole(w) for w in step.weights.values()):
            found.append(f"weights must be whole numbers, got {dict(step.weights)}")
    elif isinstance(step, ChangeScore) and not _whole(step.delta):
        found.append(f"a score change must be a whole number, not {step.delta!r}")
    elif isinstance(step, CreateCRMTask) and not (step.due_in is None or _positive(step.due_in)):
        found.append(f"due_in must be a positive timedelta, not {step.due_in!r}")
    elif isinstance(step, MoveStage) and not isinstance(step.trigger, str):
        found.append(f"the stage trigger must be a string, not {step.trigger!r}")
    return found


def _step_problems(
    step: Step, journey: Journey, renderer: TemplateRenderer, events: frozenset[str]
) -> list[str]:
    """What is wrong with one step whose arguments have the right types."""
    if isinstance(step, SendEmail) and step.sendgrid_template:
        if not _SENDGRID_TEMPLATE.match(step.sendgrid_template):
            return [
                f"sendgrid_template {step.sendgrid_template!r} is not a SendGrid dynamic "
                "template id ('d-' and 32 lowercase hex digits)"
            ]
    elif isinstance(step, SendEmail):
        return renderer.problems(step.template)
    elif isinstance(step, CreateCRMTask):
        return snippet_problems(step.subject) + snippet_problems(step.body)
    elif isinstance(step, CreateCRMNote):
        return snippet_problems(step.body)
    elif isinstance(step, Wait) and step.duration.total_seconds() <= 0:
        return ["a wait must be longer than zero"]
    elif isinstance(step, WaitUntil | WaitUntilDate) and not _is_time(step.time):
        if isinstance(step, WaitUntil) or step.time:  # a date's time of day is optional
            return [f"time {step.time!r} is not HH:MM"]
    elif isinstance(step, WaitForEvent):
        found = []
        if step.timeout.total_seconds() <= 0:
            found.append("a wait for an event needs a timeout (it has no exit)")
        if step.type not in events:
            found.append(f"waits for unknown event {step.type!r}")
        return found
    elif isinstance(step, MoveStage) and step.trigger not in journey.triggers:
        return [f"unknown stage trigger {step.trigger!r}; known: {list(journey.triggers)}"]
    elif isinstance(step, Split):
        if set(step.weights) != set(step.variants):
            return [
                f"weights {sorted(step.weights, key=str)} do not match variants "
                f"{sorted(step.variants, key=str)}"
            ]
        if any(w <= 0 for w in step.weights.values()) or sum(step.weights.values()) != 100:
            return [
                f"weights must be positive and add up to 100, got {dict(step.weights)} "
                "(leave weights= out for equal ones)"
            ]
    return []


def _schedule_problems(where: str, trigger: Scheduled) -> list[str]:
    from engine.schedules import cron_problem

    if not isinstance(trigger.cron, str):
        return [f"{where}: a schedule is a cron expression string, not {trigger.cron!r}"]
    found = []
    problem = cron_problem(trigger.cron)
    if problem:
        found.append(
            f"{where}: schedule {trigger.cron!r} is not a valid cron expression ({problem})"
        )
    if trigger.max_delay is not None and not _positive(trigger.max_delay):
        found.append(
            f"{where}: a schedule's max_delay must be a positive timedelta, "
            f"not {trigger.max_delay!r}"
        )
    return found


def _window_problems(label: str, window: object) -> list[str]:
    if not isinstance(window, Window):
        return [f"{label}: {window!r} is not a window (quiet_hours(...) or send_window(...))"]
    return [
        f"{label}: time {t!r} is not HH:MM" for t in (window.start, window.end) if not _is_time(t)
    ]


def _cap_problems(label: str, cap: object) -> list[str]:
    if not isinstance(cap, FrequencyCap):
        return [f"{label}: cap {cap!r} is not a frequency cap (at_most(3, per_days=7))"]
    if not _whole(cap.max) or cap.max < 1 or not _positive(cap.per):
        return [f"{label}: a frequency cap needs max >= 1 and a positive window"]
    return []


def guardrails_problems(guardrails: object) -> list[str]:
    if not isinstance(guardrails, Guardrails):
        return [f"GUARDRAILS is {guardrails!r}, not a Guardrails(cap=..., quiet_hours=...)"]
    found = []
    if guardrails.quiet_hours is not None:
        found += _window_problems("GUARDRAILS quiet hours", guardrails.quiet_hours)
    if guardrails.cap is not None:
        found += _cap_problems("GUARDRAILS", guardrails.cap)
    return found
