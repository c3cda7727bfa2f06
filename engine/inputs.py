"""What the outside world tells a runtime: events, contacts created or updated, and explicit
stage triggers. Each is committed first and its processing enqueued after."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from engine import pipeline, recording
from engine.contacts import (
    find_or_create_contact,
    normalize_email,
    validate_properties,
    validate_stage,
    validate_timezone,
)
from engine.date_attributes import refuse_bad_dates
from engine.db import transaction
from engine.errors import ValidationError
from engine.event_input import occurred_at_problem
from engine.executor import Effects
from engine.machine import Move
from engine.models import Contact, StageTransition

if TYPE_CHECKING:
    from engine.runtime import Runtime


def track(
    runtime: Runtime,
    email: str,
    event_type: str,
    properties: Mapping[str, Any] | None = None,
    *,
    source: str = "api",
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    attributes: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> recording.Recorded:
    """``Runtime.track``: record one event (idempotently) and enqueue its processing after
    commit. An attribute a ``wait_until_date`` step counts from must be given a date, and
    ``occurred_at`` must be a plausible time (from 2000-01-01 to a day after the clock), as
    the track API requires: a time in 2099 would sit inside every ``within=`` window."""
    refuse_bad_dates(runtime.registry, attributes)
    if occurred_at is not None:
        problem = occurred_at_problem(occurred_at, now=runtime.clock.now())
        if problem is not None:
            raise ValidationError(f"occurred_at: {problem}", field="occurred_at")
    with transaction(runtime.db) as session:
        recorded = recording.record_event(
            session,
            runtime.registry,
            now=runtime.clock.now(),
            email=email,
            event_type=event_type,
            properties=properties,
            source=source,
            idempotency_key=idempotency_key,
            occurred_at=occurred_at,
            attributes=attributes,
            timezone=timezone,
        )
    if not recorded.duplicate:
        runtime.jobs.process_contact.send(recorded.contact_id)
    return recorded


def upsert_contact(
    runtime: Runtime,
    email: str,
    *,
    stage: str | None = None,
    timezone: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Contact:
    """``Runtime.upsert_contact``: create or update a contact without an event (an import,
    a CRM sync).

    ``stage`` only applies to a new contact (existing ones move through the stage
    machine); it is recorded as an ``imported`` transition and starts no workflow, so an
    import never sends a burst of emails. Changing an existing contact's attributes (or
    time zone) records a ``contact.updated`` event and processes it, so conditions on them
    (segments joined, goals, exits) are evaluated as for a tracked event; a change of
    nothing records nothing.
    """
    email = normalize_email(email)
    if stage is not None:
        validate_stage(runtime.registry.journey, stage)
    if timezone is not None:
        validate_timezone(timezone)
    attributes = validate_properties(attributes, field="attributes")
    refuse_bad_dates(runtime.registry, attributes)
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        contact, created, attributes_before = find_or_create_contact(
            session,
            email=email,
            journey=runtime.registry.journey,
            now=now,
            timezone=timezone,
            attributes=attributes,
            stage=stage,
        )
        if attributes_before is not None:
            assert contact.id is not None
            recording.record_contact_updated(
                session,
                now=now,
                contact_id=contact.id,
                attributes=contact.attributes,
                attributes_before=attributes_before,
            )
        if created:
            session.flush()
            assert contact.id is not None  # given by the flush
            session.add(
                StageTransition(
                    contact_id=contact.id,
                    from_stage="",  # type: ignore[arg-type]
                    to_stage=contact.stage,
                    trigger="imported",
                    at=now,
                )
            )
    if attributes_before is not None:
        runtime.enqueue_or_leave([contact.id], what="contact update")  # type: ignore[list-item]
    return contact


def fire(runtime: Runtime, email: str, trigger: str) -> Move:
    """``Runtime.fire``: move a contact by an explicit trigger (an operator's or an API's
    decision). Raises ``InvalidTransition`` and changes nothing when the stage does not
    allow it."""
    email = normalize_email(email)
    runtime.sync_versions()
    with transaction(runtime.db) as session:
        contact = session.exec(select(Contact).where(Contact.email == email)).first()
        if contact is None:
            raise ValidationError(f"no contact with email {email!r}", field="email")
        contact = pipeline.lock_contact(session, contact.id)  # type: ignore[arg-type]
        assert contact is not None
        move = runtime.registry.machine.fire(
            email=contact.email,
            stage=contact.stage,
            trigger=trigger,
            score=contact.score,
            attributes=contact.attributes,
        )
        effects = Effects()
        if move.moved:
            now = runtime.clock.now()
            effects = pipeline.change_stage(
                session,
                runtime.registry,
                contact,
                move.dest,
                trigger=trigger,
                now=now,
                event_id=None,
            )
            contact.updated_at = now
            contact.version += 1
            session.add(contact)
    runtime.dispatch(effects)
    return move
