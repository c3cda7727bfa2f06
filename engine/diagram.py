"""Drawing a workflow as a Mermaid flowchart, optionally with live counts per step."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from engine.conditions import AllOf, AnyOf, Condition, DidEvent, Not, Predicate
from engine.durations import describe_duration
from engine.spec import to_spec
from engine.steps import (
    Branch,
    CallWebhook,
    ChangeScore,
    CreateCRMNote,
    CreateCRMTask,
    Exit,
    MoveStage,
    SendEmail,
    SetAttribute,
    Split,
    Step,
    Tag,
    UpdateCRM,
    Wait,
    WaitForEvent,
    WaitUntil,
    WaitUntilDate,
)
from engine.workflow import (
    ConditionMet,
    EventReceived,
    Scheduled,
    StageEntered,
    StageLeft,
    Trigger,
    Workflow,
)


def _where(where: Mapping[str, Predicate]) -> str:
    return ", ".join(f"{k} {p.describe()}" for k, p in where.items())


def describe_condition(condition: Condition) -> str:
    """``condition.describe()``, with durations written as ``describe_duration`` does."""
    if isinstance(condition, DidEvent):
        where = _where(condition.where)
        text = f"did {condition.type}" + (f" where {where}" if where else "")
        if condition.within is None:
            return f"{text} since entering"
        return f"{text} within {describe_duration(condition.within)}"
    if isinstance(condition, AllOf | AnyOf):
        joiner = " and " if isinstance(condition, AllOf) else " or "
        return joiner.join(f"({describe_condition(c)})" for c in condition.conditions)
    if isinstance(condition, Not):
        return f"not ({describe_condition(condition.condition)})"
    return condition.describe()


def describe_trigger(trigger: Trigger | object) -> str:
    if isinstance(trigger, StageEntered):
        return f"enters stage {trigger.stage}"
    if isinstance(trigger, StageLeft):
        return f"leaves stage {trigger.stage}"
    if isinstance(trigger, EventReceived):
        where = _where(trigger.where)
        return f"event {trigger.type}" + (f" where {where}" if where else "")
    if isinstance(trigger, ConditionMet):
        return trigger.name or f"when {describe_condition(trigger.condition)}"
    if isinstance(trigger, Scheduled):
        from engine.schedules import explain

        text = f"schedule {trigger.cron} ({explain(trigger.cron)}, contact's time zone)"
        if trigger.condition is not None:
            text += f" for {trigger.name or describe_condition(trigger.condition)}"
        return text
    return str(to_spec(trigger))


def describe_step(step: Step) -> str:
    if isinstance(step, SendEmail):
        hosted = f" (SendGrid {step.sendgrid_template})" if step.sendgrid_template else ""
        return f"email {step.template}{hosted}" + ("" if step.marketing else " (transactional)")
    if isinstance(step, Wait):
        return f"wait {describe_duration(step.duration)}"
    if isinstance(step, WaitUntil):
        return f"wait until {step.time}" + (" on a weekday" if step.weekdays_only else "")
    if isinstance(step, WaitUntilDate):
        offset = describe_duration(step.offset)
        side = "before" if step.offset < timedelta(0) else "after"
        when = f"{offset} {side} {step.attribute}" if step.offset else step.attribute
        return f"wait until {when}" + (f" at {step.time}" if step.time else "")
    if isinstance(step, WaitForEvent):
        where = _where(step.where)
        matching = f" where {where}" if where else ""
        return f"wait for {step.type}{matching} (up to {describe_duration(step.timeout)})"
    if isinstance(step, Branch):
        return f"if {describe_condition(step.condition)}"
    if isinstance(step, Split):
        return "A/B split " + ", ".join(f"{k} {w}%" for k, w in step.weights.items())
    if isinstance(step, SetAttribute):
        return f"set {step.name} = {step.value!r}"
    if isinstance(step, Tag):
        return f"{'remove' if step.remove else 'add'} tag {step.tag}"
    if isinstance(step, ChangeScore):
        return f"score {step.delta:+d}"
    if isinstance(step, MoveStage):
        return f"stage trigger {step.trigger}"
    if isinstance(step, UpdateCRM):
        return "update CRM " + ", ".join(step.properties)
    if isinstance(step, CreateCRMTask):
        return f"CRM task: {step.subject}"
    if isinstance(step, CreateCRMNote):
        return "CRM note"
    if isinstance(step, CallWebhook):
        return f"webhook {step.url}"
    if isinstance(step, Exit):
        return f"exit: {step.reason}"
    return type(step).__name__


def mermaid(workflow: Workflow, counts: Mapping[int, int] | None = None) -> str:
    """A ``flowchart TD``; ``counts`` maps program positions to live enrollments there."""
    counts = counts or {}

    def label(text: str) -> str:
        return text.replace('"', "'")

    lines = ["flowchart TD", f'  start(["{label(describe_trigger(workflow.trigger))}"])']
    program = workflow.program
    for i, node in enumerate(program):
        here = counts.get(i)
        suffix = f"<br/>{here} here" if here else ""
        lines.append(f'  n{i}["{label(node.id)}: {label(describe_step(node.step))}{suffix}"]')
    ended = counts.get(len(program))
    lines.append('  done(["done' + (f"<br/>{ended} finishing" if ended else "") + '"])')
    if program:
        lines.append("  start --> n0")
    for i, node in enumerate(program):
        if node.targets:
            for key, target in node.targets.items():
                lines.append(f"  n{i} -- {key} --> {'done' if target is None else f'n{target}'}")
        elif not isinstance(node.step, Exit):
            lines.append(f"  n{i} --> {'done' if node.next is None else f'n{node.next}'}")
    return "\n".join(lines)
