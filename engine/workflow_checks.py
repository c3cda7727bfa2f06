"""Checks of a workflow definition, each problem a sentence naming the workflow, its file
and line, and what is wrong: unknown stages, events, templates and step ids; arguments of
the wrong type (a timeout of None, a wait of "3 days"); splits, windows, caps and guard
rails that cannot work. ``build_registry`` runs them all and reports every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from difflib import get_close_matches
from functools import lru_cache

from jinja2 import Environment, nodes
from jinja2 import TemplateError as JinjaTemplateError

from engine.conditions import AllOf, AnyOf, Condition, DidEvent, Engaged, StageIn
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
    walk,
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


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` (did you mean 'welcome'?)`` for a name that looks like a misspelling of a known
    one, else ``""``."""
    if not isinstance(name, str):
        return ""
    close = get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def _signed(value: object) -> str:
    """A duration as people write it (``0 seconds``, ``minus 1 day``); else its repr."""
    if not isinstance(value, timedelta):
        return repr(value)
    from engine.durations import describe_duration

    return ("minus " if value < timedelta(0) else "") + describe_duration(value)


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
            found.append(
                f"{where}: names unknown stage {item.stage!r}{did_you_mean(item.stage, stages)}"
                f" (stages: {', '.join(journey.stage_names)})"
            )
        if isinstance(item, EventReceived) and item.type not in events:
            found.append(
                f"{where}: names unknown event {item.type!r}{did_you_mean(item.type, events)} "
                "(no rule or EVENTS entry)"
            )
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
    node_ids = {id(node.step): node.id for node in wf.program} if well_formed else {}
    found += _block_problems(wf, wf.steps, journey, renderer, events, node_ids, top=True)
    if well_formed:
        found += _at_entry_problems(wf, stages)
        found += _move_stage_problems(wf, journey, node_ids, wf.steps)
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


def _holds_with(condition: Condition) -> Iterator[Condition]:
    """``condition`` and what holds whenever it does (the parts of an ``all_of``)."""
    yield condition
    if isinstance(condition, AllOf):
        for part in condition.conditions:
            yield from _holds_with(part)


def _reads_the_same_in_a_workflow(condition: Condition) -> bool:
    """Whether ``condition`` reads the same for an enrollment as outside it: not an open or
    a click of its own emails, not ``did_event`` without ``within`` (since entering)."""
    return not any(
        isinstance(c, Engaged) or (isinstance(c, DidEvent) and c.within is None)
        for c in _flatten(condition)
    )


def _same(one: Condition, other: Condition) -> bool:
    try:
        return bool(one == other)
    except Exception:  # a predicate of the user's own that cannot be compared
        return False


def _at_entry_problems(wf: Workflow, stages: set[str]) -> list[str]:
    """Condition goals and exits that already hold for every contact the workflow enrols (the
    trigger's own condition, ``entry_if``, the trigger's stage): each contact would convert
    or exit at entry, before any step runs (engine.entry)."""
    where = where_defined(wf)
    held: list[tuple[Condition, str]] = []  # conditions are not hashable (dicts inside)
    trigger = wf.trigger
    if isinstance(trigger, ConditionMet) and isinstance(trigger.condition, Condition):
        for c in _holds_with(trigger.condition):
            held.append((c, "the trigger's condition"))
    if isinstance(trigger, Scheduled) and isinstance(trigger.condition, Condition):
        for c in _holds_with(trigger.condition):
            held.append((c, "the schedule's when= condition"))
    if isinstance(wf.entry_if, Condition):
        for c in _holds_with(wf.entry_if):
            held.append((c, "entry_if"))
    stage = trigger.stage if isinstance(trigger, StageEntered) else None
    found = []
    for role, items in (("goal", wf.goals), ("exit", wf.exit_when)):
        for item in items:
            if not isinstance(item, ConditionMet) or not isinstance(item.condition, Condition):
                continue
            condition = item.condition
            if not _reads_the_same_in_a_workflow(condition):
                continue
            options = condition.conditions if isinstance(condition, AnyOf) else (condition,)
            why = next((w for c in options for h, w in held if _same(c, h)), None)
            if why is None and stage is not None:
                staged = [c for c in options if isinstance(c, StageIn) and stage in c.names]
                why = f"she has just entered {stage}" if staged else None
            if why is None:
                continue
            ends = "converts" if role == "goal" else "exits"
            hint = (
                f"(leaving {stage} ends this workflow by itself)"
                if why.startswith("she has just entered")
                else "(an event or a stage entered, on_event/on_stage_entered, turns true later)"
            )
            found.append(
                f"{where}: {role} on_condition({condition.describe()}) already holds for every "
                f"contact it enrols ({why}), so each {ends} at entry and no step ever runs: "
                f"give the {role} a condition that turns true later {hint}"
            )
    return found


