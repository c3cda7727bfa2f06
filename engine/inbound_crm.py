"""CRM webhooks in: HubSpot contact events become events on our contacts.

``record_hubspot_events`` takes the parsed JSON array of a HubSpot webhook POST (signature
already checked by the HTTP layer), and per event:

- ``contact.propertyChange`` on ``email`` links the HubSpot object to our contact (creating
  it if new) by storing ``external_ids["hubspot"]`` and ``hubspot_id`` (indexed: every event
  finds its contact by it), taking the link from the contact of the object's previous
  address (an email changed in HubSpot), unless a later email change of the object is
  already recorded;
- ``contact.propertyChange`` on ``lifecyclestage`` records a ``crm.lifecycle_changed`` event
  whose processing moves the contact *forward* through the stage machine to the mapped stage,
  firing each trigger on the way (guards included). HubSpot delivers out of order and twice:
  duplicates are dropped by key, and a late, older stage finds no forward path and changes
  nothing, so newer state is never undone;
- ``contact.deletion`` / ``contact.privacyDeletion`` erase the contact and everything about it;
  a privacy deletion (her GDPR request) also keeps her address's digest, so the address
  coming back starts unsubscribed (``engine/erasure.py``); a plain deletion is a tidy-up;
- ``contact.creation`` carries no email, so it waits for the ``email`` property change.

An ``occurredAt`` that is not a plausible time (before 2000, more than a day ahead of our
clock) is not refused, since HubSpot retries a refused batch for a day and then drops it, good
events and all: the event is kept at the time it was received, with the reported value in
``reported_occurred_at``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from connectors.webhooks.dedupe import hubspot_event_key
from engine.contacts import normalize_email
from engine.db import transaction
from engine.db_errors import contact_went_missing
from engine.erasure import erase_contact, erased_since, object_erased_at, remember_erased_object
from engine.erasure_files import outbox_files, outboxes_of, remove_after_commit
from engine.errors import ValidationError
from engine.event_input import occurred_at_problem
from engine.inbound import InboundResult
from engine.models import Contact, Event
from engine.recording import record_event
from engine.registry import Registry

log = logging.getLogger(__name__)

LIFECYCLE_CHANGED = "crm.lifecycle_changed"

# HubSpot's default lifecyclestage values, read as the furthest stage of ours they imply.
HUBSPOT_TO_STAGE: dict[str, str] = {
    "subscriber": "awareness",
    "lead": "awareness",
    "marketingqualifiedlead": "consideration",
    "salesqualifiedlead": "decision",
    "opportunity": "decision",
    "customer": "onboarding",
    "evangelist": "advocacy",
}


def record_hubspot_events(
    runtime: Any,
    events: Sequence[Any],
    positions: Sequence[int] | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
) -> InboundResult:
    """Record a batch, each event in its own transaction; ``positions`` are the events'
    places in the delivered batch, which rejections name (by default their places here)."""
    result = InboundResult()
    for index, raw in zip(positions or range(len(events)), events, strict=True):
        try:
            _one(runtime, raw, result, mapping or HUBSPOT_TO_STAGE)
        except ValidationError as exc:
            result.rejected.append(f"index {index}: {exc}")
            log.warning("HubSpot event %s rejected: %s", index, exc)
        except IntegrityError as exc:
            if not contact_went_missing(exc):
                raise
            # Erased while this event was being recorded: as for an object we have not linked
            result.unknown_contacts += 1
            log.info("HubSpot event %s: its contact was erased meanwhile; not recorded", index)
    runtime.enqueue_or_leave(sorted(result.contacts), what="HubSpot events")
    return result


def _one(runtime: Any, raw: Any, result: InboundResult, mapping: Mapping[str, str]) -> None:
    if not isinstance(raw, Mapping):
        raise ValidationError("an event must be a JSON object", field="event")
    key = hubspot_event_key(raw)
    kind = str(raw["subscriptionType"])
    object_id = str(raw["objectId"])
    now = runtime.clock.now()
    occurred = _millis(raw.get("occurredAt"), now)
    reported: dict[str, Any] = {}
    if occurred is None:
        # Unreadable, or before 2000 or more than a day ahead. Refusing it would only have
        # HubSpot resend the same value for a day, then drop the batch: the event is kept at
        # the time we received it, the value it gave beside.
        log.warning(
            "HubSpot %s for object %s: occurredAt %r is not a plausible time; kept as of now",
            kind,
            object_id,
            raw.get("occurredAt"),
        )
        occurred, reported = now, {"reported_occurred_at": raw.get("occurredAt")}
    with transaction(runtime.db) as session:
        _one_object_at_a_time(session, object_id)
        contact = _by_hubspot_id(session, object_id)
        if kind == "contact.propertyChange" and raw.get("propertyName") == "email":
            # Recorded through the one event path, so a new contact enters its first stage.
            email = normalize_email(str(raw.get("propertyValue", "")))
            if _from_before_her_erasure(session, email, object_id, occurred):
                # Redelivered (its dedupe key went with her): it would bring her back.
                log.info("HubSpot email change for object %s from before an erasure", object_id)
                result.duplicates += 1
                return
            recorded = record_event(
                session,
                runtime.registry,
                now=now,
                email=email,
                event_type="crm.contact_changed",
                source="hubspot",
                idempotency_key=key,
                occurred_at=occurred,
                properties={
                    "object_id": object_id,
                    "subscription": kind,
                    "property": "email",
                    "value": email,
                    **reported,
                },
            )
            if recorded.duplicate:
                result.duplicates += 1
                return
            linked = session.get(Contact, recorded.contact_id)
            assert linked is not None
            if linked.external_ids.get("hubspot") != object_id:
                moved = _link(session, linked, contact, object_id, occurred)
                if moved and contact is not None:
                    _carry_over(session, runtime, contact, linked, object_id, occurred, now)
            result.recorded += 1
            result.contacts.add(recorded.contact_id)
            return
        if kind == "contact.privacyDeletion":  # her request: remembered as not to write to
            # The object too: its email changes made before, delivered after, are hers.
            remember_erased_object(session, "hubspot", object_id, now=now)
            holders = _holders(session, object_id, contact)
            if not holders:
                result.unknown_contacts += 1
                return
            outboxes = outboxes_of(runtime)
            for holder in holders:
                remove_after_commit(session, outbox_files(session, holder, outboxes))
                erase_contact(session, holder, now=now)
            result.recorded += 1
            return
        if contact is None:
            result.unknown_contacts += 1
            log.info(
                "HubSpot %s for object %s we have not linked (no email seen yet)", kind, object_id
            )
            return
        if kind == "contact.deletion":  # a tidy-up in the CRM, not a request of hers
            session.delete(contact)
            result.recorded += 1
            return
        properties: dict[str, Any] = {"object_id": object_id, "subscription": kind, **reported}
        event_type = "crm.contact_changed"
        if kind == "contact.propertyChange":
            properties["property"] = raw.get("propertyName")
            properties["value"] = raw.get("propertyValue")
            if raw.get("propertyName") == "lifecyclestage":
                event_type = LIFECYCLE_CHANGED
                properties["stage"] = mapping.get(str(raw.get("propertyValue", "")).lower())
        recorded = record_event(
            session,
            runtime.registry,
            now=now,
            email=contact.email,
            event_type=event_type,
            properties=properties,
            source="hubspot",
            idempotency_key=key,
            occurred_at=occurred,
        )
        if recorded.duplicate:
            result.duplicates += 1
            return
        result.recorded += 1
        result.contacts.add(contact.id)  # type: ignore[arg-type]


def _one_object_at_a_time(session: Session, object_id: str) -> None:
    """Wait until no other transaction is recording an event of the object (until its
    commit). HubSpot delivers an object's events concurrently: on PostgreSQL each read the
    object's contact before the other committed, so a lifecycle change recorded during an
    email change landed on the old address after the carry-over had looked, and two email
    changes left both new addresses linked. (SQLite has one writer at a time already.)"""
    if session.get_bind().dialect.name != "postgresql":
        return
    named = hashlib.sha256(f"journeyline hubspot object {object_id}".encode()).digest()
    key = int.from_bytes(named[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _email_changes_of(object_id: str) -> tuple[Any, ...]:
    """The conditions on ``events`` of the HubSpot object's email changes as recorded."""
    return (
        Event.source == "hubspot",
        Event.type == "crm.contact_changed",
        col(Event.properties)["object_id"].as_string() == object_id,
        col(Event.properties)["property"].as_string() == "email",
    )


