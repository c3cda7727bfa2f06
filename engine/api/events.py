"""``POST /v1/events``: record one event, or a batch of up to ``MAX_BATCH`` all or nothing.

An ``idempotency_key`` already stored is a duplicate, recorded once, when the event is the
same; a key reused for another event is refused, naming it (``reused_keys``).

A batch is validated whole before anything is written: if any event is invalid the answer is
422 naming every bad field (``events[3].email``) and nothing is recorded. Valid events are
recorded in one transaction (each idempotently, by its ``idempotency_key``), and their
processing is enqueued after commit, as ``Runtime.track`` does for one. On PostgreSQL and
SQLite a batch is written in a few statements (``record_batch``), not several per event.

Besides each field's own rules, an event is refused (422, the field named) when any string in
it, key or value, holds U+0000 (``events[3].properties.note``), or when its ``occurred_at`` is
before 2000-01-01 or more than a day after the server's clock (``engine.event_input``), or
when an attribute a ``wait_until_date`` step counts from is given a value that is not a date
(``engine.date_attributes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from engine import recording
from engine.api.auth import AuthenticatedRoute, require
from engine.api.deps import RuntimeDep
from engine.api.errors import ERROR_RESPONSES, UNION_TAG_MARK, VALUE_CHECKS, Invalid, Problem
from engine.clock import ensure_utc
from engine.contacts import (
    validate_event_type,
    validate_properties,
    validate_timezone,
)
from engine.date_attributes import date_attribute_problems
from engine.db import transaction
from engine.db_errors import contact_went_missing, lock_conflict
from engine.errors import ValidationError
from engine.event_input import NUL, NUL_MESSAGE, occurred_at_problem
from engine.inbound_values import value_problems
from engine.models import Contact, Event
from engine.recording_batch import BULK_DIALECTS, normalized_email, record_batch
from engine.registry import Registry
from engine.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["events"], route_class=AuthenticatedRoute)

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
        description="Your id for this event: the same key twice is recorded once (a "
        "duplicate); the same key with another email, type, properties or occurred_at is "
        "refused (422 naming it), as it would answer for an event never recorded.",
    )
    occurred_at: datetime | None = Field(
        default=None,
        description="When it happened (ISO 8601; without an offset, UTC; a date alone is "
        "its midnight UTC; a number is a Unix time, in milliseconds when above 2e10): from "
        "2000-01-01 up to a day after the server's clock.",
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
    now = runtime.clock.now()
    registry = runtime.registry
    problems = [
        p
        for index, item in enumerate(items)
        for p in check(item, prefix, index, now=now, registry=registry)
    ]
    if problems:
        raise Invalid(problems)
    return Accepted(events=record_all(runtime, items, prefix=prefix))


def _values_of_well_formed(request: Request, body: Any) -> list[Problem]:
    """``check`` for each event of a body FastAPI refused whose own structure is right:
    the values' problems named with the structure's, in one answer."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        raw, prefix = body["events"], "events"
    elif isinstance(body, dict):
        raw, prefix = [body], ""
    else:
        return []
    if len(raw) > MAX_BATCH:  # refused for its size: its events are not looked at
        return []
    runtime: Runtime = request.app.state.runtime
    now = runtime.clock.now()
    found: list[Problem] = []
    for index, event in enumerate(raw):
        try:
            item = EventIn.model_validate(event)
        except PydanticValidationError:
            continue  # its structure is named already
        found += check(item, prefix, index, now=now, registry=runtime.registry)
    return found


VALUE_CHECKS["/v1/events"] = _values_of_well_formed


def check(
    item: EventIn, prefix: str, index: int, *, now: datetime, registry: Registry | None = None
) -> list[Problem]:
    """Every problem with one event, each naming its field (``events[3].email``).

    A string holding U+0000 is refused wherever it is (PostgreSQL cannot store one; SQLite
    would, so refusing on both keeps the databases alike): in the plain fields here, inside
    properties and attributes by ``validate_properties`` (naming the first one's path). A
    plain field holding one is named for that alone. Inside properties and attributes, a
    lone UTF-16 surrogate and NaN or Infinity are refused too, every one named
    (``engine.inbound_values``; the model already refuses a surrogate in a plain field).
    An attribute a ``wait_until_date`` step counts from must hold a date
    (``engine.date_attributes``; with ``registry``). Every event of a batch pays this, so
    it builds nothing it does not need."""
    where = f"{prefix}[{index}]." if prefix else ""
    found: list[Problem] = []

    def run(name: str, value: str | None, validate: Callable[[], object] | None) -> None:
        if value is not None and NUL in value:
            found.append(Problem(field=f"{where}{name}", message=NUL_MESSAGE))
            return
        if validate is None:
            return
        try:
            validate()
        except ValidationError as exc:
            found.append(Problem(field=f"{where}{exc.field}", message=str(exc)))

    run("email", item.email, lambda: normalized_email(item.email))
    run("type", item.type, lambda: validate_event_type(item.type))
    run("idempotency_key", item.idempotency_key, None)
    timezone = item.timezone
    if timezone is not None:
        run("timezone", timezone, lambda: validate_timezone(timezone))
    run("properties", None, lambda: validate_properties(item.properties))
    run("attributes", None, lambda: validate_properties(item.attributes, field="attributes"))
    for name, values in (("properties", item.properties), ("attributes", item.attributes)):
        # Lone surrogates and NaN / Infinity: PostgreSQL refuses them (a 500), and SQLite
        # keeps them where the contact's timeline cannot show them (engine/inbound_values.py).
        found += [Problem(field=f"{where}{p}", message=m) for p, m in value_problems(values, name)]
    if registry is not None and item.attributes:
        for name, why in date_attribute_problems(registry, item.attributes):
            found.append(Problem(field=f"{where}attributes.{name}", message=why))
    if item.occurred_at is not None:
        late = occurred_at_problem(item.occurred_at, now=now)
        if late is not None:
            found.append(Problem(field=f"{where}occurred_at", message=late))
    return found


