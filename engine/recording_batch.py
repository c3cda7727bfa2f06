"""Recording a batch of events in a few statements, for the track API and the simulator.

``recording.record_event`` costs several round trips per event (look the key up, find or
create the contact, insert the events); for a batch of 100 that dominated a request.
``record_batch`` does what it does, item by item in order, with one statement per step for
the whole batch: look up the keys, load the contacts, insert the new contacts, insert their
``contact.created`` events, insert the events (``batch_writer`` holds the statements of each
database). Conflicts with concurrent writers (the same address or key arriving at once) are
resolved by the unique constraints, as there. Each event keeps what merging its attributes
replaced (``attributes_before``), item by item in order as there (two events of one contact
in a batch each keep their own), at no statement of its own: it is a column of the insert.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy.orm import object_session
from sqlmodel import Session

from engine import batch_writer, recording
from engine.attribute_changes import change_of
from engine.contacts import (
    merged_attributes,
    normalize_email,
    validate_event_type,
    validate_properties,
)
from engine.erasure import returning
from engine.event_input import NUL, refuse_nul
from engine.models import Contact, EventStatus, SubscriptionStatus
from engine.registry import Registry


class EventInput(Protocol):
    """One event to record: the track API's ``EventIn`` and the simulator's events."""

    @property
    def email(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def properties(self) -> Mapping[str, Any] | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime | None: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def timezone(self) -> str | None: ...


normalized_email = lru_cache(maxsize=8192)(normalize_email)
"""``normalize_email`` remembered: the API checks a batch before recording it, and both need
each address, which ``email_validator`` takes ~0.1 ms to parse (a failure is not cached).
8,192 addresses (about 2 MB) hold a simulator shard's 5,000 contacts, and stay a bounded
share of a worker's memory whatever the number of contacts."""

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
    attributes_before: dict[str, Any] | None = None  # what merging its attributes replaced


def record_batch(
    session: Session,
    registry: Registry,
    items: Sequence[EventInput],
    *,
    now: datetime,
    source: str,
) -> list[recording.Recorded]:
    """``recording.record_event`` for each item, in order, in a few statements in all."""
    writer = batch_writer.writer_for(session)
    if writer is None:
        raise ValueError(f"no bulk writer for {session.get_bind().dialect.name}")
    batch = [_prepare(item, source) for item in items]
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
        if any(item.attributes_before for item in fresh):
            # A column of its own only then: most batches (new contacts, unchanged ones)
            # keep the statement they had, and NULL is its default.
            for row, item in zip(rows, fresh, strict=True):
                row["attributes_before"] = item.attributes_before
        new_ids = writer.insert_events(
            session, rows, {**common, "source": source}, skip_taken_keys=True
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
    writer: batch_writer.BatchWriter,
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
    ids: dict[str, int] = writer.find_contact_ids(session, emails)
    # Only contacts whose items bring attributes or a time zone are loaded as objects (to
    # merge those in); the others need nothing but their id.
    merging = sorted({i.email for i in fresh if i.email in ids and (i.attributes or i.timezone)})
    existing = {c.email: c for c in writer.find_contacts(session, merging)} if merging else {}
    # Those the items change are read again, locked: two requests merging attributes into
    # one contact at once would each write back what it read, and the first one's were lost
    # (as were a pipeline step's set_attribute committed meanwhile). The others stay unlocked:
    # an ingest request takes no row lock of its own unless it changes the contact.
    changing = [email for email in merging if _changes(existing[email], fresh)]
    if changing:
        existing.update((c.email, c) for c in writer.find_contacts(session, changing, lock=True))
    new_rows: dict[str, dict[str, Any]] = {}
    for item in fresh:
        if item.email in ids:
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
        erased = returning(session, new_rows, now=now)  # they asked to be forgotten
        if erased:
            # Per row, then, and in every row: a writer takes its columns from the first
            # row and the common values (PostgreSQL's one ``json_to_recordset`` insert).
            subscribed = common.pop("subscription_status")
            for email, row in new_rows.items():
                unsubscribed = SubscriptionStatus.UNSUBSCRIBED.value
                row["subscription_status"] = unsubscribed if email in erased else subscribed
        # In address order: two requests creating the same new contacts in opposite orders
        # each held one's unique-index entry and waited for the other's (a deadlock).
        rows = [new_rows[email] for email in sorted(new_rows)]
        inserted = writer.insert_contacts(session, rows, common)
        ids.update(inserted)
        created = set(inserted.values())
        raced = [email for email in new_rows if email not in inserted]
        if raced:  # created by a concurrent request meanwhile: merge into it instead
            for contact in writer.find_contacts(session, raced, lock=True):
                ids[contact.email] = contact.id  # type: ignore[assignment]
                for item in fresh:
                    if item.email == contact.email:
                        item.attributes_before = None  # as merged into theirs, below
                        _merge_into_contact(contact, item, now)
    return ids, created


def _changes(contact: Contact, items: list[_Item]) -> bool:
    """Whether any of ``items`` for ``contact``'s address would change her attributes or
    time zone as she is now."""
    for item in items:
        if item.email != contact.email:
            continue
        if item.attributes and change_of(contact.attributes, item.attributes) is not None:
            return True
        if item.timezone and item.timezone != contact.timezone:
            return True
    return False


def _merged(
    attributes: dict[str, Any], timezone: str, item: _Item
) -> tuple[dict[str, Any], str, bool]:
    """``contacts._merge`` on plain values; notes on ``item`` what its attributes replaced."""
    changed = False
    before = change_of(attributes, item.attributes)
    if before is not None:
        attributes, changed = merged_attributes(attributes, item.attributes), True
        item.attributes_before = before
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


def _prepare(item: EventInput, source: str) -> _Item:
    # U+0000 cannot be stored on PostgreSQL: the key is checked here, properties and
    # attributes by validate_properties below (from the JSON it writes anyway).
    if item.idempotency_key and NUL in item.idempotency_key:
        refuse_nul({"idempotency_key": item.idempotency_key})
    key = (
        f"{source}:{item.idempotency_key}"
        if item.idempotency_key
        else f"{source}:auto:{uuid.uuid4()}"
    )
    return _Item(
        email=normalized_email(item.email),
        key=key,
        properties=validate_properties(item.properties),
        attributes=validate_properties(item.attributes, field="attributes"),
        timezone=item.timezone,
        occurred_at=item.occurred_at,
        type=validate_event_type(item.type),
    )


def _stored_events(
    writer: batch_writer.BatchWriter, session: Session, keys: list[str]
) -> dict[str, recording.Recorded]:
    return {
        key: recording.Recorded(event_id, contact_id, duplicate=True)
        for key, event_id, contact_id in writer.find_events(session, keys)
    }