def _holders(session: Session, object_id: str, linked: Contact | None) -> list[Contact]:
    """Every contact of ours a HubSpot object has named: the one linked to it now, and each
    address it had before (an email change moves the link, and leaves the old contact),
    unless another HubSpot object has that address now (handed on, merged): hers no more."""
    earlier = select(Event.contact_id).where(*_email_changes_of(object_id))
    named = session.exec(
        select(Contact).where(
            col(Contact.id).in_(earlier),
            or_(col(Contact.hubspot_id).is_(None), Contact.hubspot_id == object_id),
        )
    )
    found = {c.id: c for c in named}
    if linked is not None:
        found[linked.id] = linked
    return [found[key] for key in sorted(found)]  # type: ignore[type-var]


def _from_before_her_erasure(
    session: Session, email: str, object_id: str, occurred: datetime
) -> bool:
    """Whether the email change happened before (or when) its HubSpot object was deleted on
    her request (an address of hers the erasure may not have known), or ``email`` is an
    erased contact's, not back yet, and the change happened before she was erased."""
    deleted = object_erased_at(session, "hubspot", object_id)
    if deleted is not None and occurred <= deleted:
        return True
    if not erased_since(session, email, occurred):
        return False
    return session.exec(select(Contact.id).where(Contact.email == email)).first() is None


