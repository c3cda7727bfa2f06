"""Workflow steps, and their compilation into a flat program an enrollment walks.

Steps nest (a branch holds two lists of steps, a split one list per variant, a wait for an
event one list per outcome). ``compile_steps`` flattens them into ``Node``s with explicit
jumps, so an enrollment's position is one integer and every node runs at most once per
enrollment: the program only ever jumps forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.conditions import Condition, Predicate, as_predicate
from engine.spec import vocabulary


@vocabulary("send_email")
@dataclass(frozen=True)
class SendEmail:
    """``template`` names the email: a Jinja template in ``templates/``, or, with
    ``sendgrid_template`` (a SendGrid dynamic template id, ``d-`` + 32 hex), only a label
    for the diagram, the timeline and the ``X-Journeyline-Template`` header."""

    template: str
    id: str = ""
    marketing: bool = True  # transactional mail skips caps and quiet hours, never suppression
    data: Mapping[str, Any] = field(default_factory=dict)
    sendgrid_template: str = field(default="", metadata={"omit_default": True})

    def payload(self) -> dict[str, Any]:
        """The email action's payload (the executor and the broadcast fast path)."""
        out: dict[str, Any] = {
            "template": self.template,
            "marketing": self.marketing,
            "data": dict(self.data),
        }
        if self.sendgrid_template:
            out["sendgrid_template"] = self.sendgrid_template
        return out


@vocabulary("wait")
@dataclass(frozen=True)
class Wait:
    duration: timedelta
    id: str = ""


@vocabulary("wait_until")
@dataclass(frozen=True)
class WaitUntil:
    """Until the next time of day in the contact's time zone (optionally weekdays only)."""

    time: str  # "HH:MM"
    weekdays_only: bool = False
    id: str = ""


@vocabulary("wait_until_date")
@dataclass(frozen=True)
class WaitUntilDate:
    """Until a date attribute plus an offset (negative: before), at a time of day if given."""

    attribute: str
    offset: timedelta = timedelta(0)
    time: str = ""  # "HH:MM" in the contact's time zone; empty keeps the attribute's time
    id: str = ""


@vocabulary("wait_for_event")
@dataclass(frozen=True)
class WaitForEvent:
    """Until ``type`` arrives (matching ``where``) or ``timeout`` passes, whichever is first."""

    type: str
    timeout: timedelta
    on_event: tuple[Step, ...] = ()
    on_timeout: tuple[Step, ...] = ()
    where: Mapping[str, Predicate] = field(default_factory=dict)
    id: str = ""


@vocabulary("branch")
@dataclass(frozen=True)
class Branch:
    condition: Condition
    then: tuple[Step, ...] = ()
    otherwise: tuple[Step, ...] = ()
    id: str = ""


@vocabulary("split")
@dataclass(frozen=True)
class Split:
    """A/B/n test: each contact lands in one variant, deterministically, by weight."""

    variants: Mapping[str, tuple[Step, ...]]
    weights: Mapping[str, int]
    id: str = ""


@vocabulary("set_attribute")
@dataclass(frozen=True)
class SetAttribute:
    name: str
    value: Any
    id: str = ""


@vocabulary("tag")
@dataclass(frozen=True)
class Tag:
    tag: str
    remove: bool = False
    id: str = ""


@vocabulary("change_score")
@dataclass(frozen=True)
class ChangeScore:
    delta: int
    id: str = ""


@vocabulary("move_stage")
@dataclass(frozen=True)
class MoveStage:
    trigger: str
    id: str = ""


@vocabulary("update_crm")
@dataclass(frozen=True)
class UpdateCRM:
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""


@vocabulary("crm_task")
@dataclass(frozen=True)
class CreateCRMTask:
    subject: str
    body: str = ""
    due_in: timedelta | None = None
    id: str = ""


@vocabulary("crm_note")
@dataclass(frozen=True)
class CreateCRMNote:
    body: str
    id: str = ""


@vocabulary("webhook")
@dataclass(frozen=True)
class CallWebhook:
    url: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""


@vocabulary("exit")
@dataclass(frozen=True)
class Exit:
    reason: str = "exit step"
    id: str = ""