def _move_stage_problems(
    wf: Workflow, journey: Journey, node_ids: Mapping[int, str], steps: Sequence[Step]
) -> list[str]:
    """``move_stage`` steps of a workflow bound to a stage (``on_stage_entered`` with
    ``exit_on_stage_left``): she is in that stage whenever one of its steps runs, so a move
    out of it ends the workflow there (steps written after it in the same list never run),
    and a trigger that stage does not allow does nothing."""
    trigger = wf.trigger
    if not (wf.exit_on_stage_left and isinstance(trigger, StageEntered)):
        return []
    stage = trigger.stage
    if stage not in journey.stage_names:
        return []  # reported as an unknown stage
    where = where_defined(wf)
    found = []
    for position, step in enumerate(steps):
        for block in _blocks(step):
            found += _move_stage_problems(wf, journey, node_ids, block)  # type: ignore[arg-type]
        if not isinstance(step, MoveStage) or step.trigger not in journey.triggers:
            continue
        moves = [t for t in journey.transitions if t.trigger == step.trigger]
        here = next((t for t in moves if stage in t.sources), None)
        dest = None if here is None else here.dest
        # A guarded move (qualify at an MQL score) moves only some: the others stay in the
        # stage, and the steps written after it are theirs.
        guarded = here is not None and bool(here.guards)
        label = f"{where}, step {node_ids.get(id(step), step.id)} (MoveStage)"
        if dest is None:
            sources = sorted({s for t in moves for s in t.sources})
            found.append(
                f"{label}: move_stage({step.trigger!r}) never moves anyone here: this workflow "
                f"runs while the contact is in {stage} (it ends when she leaves it), and "
                f"{step.trigger!r} moves only from {', '.join(sources)}"
            )
        elif dest != stage and position < len(steps) - 1 and not guarded:
            after = steps[position + 1]
            found.append(
                f"{label}: move_stage({step.trigger!r}) moves the contact from {stage} to "
                f"{dest}, which ends this workflow (it exits when she leaves {stage}), so "
                f"the steps written after it ({node_ids.get(id(after), after.id)}, ...) never "
                "run: move them before it, or give the workflow exit_on_stage_left=False"
            )
    return found