def _link(
    session: Session,
    contact: Contact,
    holder: Contact | None,
    object_id: str,
    occurred: datetime,
) -> bool:
    """Link ``contact`` to the HubSpot object, taking the link from ``holder``, who held it
    (as found by ``_by_hubspot_id``: not looked for again): an email changed in HubSpot is
    the same object under a new address, and its later events (a lifecycle stage) are about
    the contact of the new address. Unless the holder was linked by a later email change:
    HubSpot delivers out of order, and a late old address must not take the link back.
    Whether the link moved to ``contact``."""
    holders = [holder] if holder is not None and holder.id != contact.id else []
    if any(_linked_later(session, holder, object_id, occurred) for holder in holders):
        return False
    for holder in holders:
        holder.external_ids = {k: v for k, v in holder.external_ids.items() if k != "hubspot"}
        holder.hubspot_id = None
        session.add(holder)
    contact.external_ids = {**contact.external_ids, "hubspot": object_id}
    contact.hubspot_id = object_id  # the indexed copy every event looks the contact up by
    session.add(contact)
    return True


def _carry_over(
    session: Session,
    runtime: Any,
    holder: Contact,
    contact: Contact,
    object_id: str,
    occurred: datetime,
    now: datetime,
) -> None:
    """Record again for ``contact`` the object's lifecycle changes that came, out of order,
    before the email change of ``occurred`` that moves the link to her, though HubSpot made
    them after it: they were recorded for ``holder``, the old address, and are hers. (What
    they did to the old address's contact stays done: the stage machine only moves on.)"""
    later = session.exec(
        select(Event).where(
            Event.contact_id == holder.id,
            Event.source == "hubspot",
            Event.type == LIFECYCLE_CHANGED,
            col(Event.occurred_at) > occurred,
            col(Event.properties)["object_id"].as_string() == object_id,
        )
    ).all()
    for event in later:
        record_event(
            session,
            runtime.registry,
            now=now,
            email=contact.email,
            event_type=LIFECYCLE_CHANGED,
            properties={**event.properties, "carried_over_from_event": event.id},
            source="hubspot",
            idempotency_key=f"{event.idempotency_key}:to:{contact.id}",
            occurred_at=event.occurred_at,
        )
        log.info(
            "HubSpot object %s: lifecycle change of event %s carried over to contact %s",
            object_id,
            event.id,
            contact.id,
        )


def _linked_later(session: Session, holder: Contact, object_id: str, occurred: datetime) -> bool:
    """Whether ``holder`` got the object's address by an email change after ``occurred``."""
    later = session.exec(
        select(Event.id)
        .where(
            Event.contact_id == holder.id,
            col(Event.occurred_at) > occurred,
            *_email_changes_of(object_id),
        )
        .limit(1)
    ).first()
    return later is not None


def _by_hubspot_id(session: Session, object_id: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.hubspot_id == object_id)).first()


def _millis(value: Any, now: datetime) -> datetime | None:
    """``value`` (milliseconds since the epoch) as a time, or None if it is not a plausible
    one (``engine.event_input.occurred_at_problem``)."""
    try:
        when = datetime.fromtimestamp(int(value) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return None if occurred_at_problem(when, now=now) else when


def forward_path(registry: Registry, stage: str, target: str) -> list[str] | None:
    """The shortest list of triggers that moves ``stage`` to ``target`` going forward only;
    [] if already there; None if ``target`` is behind or unreachable."""
    if stage == target:
        return []
    journey = registry.journey
    order = journey.order
    seen = {stage}
    queue: deque[tuple[str, list[str]]] = deque([(stage, [])])
    while queue:
        here, path = queue.popleft()
        for transition in journey.transitions:
            if here in transition.sources and not transition.backward:
                there = transition.dest
                if there in seen or order(there) > order(target):
                    continue
                if there == target:
                    return [*path, transition.trigger]
                seen.add(there)
                queue.append((there, [*path, transition.trigger]))
    return None
