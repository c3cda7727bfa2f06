"""The transactions jobs run the pipeline in (pipeline.py holds what happens inside them).

``process_contact_job`` applies one contact's pending events; ``process_contacts_job`` does
several contacts in one transaction (locked in id order with one statement, their pending
events read with another); ``wake_enrollments_job`` continues several due enrollments in one
transaction. Each commits before the runtime enqueues what it asked for, and falls back to
smaller transactions when something raises, so one bad event or enrollment holds up only
its own contact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from engine import known_enrollments, known_events, pipeline
from engine.db import one_of, skip_commit_flush, transaction
from engine.effects import Effects
from engine.executor import wake
from engine.models import Contact, Enrollment, EnrollmentStatus, Event, EventStatus
from engine.pipeline import _apply_pending, process_contact, wake_enrollment
from engine.registry import Registry

log = logging.getLogger(__name__)


def process_contact_job(
    db: Engine, registry: Registry, contact_id: int, *, now: datetime
) -> Effects:
    """Apply the contact's pending events, committed; what to enqueue afterwards.

    The common case (no event raises) runs in one transaction with no savepoint per event.
    If one raises, that transaction is rolled back whole and the events are applied again,
    each in its own savepoint, so only the failing one is marked failed (``process_contact``
    with ``isolate=True``).
    """
    try:
        with transaction(db) as session:
            skip_commit_flush(session)
            return process_contact(session, registry, contact_id, now=now, isolate=False)
    except Exception as exc:
        log.warning(
            "contact %s: an event failed (%s: %s); applying the events again one by one",
            contact_id,
            type(exc).__name__,
            exc,
        )
    with transaction(db) as session:
        skip_commit_flush(session)
        return process_contact(session, registry, contact_id, now=now, isolate=True)


def process_contacts_job(
    db: Engine, registry: Registry, contact_ids: list[int], *, now: datetime
) -> Effects:
    """Several contacts' pending events in one transaction, committed; what to enqueue.

    The contacts are locked in one statement, in id order (two jobs sharing contacts lock
    them in the same order, so they queue rather than deadlock), and their pending events
    are read in one statement. If anything raises, the transaction is rolled back whole and
    each contact is done again on its own (``process_contact_job``), so one bad event costs
    only its own contact a retry.
    """
    return _together_or_one_by_one(
        db,
        "contacts",
        sorted(set(contact_ids)),
        together=lambda session, ids: _process_together(session, registry, ids, now=now),
        alone=lambda contact_id: process_contact_job(db, registry, contact_id, now=now),
    )


class PartlyFailed(Exception):
    """Part of a batch (contacts or enrollments) failed; ``effects`` holds what the rest
    committed."""

    def __init__(self, effects: Effects, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.effects = effects
        self.cause = cause


def _process_together(
    session: Session, registry: Registry, ids: list[int], *, now: datetime
) -> Effects:
    contacts = session.exec(
        select(Contact)
        .where(one_of(session, col(Contact.id), ids))
        .order_by(col(Contact.id))
        .with_for_update(key_share=True)
    ).all()
    known_enrollments.keep_enrollments(session)
    known_enrollments.load(session, [c.id for c in contacts if c.id is not None])
    known_events.batch(session, [c.id for c in contacts if c.id is not None])
    limit = pipeline.EVENTS_PER_PASS * len(ids)
    pending = [
        PendingEvent(*row)  # the columns are the dataclass's fields, in order
        for row in session.execute(
            select(*_PENDING_COLUMNS)
            .where(one_of(session, col(Event.contact_id), ids), Event.status == EventStatus.PENDING)
            .order_by(col(Event.id))
            .limit(limit)
        )
    ]
    by_contact: dict[int, list[Event]] = {}
    for event in pending:
        by_contact.setdefault(event.contact_id, []).append(event)  # type: ignore[arg-type]
    effects = Effects()
    for contact in contacts:
        mine = by_contact.get(contact.id, [])  # type: ignore[arg-type]
        per_pass = pipeline.EVENTS_PER_PASS
        effects.extend(_apply_pending(session, registry, contact, mine[:per_pass], now=now))
        if len(mine) > per_pass or len(pending) == limit:
            effects.contacts.append(contact.id)  # type: ignore[arg-type]  # more may wait
    done = [e for e in pending if e.status != EventStatus.PENDING]
    if done:
        session.execute(
            _EVENT_DONE,
            [{"done_id": e.id, "done_status": e.status, "done_at": e.processed_at} for e in done],
        )
    return effects


@dataclass(slots=True)
class PendingEvent:
    """A pending event as a batch job reads it: a plain row, not an ORM object (loading and
    flushing a hundred of those was a visible share of a job). ``apply_event`` reads it
    like an ``Event`` and sets its ``status`` and ``processed_at``; the job writes those back
    in one statement."""

    id: int
    contact_id: int
    type: str
    properties: dict[str, Any]
    source: str
    idempotency_key: str
    status: str
    error: str | None
    occurred_at: datetime
    received_at: datetime
    processed_at: datetime | None
    attributes_before: dict[str, Any] | None


_PENDING_COLUMNS = tuple(col(getattr(Event, name)) for name in PendingEvent.__dataclass_fields__)
_EVENT_DONE = (
    update(Event.__table__)  # type: ignore[attr-defined]
    .where(Event.__table__.c.id == bindparam("done_id"))  # type: ignore[attr-defined]
    .values(status=bindparam("done_status"), processed_at=bindparam("done_at"))
)


def wake_enrollments_job(
    db: Engine, registry: Registry, enrollment_ids: list[int], *, now: datetime
) -> Effects:
    """Continue several due enrollments in one transaction, committed; what to enqueue.

    Their contacts are locked in one statement in id order and the enrollments re-read under
    those locks, so a duplicate or stale wake is a no-op as in ``wake_enrollment``. If
    anything raises, the transaction is rolled back whole and each enrollment is woken in a
    transaction of its own; the first error is raised after the others committed.
    """
    return _together_or_one_by_one(
        db,
        "enrollments",
        sorted(set(enrollment_ids)),
        together=lambda session, ids: _wake_together(session, registry, ids, now=now),
        alone=lambda enrollment_id: _wake_alone(db, registry, enrollment_id, now=now),
    )


def _wake_alone(db: Engine, registry: Registry, enrollment_id: int, *, now: datetime) -> Effects:
    with transaction(db) as session:
        return wake_enrollment(session, registry, enrollment_id, now=now)


def _together_or_one_by_one(
    db: Engine,
    what: str,
    ids: list[int],
    *,
    together: Callable[[Session, list[int]], Effects],
    alone: Callable[[int], Effects],
) -> Effects:
    """``together`` in one transaction; if it raises, roll it back and run ``alone`` for each
    id, so one bad row holds up only itself. The first error is raised (``PartlyFailed``,
    with what the others committed) after every other id is done."""
    try:
        with transaction(db) as session:
            skip_commit_flush(session)
            return together(session, ids)
    except Exception as exc:
        log.warning(
            "%s %s: together failed (%s: %s); one by one instead",
            what,
            ids,
            type(exc).__name__,
            exc,
        )
    effects = Effects()
    failure: Exception | None = None
    for one in ids:
        try:
            effects.extend(alone(one))
        except Exception as exc:  # the others still go ahead; the job is retried for this one
            log.exception("%s %s failed", what, one)
            failure = failure or exc
    if failure is not None:
        raise PartlyFailed(effects, failure) from failure
    return effects


def _wake_together(
    session: Session, registry: Registry, ids: list[int], *, now: datetime
) -> Effects:
    owners = sorted(
        set(
            session.exec(
                select(Enrollment.contact_id).where(one_of(session, col(Enrollment.id), ids))
            ).all()
        )
    )
    if not owners:
        return Effects()
    contacts = {
        c.id: c
        for c in session.exec(
            select(Contact)
            .where(one_of(session, col(Contact.id), owners))
            .order_by(col(Contact.id))
            .with_for_update(key_share=True)
        ).all()
    }
    known_enrollments.keep_enrollments(session)
    known_events.batch(session, [i for i in contacts if i is not None])
    enrollments = session.exec(
        select(Enrollment)
        .where(one_of(session, col(Enrollment.id), ids))
        .order_by(col(Enrollment.id))
        .execution_options(populate_existing=True)  # as they are under the locks
    ).all()
    effects = Effects()
    for enrollment in enrollments:
        contact = contacts.get(enrollment.contact_id)
        if (
            contact is None
            or enrollment.status != EnrollmentStatus.WAITING
            or enrollment.wake_at is None
            or enrollment.wake_at > now
        ):
            continue
        effects.extend(wake(session, registry, contact, enrollment, now=now))
    return effects
