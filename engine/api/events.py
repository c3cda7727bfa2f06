"""``POST /v1/events``: record one event, or a batch of up to ``MAX_BATCH`` all or nothing.

A batch is validated whole before anything is written: if any event is invalid the answer is
422 naming every bad field (``events[3].email``) and nothing is recorded. Valid events are
recorded in one transaction (each idempotently, by its ``idempotency_key``), and their
processing is enqueued after commit, as ``Runtime.track`` does for one. On PostgreSQL and
SQLite a batch is written in a few statements (``record_batch``), not several per event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from sqlalchemy.orm import object_session
from sqlmodel import Session

from engine import recording
from engine.api import bulk
from engine.api.auth import require
from engine.api.deps import RuntimeDep
from engine.api.errors import ERROR_RESPONSES, UNION_TAG_MARK, Invalid, Problem
from engine.contacts import (
    normalize_email,
    validate_event_type,
    validate_properties,
    validate_timezone,
)
from engine.db import transaction
from engine.errors import ValidationError
from engine.models import Contact, EventStatus, SubscriptionStatus
from engine.registry import Registry
from engine.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["events"])

MAX_BATCH = 500
"""Events per request; larger batches are refused whole (422)."""
SOURCE = "api"

EXAMPLE_EVENT: dict[str, Any] = {
    "email": "ana@example.com",
    "type": "trial.started",
    "properties": {"plan": "pro"},
    "idempotency_key": "trial-8812",
    "occurred_at": "2026-11-23T09:30:00Z",
    "attributes": {"first_name": "Ana"},
    "timezone": "Europe/Madrid",
}


class EventIn(BaseModel):
    """One event about one contact (created at the first stage if new)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_EVENT]})

    email: str = Field(max_length=320, description="The contact's email address.")
    type: str = Field(max_length=128, description="Dotted lower-case words: trial.started.")
    properties: dict[str, Any] | None = Field(
        default=None, description="What happened, as JSON (up to 64 KiB)."
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your id for this event: the same key twice is recorded once.",
    )
    occurred_at: datetime | None = Field(
        default=None, description="When it happened (ISO 8601; without an offset, UTC)."
    )
    attributes: dict[str, Any] | None = Field(
        default=None, description="Contact attributes to merge (first_name, plan...)."
    )
    timezone: str | None = Field(
        default=None, description="The contact's IANA time zone, like Europe/Madrid."
    )


class EventBatch(BaseModel):
    """Up to 500 events, recorded all or nothing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        EXAMPLE_EVENT,
                        {"email": "bo@example.com", "type": "page.viewed"},
                    ]
                }
            ]
        },
    )

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


def _shape(value: Any) -> str:
    if isinstance(value, dict) and "events" in value:
        return f"{UNION_TAG_MARK}batch"
    return f"{UNION_TAG_MARK}event"


EventsBody = Annotated[
    Annotated[EventIn, Tag(f"{UNION_TAG_MARK}event")]
    | Annotated[EventBatch, Tag(f"{UNION_TAG_MARK}batch")],
    Discriminator(_shape),
]


class RecordedEvent(BaseModel):
    event_id: int
    contact_id: int
    duplicate: bool = Field(description="True when this idempotency key was recorded before.")


class Accepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"events": [{"event_id": 42, "contact_id": 7, "duplicate": False}]}]
        }
    )

    events: list[RecordedEvent] = Field(description="One per event sent, in order.")


@router.post(
    "/events",
    status_code=202,
    summary="Record an event, or a batch of up to 500",
    response_description="Recorded; processing is queued.",
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require("events:write"))],
)
def post_events(runtime: RuntimeDep, body: Annotated[EventsBody, Body()]) -> Accepted:
    if isinstance(body, EventBatch):
        items, prefix = body.events, "events"
    else:
        items, prefix = [body], ""
    problems = [p for index, item in enumerate(items) for p in check(item, prefix, index)]
    if problems:
        raise Invalid(problems)
    return Accepted(events=record_all(runtime, items))


_normalized_email = lru_cache(maxsize=4 * MAX_BATCH)(normalize_email)
"""``normalize_email`` remembered: a batch is checked before it is recorded, and both need
each address, which ``email_validator`` takes ~0.1 ms to parse (a failure is not cached)."""


def check(item: EventIn, prefix: str, index: int) -> list[Problem]:
    """Every problem with one event, each naming its field (``events[3].email``)."""
    found: list[Problem] = []
    where = f"{prefix}[{index}]." if prefix else ""
    checks = [
        lambda: _normalized_email(item.email),
        lambda: validate_event_type(item.type),
        lambda: validate_properties(item.properties),
        lambda: validate_properties(item.attributes, field="attributes"),
    ]
    timezone = item.timezone
    if timezone is not None:
        checks.append(lambda: validate_timezone(timezone))
    for run in checks:
        try:
            run()
        except ValidationError as exc:
            found.append(Problem(field=f"{where}{exc.field}", message=str(exc)))
    return found


def record_all(runtime: Runtime, items: list[EventIn]) -> list[RecordedEvent]:
    """Record validated events in one transaction, then enqueue each new contact's work."""
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        if session.get_bind().dialect.name in BULK_DIALECTS:
            recorded = record_batch(session, runtime.registry, items, now=now)
        else:
            recorded = [record_one(session, runtime.registry, item, now=now) for item in items]
    runtime.enqueue_contacts(r.contact_id for r in recorded if not r.duplicate)
    return [
        RecordedEvent(event_id=r.event_id, contact_id=r.contact_id, duplicate=r.duplicate)
        for r in recorded
    ]


