"""Recording an event: the first step of the one path (DESIGN.md section 2).

``record_event`` validates an event and stores it idempotently, keyed by its source's id, and
creates its contact if new (with a ``contact.created`` event ahead of it, so entering the
first stage starts workflows on the same path). Nothing is written when validation fails.
Processing happens later, in a job (pipeline.py, pipeline_jobs.py). An event's attributes are
merged into its contact here; what that replaced is kept with the event
(``attributes_before``, engine/attribute_changes.py) so the pipeline can tell what held
before it. ``record_contact_updated`` records a change made without an event (the contacts
API, an import) as a ``contact.updated`` event of the engine's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from engine.attribute_changes import changed_keys
from engine.contacts import (
    find_or_insert_contact_id,
    normalize_email,
    validate_event_type,
    validate_properties,
    validate_timezone,
)
from engine.db import insert_new
from engine.event_input import refuse_nul
from engine.models import Event, EventStatus
from engine.registry import Registry

EVENT_LEASE = timedelta(minutes=5)
INTERNAL_SOURCE = "journeyline"
CONTACT_CREATED = "contact.created"
CONTACT_UPDATED = "contact.updated"


@dataclass(frozen=True)
class Recorded:
    event_id: int
    contact_id: int
    duplicate: bool


def record_event(
    session: Session,
    registry: Registry,
    *,
    now: datetime,
    email: str,
    event_type: str,
    properties: Mapping[str, Any] | None = None,
    source: str = "api",
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    attributes: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> Recorded:
    """Validate and store one event (creating its contact if new). Nothing is written when
    validation fails; a repeated ``idempotency_key`` from the same source returns the first.
    Text holding U+0000 is refused on every database (PostgreSQL cannot store it)."""
    refuse_nul(
        {"idempotency_key": idempotency_key, "properties": properties, "attributes": attributes}
    )
    email = normalize_email(email)
    event_type = validate_event_type(event_type)
    properties = validate_properties(properties)
    attributes = validate_properties(attributes, field="attributes")
    if timezone is not None:
        validate_timezone(timezone)
    if idempotency_key:
        key = f"{source}:{idempotency_key}"
        existing = _event_with_key(session, key)
        if existing is not None:
            return existing
    else:
        key = f"{source}:auto:{uuid.uuid4()}"  # new by construction: nothing to look up
    contact_id, created, attributes_before = find_or_insert_contact_id(
        session,
        email=email,
        journey=registry.journey,
        now=now,
        timezone=timezone,
        attributes=attributes,
    )
    events: Any = Event.__table__  # type: ignore[attr-defined]
    row = {
        "contact_id": contact_id,
        "properties": {},
        "status": EventStatus.PENDING.value,
        "error": None,
        "occurred_at": occurred_at or now,
        "received_at": now,
        "lease_until": now + EVENT_LEASE,
        "processed_at": None,
    }
    if created:
        # Entering the first stage is an event like any other, so workflows for it start
        # on the same path, in order, before the event that created the contact.
        session.execute(
            events.insert().values(
                **row,
                type=CONTACT_CREATED,
                source=INTERNAL_SOURCE,
                idempotency_key=f"{INTERNAL_SOURCE}:created:{contact_id}",
            )
        )
    event_id = insert_new(
        session,
        events,
        {
            **row,
            "type": event_type,
            "properties": properties,
            "source": source,
            "idempotency_key": key,
            "attributes_before": attributes_before,
        },
        unique=("idempotency_key",),
    )
    if event_id is None:
        # The same key raced in from another request: the first one stands.
        existing = _event_with_key(session, key)
        assert existing is not None, f"event {key} conflicted but cannot be found"
        return existing
    return Recorded(event_id, contact_id, duplicate=False)


def record_contact_updated(
    session: Session,
    *,
    now: datetime,
    contact_id: int,
    attributes: Mapping[str, Any],
    attributes_before: Mapping[str, Any],
) -> int:
    """Record that the contact's attributes were changed without an event (the contacts API,
    an import): a pending ``contact.updated`` event of the engine's own, its properties the
    values set (``on_event("contact.updated", plan="pro")`` matches them) and its
    ``attributes_before`` what they replaced, so the pipeline evaluates the conditions on
    them as for a tracked event. The caller has merged them and enqueues the contact."""
    events: Any = Event.__table__  # type: ignore[attr-defined]
    changed = {k: attributes[k] for k in changed_keys(attributes_before) if k in attributes}
    event_id = insert_new(
        session,
        events,
        {
            "contact_id": contact_id,
            "type": CONTACT_UPDATED,
            "properties": changed,
            "source": INTERNAL_SOURCE,
            "idempotency_key": f"{INTERNAL_SOURCE}:updated:{uuid.uuid4()}",
            "status": EventStatus.PENDING.value,
            "error": None,
            "occurred_at": now,
            "received_at": now,
            "lease_until": now + EVENT_LEASE,
            "processed_at": None,
            "attributes_before": dict(attributes_before),
        },
        unique=("idempotency_key",),
    )
    assert event_id is not None, "a new key cannot be taken"
    return event_id


def _event_with_key(session: Session, key: str) -> Recorded | None:
    found = session.exec(
        select(Event.id, Event.contact_id).where(Event.idempotency_key == key)
    ).first()
    if found is None:
        return None
    return Recorded(found[0], found[1], duplicate=True)  # type: ignore[arg-type]
