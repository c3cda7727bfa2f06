"""Pausing a workflow while its email is held by a guard rail.

A workflow's wait is spacing the author chose between two emails: ``send_email("a")``,
``wait(days=1)``, ``send_email("b")`` means b a day after a. When a guard rail holds a
(quiet hours, a send window, a frequency cap, or queued behind an email they hold) from
Saturday 10:00 until Monday 09:00, a plain clock would end the wait on Sunday 10:00 and
hold b until Monday 09:00 too: both would go together. So, as HubSpot and Customer.io do,
the workflow pauses while its email is held: the wait counts from when the email goes.

The rule, applied by both claim paths (``actions._claim``, ``batch_claim.claim_batch``) in
the transaction that defers the email, under the contact's lock they already hold:

- Only a **relative** wait moves: ``wait(...)`` and the timeout of ``wait_for_event``. Its
  new wake-up is the held-until time plus the wait's own length (``until + L``), never
  earlier than the wake-up it has: the wait then ends ``L`` after the email goes. A
  ``wait_until`` (a time of day) or ``wait_until_date`` is a point in time the author named;
  it does not move (an email still held then makes the next one queue behind it, as before).
- Only the wait the email's own pass parked at: the email was written at the instant that
  wait began (``created_at`` is the wait's start), and the wait is reachable from the
  email's step with no other wait in between. Every email a pass wrote before its wait
  pauses that wait: the wait counts from the last of them to go (the latest ``until``).
  An email written before an earlier wait (held so long that the enrollment moved on, or
  whose wait was absolute) leaves the current wait alone: the author's spacing is between
  the current wait and the emails just before it.
- **No double shifting.** The new wake-up is computed from the hold, not added to the
  current one: the same email held again (a cap, then a window) sets ``until2 + L``; a
  second email of the pass held too sets the later of the two. The first pause records in
  the enrollment's ``context["paused"]`` the wait step and when it began, since the
  wake-up no longer says so; ``advance`` clears it when the enrollment runs on.
- Waiting enrollments only: one that has ended (goal, exit, completed) is left alone, as is
  one on another version than the email's (migrated since).
- A pause is not taken back: an email skipped when its hold ends (suppressed meanwhile)
  still kept the wait until then, as the wait counts from when it would have gone.
- Transactional email is never held, so never pauses anything; an email outside a workflow
  (no enrollment) has nothing to pause.

A wake-up the scheduler already handed to a job (``enrollment_claims``) is moved the way
``waits.follow_date_changes`` moves one: ``wake_at`` changes, so the job finds the
enrollment not yet due and does nothing, and the claim, being on the old wake-up, no longer
hides the new one from the next pass.

Each pause is noted in the enrollment's trail (``kind="paused"``), which the contact's
timeline shows: "wait extended to ... while email a was held until ...".

Cost: nothing unless an email is held; then one statement reads (and on PostgreSQL locks,
after the contact, the order every pipeline transaction takes) the held emails' waiting
enrollments, and one more moves those whose wake-up changes.

Known limit: the set-based entry of a broadcast or a schedule slot whose first email is
followed by a step other than a wait (``broadcast._enroll_fast``) leaves the enrollment due
at that step: a wait after it begins when the scheduler runs that step, later than the
email was written, so a hold of that email does not pause it. (Followed directly by a wait,
as usual, the enrollment is parked at the wait and pauses like any other.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from engine.db import one_of_param
from engine.enrollments import workflow_for
from engine.localtime import next_time_of_day
from engine.models import Enrollment, EnrollmentStatus
from engine.registry import Registry
from engine.steps import WAITS, Exit, Node, Wait, WaitForEvent, WaitUntil, after, walk
from engine.trail import with_trail
from engine.waits import PAUSED, WAITING_UNTIL_DATE

_E = Enrollment.__table__  # type: ignore[attr-defined]
_PAST_THE_END = 10**6  # the executor's position after a wait that ends the workflow


@dataclass(frozen=True)
class Held:
    """An email a claim has just held. ``action`` is a row or an object with ``id``,
    ``enrollment_id``, ``kind``, ``payload``, ``reason`` and ``created_at``; ``timezone`` is
    its contact's (to tell a wait until a time of day from a relative one)."""

    action: Any
    timezone: str
    until: datetime
    rule: str


@cache
def _statements(dialect: str) -> tuple[Any, Any]:
    """The waiting enrollments of some held emails, locked in id order; a wake-up moved."""
    read = (
        select(_E.c.id, _E.c.workflow, _E.c.version, _E.c.position, _E.c.wake_at, _E.c.context)
        .where(
            one_of_param(_E.c.id, "enrollment_ids", dialect=dialect),
            _E.c.status == EnrollmentStatus.WAITING,
        )
        .order_by(_E.c.id)
        .with_for_update()
    )
    move = (
        update(_E)
        .where(_E.c.id == bindparam("moved_id"), _E.c.status == EnrollmentStatus.WAITING)
        .values(
            wake_at=bindparam("moved_wake", type_=_E.c.wake_at.type),
            context=bindparam("moved_context", type_=_E.c.context.type),
            updated_at=bindparam("moved_at", type_=_E.c.updated_at.type),
        )
    )
    return read, move