def workflow_set_problems(workflows: Iterable[Workflow], journey: Journey) -> list[str]:
    """Problems between workflows: ``move_stage`` steps that bounce a contact between stages
    for ever (entering A starts a workflow that moves her to B at once, entering B one that
    moves her back, each re-entering every time): the event fails deep in a recursion."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for wf in workflows:
        trigger = wf.trigger
        if not (
            isinstance(wf, Workflow)
            and isinstance(trigger, StageEntered)
            and isinstance(wf.reentry, Reentry)
            and wf.reentry.policy == "always"
            and all(isinstance(step, Step) for step in _walk(wf.steps))
        ):
            continue
        program = wf.program
        at_once = walk(program, [0], through=lambda node: not isinstance(node.step, WAITS))
        for at in at_once:
            step = program[at].step
            if not isinstance(step, MoveStage):
                continue
            for t in journey.transitions:
                if t.trigger == step.trigger and trigger.stage in t.sources:
                    edges.setdefault(trigger.stage, []).append((t.dest, wf.name))
    found: list[str] = []
    seen: set[frozenset[str]] = set()

    def visit(stage: str, path: list[tuple[str, str, str]]) -> None:
        for dest, name in edges.get(stage, []):
            here = [*path, (stage, name, dest)]
            stages = [s for s, _, _ in here]
            if dest in stages:
                loop = here[stages.index(dest) :]
                key = frozenset(n for _, n, _ in loop)
                if key not in seen:
                    seen.add(key)
                    steps = "; ".join(
                        f"entering {s} starts {n!r}, which moves her to {d} at once"
                        for s, n, d in loop
                    )
                    found.append(
                        f"move_stage steps loop for ever: {steps}; each re-enters every time "
                        "(reenter_always), so the event that starts it fails (RecursionError): "
                        "put a wait before a move, or let one of them re-enter only after a "
                        "time (reenter_after(days=...))"
                    )
            elif len(here) <= len(edges):
                visit(dest, here)

    for stage in sorted(edges):
        visit(stage, [])
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
        f"{where}: condition names unknown stage {s!r}{did_you_mean(s, stages)}"
        for s in condition.stages()
        if s not in stages
    ]
    found += [
        f"{where}: condition names unknown event {e!r}{did_you_mean(e, events)} (no rule or "
        "EVENTS entry)"
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
    node_ids: Mapping[int, str],
    *,
    top: bool,
) -> list[str]:
    """``node_ids``: each step's id in the compiled program (``3-branch/then/1-send_email``
    for one without ``id=``), which names a nested step where its position in its own list
    (step 1 of which branch?) would not."""
    where = where_defined(wf)
    found: list[str] = []
    for position, step in enumerate(steps):
        if not isinstance(step, Step):
            found.append(
                f"{where}, step {position + 1}: {step!r} is not a step (send_email(...), "
                "wait(...), branch(...), ...)"
            )
            continue
        name = node_ids.get(id(step)) or step.id or position + 1
        label = f"{where}, step {name} ({type(step).__name__})"
        if position > 0 and isinstance(steps[position - 1], Exit):
            found.append(f"{label}: unreachable, it follows an exit step")
        wrong = _argument_problems(step)
        found += [f"{label}: {p}" for p in wrong]
        if not wrong:
            found += [f"{label}: {p}" for p in _step_problems(step, journey, renderer, events)]
        for block in _blocks(step):
            found += _block_problems(wf, block, journey, renderer, events, node_ids, top=False)
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
        found = renderer.problems(step.template)
        if found and step.template not in renderer.names():
            found[0] += did_you_mean(step.template, renderer.names())
        return found or _data_problems(step, renderer)
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
            found.append(
                "a wait for an event needs a timeout longer than zero, not "
                f"{_signed(step.timeout)} "
                "(every contact would take the timeout path at once): e.g. "
                "timeout=timedelta(days=3)"
            )
        if step.type not in events:
            found.append(
                f"waits for unknown event {step.type!r}{did_you_mean(step.type, events)} "
                "(no rule or EVENTS entry)"
            )
        return found
    elif isinstance(step, MoveStage) and step.trigger not in journey.triggers:
        return [
            f"unknown stage trigger {step.trigger!r}{did_you_mean(step.trigger, journey.triggers)}"
            f"; known: {list(journey.triggers)} (move_stage takes a trigger, not a stage)"
        ]
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


def _data_problems(step: SendEmail, renderer: TemplateRenderer) -> list[str]:
    """The step's ``data`` against what its template reads of it: a key the template never
    reads but nearly does (``dicount`` given, ``data.discount`` read: its default shows
    instead), and a key it prints unguarded (no ``| default(...)``, no ``{% if %}``) that the
    step does not give (it would print empty)."""
    if not isinstance(step.data, Mapping):
        return []
    path = renderer.directory / f"{step.template}.j2"
    try:
        reads = _data_reads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, JinjaTemplateError):
        return []
    if reads is None:  # reads data as a whole, or other templates: not known from here
        return []
    given = {k for k in step.data if isinstance(k, str)}
    found = []
    for key in sorted(given - set(reads)):
        close = did_you_mean(key, reads)
        if close:
            found.append(
                f"data key {key!r} is never read by template {step.template!r}{close}: it "
                f"reads {', '.join(f'data.{k}' for k in sorted(reads))}"
            )
    found += [
        f"template {step.template!r} prints {{{{ data.{key} }}}}, which this step does not give "
        f"(data={dict(step.data)!r}): it would print empty, and the email fails to render "
        f"where it is computed with (data.{key} * 2): give data={{{key!r}: ...}}, or write "
        f"{{{{ data.{key} | default(...) }}}} in the template"
        for key, guarded in sorted(reads.items())
        if not guarded and key not in given
    ]
    return found


@lru_cache(maxsize=256)
def _data_reads(source: str) -> dict[str, bool] | None:
    """The keys of ``data`` a template's source reads (``data.code``, ``data["code"]``), each
    with whether it is guarded somewhere (under ``| default``, in an ``if`` or ``is defined``
    test, before an ``or``: ``data.code or "WELCOME10"``); None when it reads ``data``
    otherwise (whole, by a variable key, by a method: ``data.get("code", ...)``) or
    includes, extends or imports other templates, so what it reads is not all here."""
    tree = _JINJA.parse(source)
    if any(tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
        return None
    if any(_reads_data(call.node) for call in tree.find_all(nodes.Call)):
        return None  # data.get("code", "X"), data.items(): a dict's method, not a key
    keyed: set[int] = set()
    reads: dict[str, bool] = {}
    guarded_nodes: set[int] = set()
    for node in tree.find_all((nodes.If, nodes.CondExpr, nodes.Test, nodes.Filter, nodes.Or)):
        inside: nodes.Node | None
        if isinstance(node, nodes.If | nodes.CondExpr):
            inside = node.test
        elif isinstance(node, nodes.Or):
            inside = node.left  # its own fallback on the right
        elif isinstance(node, nodes.Filter) and node.name not in ("default", "d"):
            continue
        else:
            assert isinstance(node, nodes.Filter | nodes.Test)
            inside = node.node
        if inside is not None:
            guarded_nodes.update(id(n) for n in inside.find_all(nodes.Node))
            guarded_nodes.add(id(inside))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        base = node.node
        if not (isinstance(base, nodes.Name) and base.name == "data"):
            continue
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            return None
        keyed.add(id(base))
        reads[key] = reads.get(key, False) or id(node) in guarded_nodes
    names = [n for n in tree.find_all(nodes.Name) if n.name == "data" and n.ctx == "load"]
    if any(id(n) not in keyed for n in names):
        return None
    return reads


def _reads_data(node: nodes.Node) -> bool:
    """Whether ``node`` is ``data.<name>`` or ``data[...]``."""
    return (
        isinstance(node, nodes.Getattr | nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "data"
    )


_JINJA = Environment()


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


def _window_problems(label: str, window: object, *, quiet: bool = False) -> list[str]:
    if not isinstance(window, Window):
        return [f"{label}: {window!r} is not a window (quiet_hours(...) or send_window(...))"]
    found = [
        f"{label}: time {t!r} is not HH:MM" for t in (window.start, window.end) if not _is_time(t)
    ]
    if not found and window.start == window.end:
        if quiet:
            found.append(
                f"{label}: {window.start}-{window.end} is zero length, so it holds nothing: "
                'give the end it should have, e.g. quiet_hours("21:00", "08:00"), or leave '
                "quiet_hours out"
            )
        else:
            found.append(
                f"{label}: {window.start}-{window.end} is zero length, so no time is inside it "
                "and its emails would be held for ever: give the end it should have, e.g. "
                'send_window("09:00", "18:00"), or leave send_window out'
            )
    return found


def _cap_problems(label: str, cap: object) -> list[str]:
    if not isinstance(cap, FrequencyCap):
        return [f"{label}: cap {cap!r} is not a frequency cap (at_most(3, per_days=7))"]
    if not _whole(cap.max) or cap.max < 1 or not _positive(cap.per):
        return [
            f"{label}: a frequency cap needs max >= 1 and a positive window, e.g. "
            f"at_most(3, per_days=7), not at most {cap.max!r} per {_signed(cap.per)} (at most "
            "0 would hold every marketing email for ever)"
        ]
    return []


def guardrails_problems(guardrails: object) -> list[str]:
    if not isinstance(guardrails, Guardrails):
        return [f"GUARDRAILS is {guardrails!r}, not a Guardrails(cap=..., quiet_hours=...)"]
    found = []
    if guardrails.quiet_hours is not None:
        found += _window_problems("GUARDRAILS quiet hours", guardrails.quiet_hours, quiet=True)
    if guardrails.cap is not None:
        found += _cap_problems("GUARDRAILS", guardrails.cap)
    return found