def record_one(
    session: Session, registry: Registry, item: EventIn, *, now: datetime
) -> recording.Recorded:
    return recording.record_event(
        session,
        registry,
        now=now,
        email=item.email,
        event_type=item.type,
        properties=item.properties,
        source=SOURCE,
        idempotency_key=item.idempotency_key,
        occurred_at=item.occurred_at,
        attributes=item.attributes,
        timezone=item.timezone,
    )


# --- a batch in a few statements ---------------------------------------------------------
#
# ``recording.record_event`` costs several round trips per event (look the key up, find or
# create the contact, insert the events); for a batch of 100 that dominated the request.
# ``record_batch`` does what it does, item by item in order, with one statement per step for
# the whole batch: look up the keys, load the contacts, insert the new contacts, insert their
# ``contact.created`` events, insert the events (``bulk`` holds the statements of each
# database). Conflicts with concurrent requests (the same address or key arriving at once)
# are resolved by the unique constraints, as there.

BULK_DIALECTS = frozenset({"postgresql", "sqlite"})


@dataclass
class _Item:
    email: str
    key: str
    properties: dict[str, Any]
    attributes: dict[str, Any]
    timezone: str | None
    occurred_at: datetime | None
    type: str
    same_as: int | None = None  # index of an earlier item of this batch with the same key


def record_batch(
    session: Session, registry: Registry, items: list[EventIn], *, now: datetime
) -> list[recording.Recorded]:
    """``recording.record_event`` for each item, in order, in a few statements in all."""
    writer = bulk.writer_for(session)
    if writer is None:
        raise ValueError(f"no bulk writer for {session.get_bind().dialect.name}")
    batch = [_prepare(item) for item in items]
    first_with_key: dict[str, int] = {}
    for index, item in enumerate(batch):
        item.same_as = first_with_key.setdefault(item.key, index)
        if item.same_as == index:
            item.same_as = None
    explicit = [i.key for i in batch if ":auto:" not in i.key]
    stored: dict[str, recording.Recorded] = {}
    if explicit:
        stored = _stored_events(writer, session, explicit)
    fresh = [i for i in batch if i.same_as is None and i.key not in stored]
    contacts, created = _contacts_for(session, registry, writer, fresh, now=now)
    common = {
        "status": EventStatus.PENDING.value,
        "error": None,
        "received_at": now,
        "lease_until": now + recording.EVENT_LEASE,
        "processed_at": None,
    }
    if created:
        # Each new contact's first stage is entered by an event ahead of the batch's own.
        first_event: dict[str, _Item] = {}
        for item in fresh:
            first_event.setdefault(item.email, item)
        writer.insert_events(
            session,
            [
                {
                    "contact_id": contact_id,
                    "idempotency_key": f"{recording.INTERNAL_SOURCE}:created:{contact_id}",
                    "occurred_at": first_event[email].occurred_at or now,
                }
                for email, contact_id in contacts.items()
                if contact_id in created
            ],
            {
                **common,
                "type": recording.CONTACT_CREATED,
                "properties": {},
                "source": recording.INTERNAL_SOURCE,
            },
            skip_taken_keys=False,
        )
    new_ids: dict[str, int] = {}
    if fresh:
        rows = [
            {
                "contact_id": contacts[item.email],
                "type": item.type,
                "properties": item.properties,
                "idempotency_key": item.key,
                "occurred_at": item.occurred_at or now,
            }
            for item in fresh
        ]
        new_ids = writer.insert_events(
            session, rows, {**common, "source": SOURCE}, skip_taken_keys=True
        )
        raced = [i.key for i in fresh if i.key not in new_ids]
        if raced:  # the same keys came in from another request meanwhile: the first stands
            stored.update(_stored_events(writer, session, raced))
    results: list[recording.Recorded] = []
    for item in batch:
        if item.same_as is not None:
            first = results[item.same_as]
            results.append(recording.Recorded(first.event_id, first.contact_id, duplicate=True))
        elif item.key in new_ids:
            contact_id = contacts[item.email]
            results.append(recording.Recorded(new_ids[item.key], contact_id, duplicate=False))
        else:
            results.append(stored[item.key])
    return results


