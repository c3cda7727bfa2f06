"""The scheduler tick and the sweeper (DESIGN.md sections 1 and 8).

One pass claims, in batches, everything whose time has come or whose worker went quiet:

- waiting enrollments whose ``wake_at`` has passed,
- pending events whose dispatch lease ran out (their message was lost),
- actions pending or mid-send whose lease ran out (lost message, dead worker).

Claiming stamps a new lease, so parallel schedulers never hand out the same row twice within
a lease; on PostgreSQL rows are taken with ``FOR UPDATE SKIP LOCKED``, on SQLite the
``BEGIN IMMEDIATE`` transaction serialises schedulers. Cost follows the rows due, through the
``(status, wake_at)`` and ``(status, lease_until)`` indexes, never the number of contacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from engine.db import transaction
from engine.models import Action, ActionStatus, Enrollment, EnrollmentStatus, Event, EventStatus


@dataclass
class Due:
    enrollments: list[int] = field(default_factory=list)
    contacts: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.enrollments) + len(self.contacts) + len(self.actions)


def claim_due(db: Engine, *, now: datetime, lease: timedelta, batch_size: int) -> Due:
    due = Due()
    until = now + lease
    with transaction(db) as session:
        due.enrollments = list(
            session.exec(
                select(Enrollment.id)
                .where(
                    Enrollment.status == EnrollmentStatus.WAITING,
                    col(Enrollment.wake_at) <= now,
                    (col(Enrollment.claimed_until).is_(None))
                    | (col(Enrollment.claimed_until) < now),
                )
                .order_by(col(Enrollment.wake_at))
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
        )
        if due.enrollments:
            session.exec(
                update(Enrollment)  # type: ignore[call-overload]
                .where(col(Enrollment.id).in_(due.enrollments))
                .values(claimed_until=until)
            )

        stale_events = session.exec(
            select(Event.id, Event.contact_id)
            .where(Event.status == EventStatus.PENDING, col(Event.lease_until) < now)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if stale_events:
            session.exec(
                update(Event)  # type: ignore[call-overload]
                .where(col(Event.id).in_([e for e, _ in stale_events]))
                .values(lease_until=until)
            )
            due.contacts = sorted({c for _, c in stale_events})

        due.actions = list(
            session.exec(
                select(Action.id)
                .where(
                    col(Action.status).in_([ActionStatus.PENDING, ActionStatus.SENDING]),
                    col(Action.lease_until) <= now,
                )
                .order_by(col(Action.lease_until), col(Action.id))  # oldest first, in order
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
        )
        if due.actions:
            # A pending row gets a fresh dispatch lease; a sending row keeps its expired
            # lease so that perform_action can tell the worker died mid-send.
            session.exec(
                update(Action)  # type: ignore[call-overload]
                .where(col(Action.id).in_(due.actions), Action.status == ActionStatus.PENDING)
                .values(lease_until=until)
            )
    return due