def record_all(
    runtime: Runtime, items: list[EventIn], *, prefix: str = "events"
) -> list[RecordedEvent]:
    """Record validated events in one transaction, then enqueue each new contact's work.

    A key already used for another event (``reused_keys``) refuses the whole request (422,
    each such key named), and nothing of it is written. A contact erased between the
    request's reading her id and writing her events (a foreign-key violation) is met by
    doing the request again: she is then a new contact, unsubscribed (``engine/erasure.py``)."""
    now = runtime.clock.now()
    for attempt in range(1, ERASED_MEANWHILE_ATTEMPTS + 1):
        try:
            with transaction(runtime.db) as session:
                if session.get_bind().dialect.name in BULK_DIALECTS:
                    recorded = record_batch(
                        session, runtime.registry, items, now=now, source=SOURCE
                    )
                else:
                    recorded = [
                        record_one(session, runtime.registry, item, now=now) for item in items
                    ]
                reused = reused_keys(session, items, recorded, prefix=prefix)
                if reused:
                    raise Invalid(reused)  # raised inside the transaction: it is rolled back
            break
        except IntegrityError as exc:
            if attempt == ERASED_MEANWHILE_ATTEMPTS or not contact_went_missing(exc):
                raise
            log.info("events: a contact was erased while they were recorded; recording again")
        except OperationalError as exc:
            # Two requests creating the same new contacts, or merging attributes into the
            # same ones, can deadlock; PostgreSQL rolls the victim back whole, and the
            # idempotency keys make running it again safe.
            if attempt == ERASED_MEANWHILE_ATTEMPTS or not lock_conflict(exc):
                raise
            log.info("events: a lock conflict with another request; recording again")
    runtime.enqueue_or_leave((r.contact_id for r in recorded if not r.duplicate), what="events")
    return [
        RecordedEvent(event_id=r.event_id, contact_id=r.contact_id, duplicate=r.duplicate)
        for r in recorded
    ]


ERASED_MEANWHILE_ATTEMPTS = 3


REUSED_KEY_MESSAGE = (
    "idempotency key {key!r} was already used for another event (this one differs in "
    "{fields}): a retry must repeat the event unchanged; a new event needs a new key"
)


def reused_keys(
    session: Session,
    items: Sequence[EventIn],
    recorded: Sequence[recording.Recorded],
    *,
    prefix: str,
) -> list[Problem]:
    """A problem naming ``idempotency_key`` for each duplicate whose event is not the one
    stored under its key (another address, type, properties or, when the request gives one,
    time): a key reused by mistake would otherwise answer 202 for an event never recorded.
    Attributes and time zone are merged into the contact, not kept with the event, so they
    are not compared. Costs one read, only when a request holds duplicates."""
    duplicates = [(i, r.event_id) for i, r in enumerate(recorded) if r.duplicate]
    if not duplicates:
        return []
    ids = {event_id for _, event_id in duplicates}
    rows = session.execute(
        sa_select(
            col(Event.id),
            col(Contact.email),
            col(Event.type),
            col(Event.properties),
            col(Event.occurred_at),
        )
        .join(Contact, col(Contact.id) == col(Event.contact_id))
        .where(col(Event.id).in_(ids))
    ).all()
    stored = {row[0]: row[1:] for row in rows}
    found: list[Problem] = []
    for index, event_id in duplicates:
        item = items[index]
        if event_id not in stored:
            continue
        email, type_, properties, occurred_at = stored[event_id]
        differ = []
        if normalized_email(item.email) != email:
            differ.append("email")
        if item.type != type_:
            differ.append("type")
        if (item.properties or {}) != (properties or {}):
            differ.append("properties")
        if item.occurred_at is not None and ensure_utc(item.occurred_at) != occurred_at:
            differ.append("occurred_at")
        if differ:
            where = f"{prefix}[{index}]." if prefix else ""
            message = REUSED_KEY_MESSAGE.format(key=item.idempotency_key, fields=", ".join(differ))
            found.append(Problem(field=f"{where}idempotency_key", message=message))
    return found


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