def _contacts_for(
    session: Session,
    registry: Registry,
    writer: bulk.BatchWriter,
    fresh: list[_Item],
    *,
    now: datetime,
) -> tuple[dict[str, int], set[int]]:
    """The contact id of every address in ``fresh`` and which of them are new, as
    ``find_or_create_contact`` would make them item by item: a new contact takes the first
    item's time zone and attributes, and later items merge theirs in."""
    emails = list(dict.fromkeys(item.email for item in fresh))
    if not emails:
        return {}, set()
    existing = {c.email: c for c in writer.find_contacts(session, emails)}
    new_rows: dict[str, dict[str, Any]] = {}
    for item in fresh:
        if item.email in existing:
            _merge_into_contact(existing[item.email], item, now)
        elif item.email in new_rows:
            _merge_into_row(new_rows[item.email], item, now)
        else:
            new_rows[item.email] = {
                "email": item.email,
                "timezone": item.timezone or "UTC",
                "attributes": dict(item.attributes),
                "version": 1,
                "updated_at": now,
            }
    ids: dict[str, int] = {email: c.id for email, c in existing.items()}  # type: ignore[misc]
    created: set[int] = set()
    if new_rows:
        common = {
            "external_ids": {},
            "stage": registry.journey.initial,
            "score": 0,
            "subscription_status": SubscriptionStatus.SUBSCRIBED.value,
            "stage_entered_at": now,
            "created_at": now,
        }
        inserted = writer.insert_contacts(session, list(new_rows.values()), common)
        ids.update(inserted)
        created = set(inserted.values())
        raced = [email for email in new_rows if email not in inserted]
        if raced:  # created by a concurrent request meanwhile: merge into it instead
            for contact in writer.find_contacts(session, raced):
                ids[contact.email] = contact.id  # type: ignore[assignment]
                for item in fresh:
                    if item.email == contact.email:
                        _merge_into_contact(contact, item, now)
    return ids, created


def _merged(
    attributes: dict[str, Any], timezone: str, item: _Item
) -> tuple[dict[str, Any], str, bool]:
    changed = False
    if item.attributes:
        merged = {**attributes, **item.attributes}
        if merged != attributes:
            attributes, changed = merged, True
    if item.timezone and item.timezone != timezone:
        timezone, changed = item.timezone, True
    return attributes, timezone, changed


def _merge_into_contact(contact: Contact, item: _Item, now: datetime) -> None:
    attributes, timezone, changed = _merged(contact.attributes, contact.timezone, item)
    if changed:
        contact.attributes, contact.timezone = attributes, timezone
        contact.updated_at = now
        contact.version += 1
        session = object_session(contact)
        assert session is not None
        session.add(contact)


def _merge_into_row(row: dict[str, Any], item: _Item, now: datetime) -> None:
    row["attributes"], row["timezone"], changed = _merged(row["attributes"], row["timezone"], item)
    if changed:
        row["updated_at"] = now
        row["version"] += 1


def _prepare(item: EventIn) -> _Item:
    key = (
        f"{SOURCE}:{item.idempotency_key}"
        if item.idempotency_key
        else f"{SOURCE}:auto:{uuid.uuid4()}"
    )
    return _Item(
        email=_normalized_email(item.email),
        key=key,
        properties=validate_properties(item.properties),
        attributes=validate_properties(item.attributes, field="attributes"),
        timezone=item.timezone,
        occurred_at=item.occurred_at,
        type=validate_event_type(item.type),
    )


def _stored_events(
    writer: bulk.BatchWriter, session: Session, keys: list[str]
) -> dict[str, recording.Recorded]:
    return {
        key: recording.Recorded(event_id, contact_id, duplicate=True)
        for key, event_id, contact_id in writer.find_events(session, keys)
    }