Step = (
    SendEmail
    | Wait
    | WaitUntil
    | WaitUntilDate
    | WaitForEvent
    | Branch
    | Split
    | SetAttribute
    | Tag
    | ChangeScore
    | MoveStage
    | UpdateCRM
    | CreateCRMTask
    | CreateCRMNote
    | CallWebhook
    | Exit
)
WAITS = (Wait, WaitUntil, WaitUntilDate, WaitForEvent)


# --- builders (the readable vocabulary) -------------------------------------------------


def send_email(
    template: str,
    *,
    id: str = "",
    marketing: bool = True,
    data: Mapping[str, Any] | None = None,
    sendgrid_template: str = "",
) -> SendEmail:
    """Send ``templates/<template>.j2``; or, with ``sendgrid_template="d-..."``, that SendGrid
    dynamic template, filled with the contact's attributes, email and stage plus ``data``
    (``template`` is then only the email's name)."""
    return SendEmail(
        template,
        id=id,
        marketing=marketing,
        data=dict(data or {}),
        sendgrid_template=sendgrid_template,
    )


def wait(
    duration: timedelta | None = None,
    *,
    days: float = 0,
    hours: float = 0,
    minutes: float = 0,
    id: str = "",
) -> Wait:
    return Wait(duration or timedelta(days=days, hours=hours, minutes=minutes), id=id)


def wait_until(time: str, *, weekdays_only: bool = False, id: str = "") -> WaitUntil:
    return WaitUntil(time, weekdays_only=weekdays_only, id=id)


def wait_until_date(
    attribute: str, *, days_before: float = 0, days_after: float = 0, time: str = "", id: str = ""
) -> WaitUntilDate:
    return WaitUntilDate(attribute, timedelta(days=days_after - days_before), time, id=id)


def wait_for_event(
    type: str,
    *,
    timeout: timedelta | None = None,  # required: left out, it is reported with the rest
    on_event: Sequence[Step] = (),
    on_timeout: Sequence[Step] = (),
    id: str = "",
    **where: Any,
) -> WaitForEvent:
    return WaitForEvent(
        type,
        timeout,  # type: ignore[arg-type]  # None: refused by the checks, with the rest
        tuple(on_event),
        tuple(on_timeout),
        {k: as_predicate(v) for k, v in where.items()},
        id=id,
    )


def branch(
    condition: Condition, *, then: Sequence[Step] = (), otherwise: Sequence[Step] = (), id: str = ""
) -> Branch:
    return Branch(condition, tuple(then), tuple(otherwise), id=id)


def split(
    *, id: str = "", weights: Mapping[str, int] | None = None, **variants: Sequence[Step]
) -> Split:
    """``split(A=[...], B=[...], weights={"A": 80, "B": 20})``; equal weights by default:
    100 shared out in variant order, the first ones taking what does not divide evenly
    (three variants get 34, 33 and 33)."""
    weights = dict(weights) if weights is not None else _equal_weights(list(variants))
    return Split({k: tuple(v) for k, v in variants.items()}, weights, id=id)


def _equal_weights(names: Sequence[str]) -> dict[str, int]:
    """Whole weights adding up to 100, as equal as whole numbers can be: the first
    ``100 % len(names)`` names get one more (validation still refuses more than 100
    variants, or none)."""
    if not names or len(names) > 100:
        return dict.fromkeys(names, 1)  # what validation then reports, as before
    share, extra = divmod(100, len(names))
    return {name: share + (1 if n < extra else 0) for n, name in enumerate(names)}


def set_attribute(name: str, value: Any, *, id: str = "") -> SetAttribute:
    return SetAttribute(name, value, id=id)


def add_tag(tag: str, *, id: str = "") -> Tag:
    return Tag(tag, id=id)


def remove_tag(tag: str, *, id: str = "") -> Tag:
    return Tag(tag, remove=True, id=id)


def change_score(delta: int, *, id: str = "") -> ChangeScore:
    return ChangeScore(delta, id=id)


def move_stage(trigger: str, *, id: str = "") -> MoveStage:
    return MoveStage(trigger, id=id)


