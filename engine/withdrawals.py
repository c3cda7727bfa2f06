"""Withdrawing the waiting marketing emails of a workflow that reached a goal or an exit.

An email a guard rail held back (quiet hours, a send window, a frequency cap), or one
waiting to retry after a provider error, is still pending when its contact converts or
meets an exit condition: the trial nudge held until 08:00 for the contact who bought at
02:00. Goals and exits are there to stop exactly that, so when an enrollment ends by one of
them its waiting marketing emails are skipped, saying why, in the same transaction.

What is not withdrawn:

- an email written in the same pass (never held yet: a new trialist's welcome, written as
  the nurture she converts out of in the same event starts), and an email written just
  before an explicit ``exit_workflow()`` step, or before the workflow completed: the author
  sent it on purpose;
- transactional emails (``marketing=False``): receipts and password resets always go;
- an email a worker is handing to the provider at this moment (its row is locked by the
  claim on PostgreSQL: skipped over rather than waited for, so the two transactions never
  wait on each other's locks in opposite orders); it was on its way before the end.

"Waiting" is read off the row: a pending email whose next attempt was put after the moment
it was written (a hold or a retry moved it; a new one is due when written).

Skipping those rows at once shows the withdrawal in the timeline right away; the guarantee is
at send time. The enrollment keeps the mark (``mark_withdrawn``: in its context, when and
why), and both claim paths skip a marketing email of a marked enrollment written before the
mark (``withdrawn_marks``, ``withdrawal_of``): an email a worker held locked at that moment,
or that was in flight and then failed and went back to wait for a retry, or that the claim
held again (a cap, a window), never goes out after the goal either.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from engine.db import one_of_param
from engine.models import Action, ActionStatus, Enrollment

_ACTIONS = Action.__table__  # type: ignore[attr-defined]
_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
MARK = "withdrawn_before"
WHY = "withdrawn_why"


@cache
def _statements() -> tuple[Any, Any]:
    waiting = (
        select(_ACTIONS.c.id, _ACTIONS.c.payload, _ACTIONS.c.reason)
        .where(
            _ACTIONS.c.enrollment_id == bindparam("enrollment_id"),
            _ACTIONS.c.kind == "email",
            _ACTIONS.c.status == ActionStatus.PENDING,
            _ACTIONS.c.next_attempt_at > _ACTIONS.c.created_at,
        )
        .order_by(_ACTIONS.c.id)
        .with_for_update(skip_locked=True)
    )
    skip = (
        update(_ACTIONS)
        .where(
            _ACTIONS.c.id == bindparam("action_id"),
            _ACTIONS.c.status == ActionStatus.PENDING,
        )
        .values(
            status=ActionStatus.SKIPPED,
            reason=bindparam("new_reason", type_=_ACTIONS.c.reason.type),
            lease_until=None,
            completed_at=bindparam("now", type_=_ACTIONS.c.completed_at.type),
            updated_at=bindparam("now", type_=_ACTIONS.c.updated_at.type),
        )
    )
    return waiting, skip


def withdraw_waiting_emails(
    session: Session, enrollment_id: int, *, now: datetime, why: str
) -> list[int]:
    """Skip the waiting marketing emails of an enrollment that has just met a goal or an
    exit (``why``: which, as "goal reached: entered purchase"), noting it in each one's
    ``reason``; return their ids."""
    waiting, skip = _statements()
    # Only rows committed before this transaction can be held: the ones it writes are not
    # (so no flush of its pending changes first, which would split a job's one flush).
    with session.no_autoflush:
        rows = session.execute(waiting, {"enrollment_id": enrollment_id}).all()
    withdrawn = [
        {
            "action_id": row.id,
            "new_reason": {**row.reason, "skipped": f"withdrawn before it went out: {why}"},
            "now": now,
        }
        for row in rows
        if row.payload.get("marketing", True)
    ]
    if withdrawn:
        session.execute(skip, withdrawn)
    return [w["action_id"] for w in withdrawn]


def mark_withdrawn(
    session: Session, enrollment: Enrollment | int, *, now: datetime, why: str
) -> None:
    """Mark the enrollment (an object, or the id of one not loaded): its marketing emails
    written before ``now`` must not go out, because of ``why``."""
    mark = {MARK: now.isoformat(), WHY: why}
    if isinstance(enrollment, Enrollment):
        enrollment.context = {**enrollment.context, **mark}
        return
    with session.no_autoflush:
        context = session.execute(
            select(_ENROLLMENTS.c.context).where(_ENROLLMENTS.c.id == enrollment)
        ).scalar()
    if context is not None:
        session.execute(
            update(_ENROLLMENTS)
            .where(_ENROLLMENTS.c.id == enrollment)
            .values(context={**context, **mark})
        )


@cache
def _marks_statement(dialect: str) -> Any:
    mark = _ENROLLMENTS.c.context[MARK].as_string()
    return select(_ENROLLMENTS.c.id, mark, _ENROLLMENTS.c.context[WHY].as_string()).where(
        one_of_param(_ENROLLMENTS.c.id, "enrollment_ids", dialect=dialect), mark.is_not(None)
    )


def withdrawn_marks(session: Session, actions: Iterable[Any]) -> dict[int, tuple[datetime, str]]:
    """For the marketing emails among ``actions`` (rows or objects), the marks of their
    enrollments that have one: enrollment id -> (emails written before it go nowhere, why).
    One statement; none when no action is a marketing email of an enrollment."""
    ids = sorted(
        {
            a.enrollment_id
            for a in actions
            if a.kind == "email"
            and a.enrollment_id is not None
            and a.payload.get("marketing", True)
        }
    )
    if not ids:
        return {}
    statement = _marks_statement(session.get_bind().dialect.name)
    with session.no_autoflush:
        rows = session.execute(statement, {"enrollment_ids": ids}).all()
    return {row[0]: (datetime.fromisoformat(row[1]), row[2] or "") for row in rows}


def withdrawal_of(action: Any, marks: dict[int, tuple[datetime, str]]) -> str | None:
    """Why this email must not go out (its enrollment was marked after it was written), or
    None. An email written at the instant of the mark (in the pass that reached the goal)
    still goes."""
    if action.kind != "email" or not action.payload.get("marketing", True):
        return None
    mark = marks.get(action.enrollment_id)
    if mark is None or not action.created_at < mark[0]:
        return None
    return f"withdrawn before it went out: {mark[1]}"