def pause_workflows(
    session: Session, registry: Registry, holds: Iterable[Held], *, now: datetime
) -> list[int]:
    """Extend the relative waits of the enrollments whose emails ``holds`` were just held
    (the module docstring says which, and to when); return the ids of those moved. Free
    when no held email belongs to an enrollment."""
    by_enrollment: dict[int, list[Held]] = {}
    for held in holds:
        action = held.action
        if (
            action.kind == "email"
            and action.enrollment_id is not None
            and action.payload.get("marketing", True)
        ):
            by_enrollment.setdefault(action.enrollment_id, []).append(held)
    if not by_enrollment:
        return []
    read, move = _statements(session.get_bind().dialect.name)
    connection = session.connection()
    moves: list[dict[str, Any]] = []
    for row in connection.execute(read, {"enrollment_ids": sorted(by_enrollment)}):
        moved = _moved(session, registry, row, by_enrollment[row.id], now=now)
        if moved is not None:
            moves.append(moved)
    if moves:
        connection.execute(move, moves)
    return [m["moved_id"] for m in moves]


def _moved(
    session: Session, registry: Registry, row: Any, holds: Sequence[Held], *, now: datetime
) -> dict[str, Any] | None:
    """The parameters moving this waiting enrollment's wake-up, or None if it stays."""
    context: dict[str, Any] = row.context or {}
    if row.wake_at is None or WAITING_UNTIL_DATE in context:
        return None  # a wait until a date is absolute
    workflow = workflow_for(session, registry, row.workflow, row.version)
    if workflow is None:
        return None
    best: tuple[datetime, Held, Node, datetime] | None = None
    for held in holds:
        if held.action.reason.get("version") != row.version:
            continue  # written on another version: the enrollment was migrated since
        found = _wait_paused_by(workflow.program, row, context, held)
        if found is None:
            continue
        node, length, since = found
        wake = held.until + length
        if best is None or wake > best[0]:
            best = (wake, held, node, since)
    if best is None or best[0] <= row.wake_at:
        return None
    wake, held, node, since = best
    email = str(held.action.reason.get("step", "?"))
    note = (
        f"wait extended to {wake:%Y-%m-%d %H:%M} UTC while email {email} was held until "
        f"{held.until:%Y-%m-%d %H:%M} UTC"
    )
    record = {
        "step": node.id,
        "since": since.isoformat(),
        "email": held.action.id,
        "until": held.until.isoformat(),
    }
    paused = with_trail(
        {**context, PAUSED: record}, node.id, now, note, kind="paused", rule=held.rule
    )
    return {"moved_id": row.id, "moved_wake": wake, "moved_context": paused, "moved_at": now}


def _wait_paused_by(
    program: Sequence[Node], row: Any, context: dict[str, Any], held: Held
) -> tuple[Node, timedelta, datetime] | None:
    """The relative wait the enrollment is parked at, if the held email's own pass parked
    it there: (its node, its length, when it began). None for anything else: an absolute
    wait, another pass's wait, a wait that cannot be told apart from an absolute one."""
    action = held.action
    index = next((i for i, n in enumerate(program) if n.id == action.reason.get("step")), None)
    if index is None:
        return None
    ahead = _first_waits(program, index)
    waiting_for = context.get("waiting_for")
    if waiting_for is not None:  # parked at the wait_for_event itself: its timeout
        at = row.position
        if at not in ahead or program[at].id != waiting_for.get("step"):
            return None
        candidates = [program[at]]
    else:  # parked after a wait: position is the step it resumes at
        candidates = [program[i] for i in sorted(ahead) if _resumes_at(program[i], row.position)]
    relative = [n for n in candidates if isinstance(n.step, Wait | WaitForEvent)]
    written = action.created_at
    paused = context.get(PAUSED)
    if paused is not None:  # the wake-up moved already: the record says which wait, since when
        node = next((n for n in relative if n.id == paused.get("step")), None)
        if node is None or datetime.fromisoformat(paused["since"]) != written:
            return None
        return node, _length(node), written
    for node in relative:
        length = _length(node)
        if row.wake_at - length != written:
            continue  # not begun when the email was written: another pass's wait
        if any(_wakes_then(n, written, row.wake_at, held.timezone) for n in candidates):
            return None  # an absolute wait on another path would wake then too: leave it
        return node, length, written
    return None


def _first_waits(program: Sequence[Node], index: int) -> set[int]:
    """The waits a pass can reach from the step at ``index`` with no wait in between (the
    program only jumps forward, so this is where the pass that ran it parked)."""
    reached = walk(
        program,
        after(program[index]),
        through=lambda node: not isinstance(node.step, (*WAITS, Exit)),
    )
    return {at for at in reached if isinstance(program[at].step, WAITS)}


def _resumes_at(node: Node, position: int) -> bool:
    """Whether an enrollment parked at this wait has ``position`` (the step after it)."""
    return (_PAST_THE_END if node.next is None else node.next) == position


def _length(node: Node) -> timedelta:
    step = node.step
    if isinstance(step, WaitForEvent):
        return step.timeout
    assert isinstance(step, Wait)
    return step.duration


def _wakes_then(node: Node, began: datetime, wake_at: datetime, timezone: str) -> bool:
    """Whether ``node`` is a wait until a time of day that, begun at ``began``, would wake
    at ``wake_at``: then the enrollment may be parked there rather than at a relative wait
    of the same length on another path."""
    step = node.step
    if not isinstance(step, WaitUntil):
        return False
    wake = next_time_of_day(began, timezone, step.time, weekdays_only=step.weekdays_only)
    return wake == wake_at