def update_crm(*, id: str = "", **properties: Any) -> UpdateCRM:
    return UpdateCRM(properties, id=id)


def create_crm_task(
    subject: str, *, body: str = "", due_in: timedelta | None = None, id: str = ""
) -> CreateCRMTask:
    return CreateCRMTask(subject, body, due_in, id=id)


def create_crm_note(body: str, *, id: str = "") -> CreateCRMNote:
    """A note on the contact's CRM record, for sales to read (HubSpot: an associated note)."""
    return CreateCRMNote(body, id=id)


def call_webhook(
    url: str, *, payload: Mapping[str, Any] | None = None, id: str = ""
) -> CallWebhook:
    return CallWebhook(url, dict(payload or {}), id=id)


def exit_workflow(reason: str = "exit step", *, id: str = "") -> Exit:
    return Exit(reason, id=id)


# --- compilation ------------------------------------------------------------------------


@dataclass
class Node:
    id: str
    step: Step
    next: int | None = None  # None: the end of the workflow
    targets: dict[str, int | None] = field(default_factory=dict)  # branch outcomes


def step_kind(step: Step) -> str:
    return str(type(step).kind)  # type: ignore[union-attr]  # every step class has one


def compile_steps(steps: Sequence[Step]) -> list[Node]:
    nodes: list[Node] = []

    def emit(block: Sequence[Step], prefix: str) -> tuple[int | None, list[tuple[int, str]]]:
        entry: int | None = None
        dangling: list[tuple[int, str]] = []
        for position, step in enumerate(block):
            index = len(nodes)
            node = Node(step.id or f"{prefix}{position + 1}-{step_kind(step)}", step)
            nodes.append(node)
            for at, key in dangling:
                _patch(nodes, at, key, index)
            entry = index if entry is None else entry
            outcomes = _outcomes(step)
            if outcomes is None:
                dangling = [] if isinstance(step, Exit) else [(index, "next")]
                continue
            dangling = []
            for key, sub in outcomes.items():
                sub_entry, sub_dangling = emit(sub, f"{node.id}/{key}/")
                node.targets[key] = sub_entry
                dangling += sub_dangling if sub_entry is not None else [(index, key)]
        return entry, dangling

    _entry, _dangling = emit(steps, "")  # what dangles at the top level ends the workflow
    return nodes


def _outcomes(step: Step) -> dict[str, Sequence[Step]] | None:
    if isinstance(step, Branch):
        return {"then": step.then, "else": step.otherwise}
    if isinstance(step, Split):
        return dict(step.variants)
    if isinstance(step, WaitForEvent):
        return {"event": step.on_event, "timeout": step.on_timeout}
    return None


def _patch(nodes: list[Node], at: int, key: str, target: int) -> None:
    if key == "next":
        nodes[at].next = target
    else:
        nodes[at].targets[key] = target


def walk(
    program: Sequence[Node],
    starts: Iterable[int | None],
    *,
    through: Callable[[Node], bool] | None = None,
) -> Iterator[int]:
    """Every position a run can reach from ``starts`` (themselves included), each once,
    following every path (both sides of a branch, every variant, a wait's event and
    timeout). A node ``through`` says no to is reached but not gone past."""
    seen: set[int] = set()
    todo = [at for at in starts if at is not None]
    while todo:
        at = todo.pop()
        if at in seen or not 0 <= at < len(program):
            continue
        seen.add(at)
        yield at
        node = program[at]
        if through is None or through(node):
            todo.extend(n for n in (node.next, *node.targets.values()) if n is not None)


def after(node: Node) -> list[int | None]:
    """The positions a run goes on to from ``node``: its next step and its branches'."""
    return [node.next, *node.targets.values()]


def transactional_ahead(program: Sequence[Node], position: int) -> bool:
    """Whether a transactional email (``send_email(..., marketing=False)``) can still be
    sent from ``position`` on, following every path. Such a workflow carries on for an
    unsubscribed contact: the receipt goes, its marketing emails are skipped when they come
    up."""
    for at in walk(program, [position]):
        step = program[at].step
        if isinstance(step, SendEmail) and not step.marketing:
            return True
    return False
