"""Drawing a workflow as a Mermaid flowchart, optionally with live counts per step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    Node,
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
from engine.urls import url_origin
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
        # Its origin only: a webhook URL often carries its credential (Slack's secret path,
        # a ?token=), and a diagram is pasted into tickets and docs.
        return f"webhook {url_origin(step.url)}"
    if isinstance(step, Exit):
        return f"exit: {step.reason}"
    return type(step).__name__


def describe_goal_or_exit(item: object) -> str:
    """A goal or an exit rule in words: ``enters stage purchase``, ``event order.completed``,
    ``plan = 'free'``."""
    if isinstance(item, StageEntered):
        return f"enters stage {item.stage}"
    if isinstance(item, ConditionMet):
        return item.name or describe_condition(item.condition)
    return describe_trigger(item)


def _rules(workflow: Workflow) -> list[str]:
    """The rules around the steps that change who enters and when emails go."""
    found = []
    if workflow.entry_if is not None:
        found.append(f"enters only if {describe_condition(workflow.entry_if)}")
    reentry = workflow.reentry
    if reentry.policy == "always":
        found.append("re-enters every time")
    elif reentry.policy == "after" and reentry.after is not None:
        found.append(f"re-enters {describe_duration(reentry.after)} after the last entry")
    if workflow.cap is not None:
        found.append(
            f"at most {workflow.cap.max} marketing emails per {describe_duration(workflow.cap.per)}"
        )
    if workflow.send_window is not None:
        window = workflow.send_window
        weekdays = " on weekdays" if window.weekdays_only else ""
        found.append(f"sends {window.start}-{window.end}{weekdays} (contact's time zone)")
    return found


def _exits(workflow: Workflow) -> list[str]:
    found = [describe_goal_or_exit(x) for x in workflow.exit_when]
    trigger = workflow.trigger
    if workflow.exit_on_stage_left and isinstance(trigger, StageEntered):
        found.append(f"leaves stage {trigger.stage}")
    return found


def _placed(program: Sequence[Node], counts: Mapping[int, int]) -> dict[int, str]:
    """Live enrollments in words, on the step where they are. One parked in a plain wait has
    the step *after* the wait as its position: it is shown in that wait ("2 waiting"), not
    on the email after it, when one wait leads there; "2 due next" when several do. One at
    a ``wait_for_event`` waits in it."""
    shown: dict[int, str] = {}

    def add(at: int, n: int, words: str) -> None:
        before = shown.get(at)
        shown[at] = f"{n} {words}" if before is None else f"{before}, {n} {words}"

    for position, n in sorted(counts.items()):
        if not n or not 0 <= position < len(program):
            continue
        if isinstance(program[position].step, WaitForEvent):
            add(position, n, "waiting")
            continue
        waits = [
            i
            for i, node in enumerate(program)
            if node.next == position and isinstance(node.step, Wait | WaitUntil | WaitUntilDate)
        ]
        if len(waits) == 1:
            add(waits[0], n, "waiting")
        else:
            add(position, n, "due next")
    return shown


def mermaid_label(text: str) -> str:
    """``text`` fit for a quoted Mermaid label, shown as written: Mermaid's entity codes for
    what would end the label (a double quote) or be read as HTML (``<b>``, ``&amp;``)."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text.replace("&", "#amp;")


def mermaid(workflow: Workflow, counts: Mapping[int, int] | None = None) -> str:
    """A ``flowchart TD``; ``counts`` maps program positions to live enrollments there.

    Waits are steps of their own (``wait 2 days``, ``wait for order.completed (up to 4
    days)``); the goals are a ``converted`` node, the exit rules an ``exited`` one (where
    ``exit_workflow`` steps lead), and the rules around the steps (entry rule, re-entry,
    cap, send window) a node of their own. Labels are shown as written (``mermaid_label``)."""
    counts = counts or {}
    label = mermaid_label
    lines = ["flowchart TD", f'  start(["{label(describe_trigger(workflow.trigger))}"])']
    rules = _rules(workflow)
    if rules:
        lines.append(f'  rules["{label("; ".join(rules))}"]')
    program = workflow.program
    shown = _placed(program, counts)
    for i, node in enumerate(program):
        suffix = f"<br/>{shown[i]}" if i in shown else ""
        text = f"{node.id}: {describe_step(node.step)}"
        lines.append(f'  n{i}["{label(text)}{suffix}"]')
    ended = counts.get(len(program))
    lines.append('  done(["done' + (f"<br/>{ended} finishing" if ended else "") + '"])')
    if workflow.goals:
        goals = "; ".join(describe_goal_or_exit(g) for g in workflow.goals)
        lines.append(f'  converted(["{label(f"converted (goal): {goals}")}"])')
    exits = _exits(workflow)
    exit_steps = any(isinstance(node.step, Exit) for node in program)
    if exits or exit_steps:
        text = "exited" + (": " + "; ".join(exits) if exits else "")
        lines.append(f'  exited(["{label(text)}"])')
    if program:
        lines.append("  start --> n0")
    for i, node in enumerate(program):
        if node.targets:
            for key, target in node.targets.items():
                lines.append(f"  n{i} -- {key} --> {'done' if target is None else f'n{target}'}")
        elif isinstance(node.step, Exit):
            lines.append(f"  n{i} --> exited")
        else:
            lines.append(f"  n{i} --> {'done' if node.next is None else f'n{node.next}'}")
    return "\n".join(lines)
