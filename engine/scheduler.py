"""The scheduler tick and the sweeper (DESIGN.md sections 1 and 8).

One pass claims, in batches, everything whose time has come or whose worker went quiet:

- waiting enrollments whose ``wake_at`` has passed,
- pending events whose dispatch lease ran out (their message was lost),
- actions pending or mid-send whose lease ran out (lost message, dead worker).

Claiming stamps a new lease, so parallel schedulers never hand out the same row twice within
a lease, and a row nobody takes is handed out once per lease, not once per pass. An action
left ``sending`` keeps its expired ``lease_until`` (it tells the next claim that the send may
have been cut short): its hand-out lease is ``dispatch_lease_until``. A due enrollment is
claimed by a row in ``enrollment_claims`` (its primary key settles a race between passes: the
later insert waits for the earlier pass and then finds the claim taken), so a pass reads the
due enrollments from the ``(status, wake_at, id)`` index without writing their pages. Events
and actions are taken with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the ``BEGIN
IMMEDIATE`` transaction serialises schedulers. Cost follows the rows due, never the number of
contacts or enrollments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, bindparam, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.db import UTCDateTime, one_of_param, transaction
from engine.models import (
    Action,
    ActionStatus,
    Enrollment,
    EnrollmentClaim,
    EnrollmentStatus,
    Event,
    EventStatus,
)


@dataclass
class Due:
    enrollments: list[int] = field(default_factory=list)
    contacts: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.enrollments) + len(self.contacts) + len(self.actions)


def claim_due(db: Engine, *, now: datetime, lease: timedelta, batch_size: int) -> Due:
    due = Due()
    params = {"now": now, "until": now + lease}
    with transaction(db) as session:
        connection = session.connection()
        q = _statements(connection.dialect.name, batch_size)
        connection.execute(q.lapsed_claims, params)
        due.enrollments = list(connection.execute(q.claim_enrollments, params).scalars())
        stale_events = connection.execute(q.stale_events, params).all()
        if stale_events:
            ids = [e for e, _ in stale_events]
            connection.execute(q.claim_events, {**params, "ids": ids})
            due.contacts = sorted({c for _, c in stale_events})
        found = connection.execute(q.actions, params).all()
        due.actions = [a for a, _ in found]
        pending = [a for a, status in found if status == ActionStatus.PENDING]
        sending = [a for a, status in found if status != ActionStatus.PENDING]
        if pending:
            connection.execute(q.claim_actions, {**params, "ids": pending})
        if sending:
            # Its lease_until stays expired, so that the claim can tell the worker died
            # mid-send (actions._claim); the hand-out lease goes in a column of its own.
            connection.execute(q.claim_sends, {**params, "ids": sending})
    return due


@dataclass(frozen=True)
class _Statements:
    lapsed_claims: Any
    claim_enrollments: Any
    stale_events: Any
    claim_events: Any
    actions: Any
    claim_actions: Any
    claim_sends: Any


_E = Enrollment.__table__  # type: ignore[attr-defined]
_C = EnrollmentClaim.__table__  # type: ignore[attr-defined]
_V = Event.__table__  # type: ignore[attr-defined]
_A = Action.__table__  # type: ignore[attr-defined]


@cache
def _statements(dialect: str, batch_size: int) -> _Statements:
    """A pass's statements on table columns, built once per dialect and batch size (a pass
    runs often; building and caching the statements each time was most of an idle one)."""
    now: BindParameter[datetime] = bindparam("now")
    until: BindParameter[datetime] = bindparam("until")
    return _Statements(
        lapsed_claims=_C.delete().where(_C.c.until <= now),
        claim_enrollments=_claim_enrollments(dialect, batch_size, now),
        stale_events=select(_V.c.id, _V.c.contact_id)
        .where(_V.c.status == EventStatus.PENDING, _V.c.lease_until < now)
        .limit(batch_size)
        .with_for_update(skip_locked=True),
        claim_events=_V.update()
        .where(one_of_param(_V.c.id, "ids", dialect=dialect))
        .values(lease_until=until),
        actions=select(_A.c.id, _A.c.status)
        .where(
            _A.c.status.in_([ActionStatus.PENDING, ActionStatus.SENDING]),
            _A.c.lease_until <= now,
            # A row mid-send whose lease ran out is read from the index each pass until a
            # worker takes it: no more of them than the sends in flight when workers died.
            (_A.c.status == ActionStatus.PENDING)
            | _A.c.dispatch_lease_until.is_(None)
            | (_A.c.dispatch_lease_until <= now),
        )
        .order_by(_A.c.lease_until, _A.c.id)  # oldest first, in order
        .limit(batch_size)
        .with_for_update(skip_locked=True),
        claim_actions=_A.update()
        .where(
            one_of_param(_A.c.id, "ids", dialect=dialect),
            _A.c.status == ActionStatus.PENDING,
        )
        .values(lease_until=until),
        claim_sends=_A.update()
        .where(
            one_of_param(_A.c.id, "ids", dialect=dialect),
            _A.c.status == ActionStatus.SENDING,
        )
        .values(dispatch_lease_until=until),
    )


def _claim_enrollments(dialect: str, batch_size: int, now: Any) -> Any:
    """``INSERT INTO enrollment_claims SELECT <due, unclaimed> ON CONFLICT ... RETURNING``.

    A row already in the table is taken over only if its claim lapsed or was for an earlier
    wake-up; a pass racing another waits on the other's insert and then skips what it took.
    """
    due = (
        select(_E.c.id, _E.c.wake_at, bindparam("until", type_=UTCDateTime()))
        .where(_E.c.status == EnrollmentStatus.WAITING, _E.c.wake_at <= now, ~_held(now))
        .order_by(_E.c.wake_at, _E.c.id)
        .limit(batch_size)
    )
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_C).from_select(["enrollment_id", "wake_at", "until"], due)
    return statement.on_conflict_do_update(
        index_elements=[_C.c.enrollment_id],
        set_={"wake_at": statement.excluded.wake_at, "until": statement.excluded.until},
        where=(_C.c.until <= now) | (_C.c.wake_at != statement.excluded.wake_at),
    ).returning(_C.c.enrollment_id)


# A claim row and an enrollment row: the claim is on the enrollment's current wake-up.
_ON_CURRENT_WAKE = (_C.c.enrollment_id == _E.c.id) & (_C.c.wake_at == _E.c.wake_at)


def _held(now: Any) -> Any:
    """A claim on the enrollment's current wake-up that has not lapsed: it lapses at
    ``until``, the instant the wake-up is due again."""
    return exists().where(_ON_CURRENT_WAKE, _C.c.until > now)


def next_wake_ups() -> tuple[Any, Any]:
    """Two scalar subqueries, the earlier of which is when a pass will next find a wake-up
    to claim: the first wake-up no claim is on, and the first claim on a current wake-up
    to lapse (each NULL if none). Both read an index from its start: the cost follows the
    claims in flight, not the enrollments waiting."""
    claimed = exists().where(_ON_CURRENT_WAKE)
    unclaimed = (
        select(_E.c.wake_at)
        .where(_E.c.status == EnrollmentStatus.WAITING, _E.c.wake_at.is_not(None), ~claimed)
        .order_by(_E.c.wake_at)
        .limit(1)
        .scalar_subquery()
    )
    current = exists().where(_ON_CURRENT_WAKE, _E.c.status == EnrollmentStatus.WAITING)
    # EXISTS, not a join: a planner without statistics (SQLite) could otherwise walk every
    # waiting enrollment and look its claim up, rather than the claims and their enrollment.
    lapsing = select(func.min(_C.c.until)).where(current).scalar_subquery()
    return unclaimed, lapsing


def current_claims(session: Session, enrollment_ids: list[int]) -> dict[int, datetime]:
    """For each of these enrollments that waits on a wake-up a pass has claimed: until when
    the claim holds it (past that instant it has lapsed, and the wake-up is due again). A
    claim left from an earlier wake-up of the same enrollment holds nothing and is left out.
    """
    if not enrollment_ids:
        return {}
    rows = session.execute(
        select(_C.c.enrollment_id, _C.c.until)
        .select_from(_C.join(_E, _ON_CURRENT_WAKE))
        .where(_E.c.status == EnrollmentStatus.WAITING, _C.c.enrollment_id.in_(enrollment_ids))
    )
    return {enrollment_id: until for enrollment_id, until in rows}
