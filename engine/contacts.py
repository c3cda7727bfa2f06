"""Contact input validation, the find-or-create used by every ingest path, and the one way a
contact's consent changes (``set_subscription``), whatever asked for it: a SendGrid
unsubscribe event, an ``email.unsubscribed`` event from the track API, the contacts API,
the CLI or a one-click unsubscribe link."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from engine.attribute_changes import change_of, with_zone_change
from engine.db import insert_new
from engine.erasure import first_consent
from engine.errors import ValidationError
from engine.event_input import nul_problems
from engine.executor import exit_unsubscribed
from engine.models import Contact, SubscriptionStatus
from engine.stages import Journey

if TYPE_CHECKING:
    from engine.registry import Registry

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_PROPERTIES_BYTES = 64 * 1024
MAX_DEPTH = 32
"""Objects and arrays nested deeper than this are refused: nothing a workflow reads goes
that deep, and serialising one back (the contacts API's timeline) would fail."""


def normalize_email(value: str) -> str:
    """The address in canonical, lower-case form, or ``ValidationError`` saying why not."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("email is required", field="email")
    address = value.strip()
    plain = _plain_address(address)
    if plain is not None:
        return plain
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError(f"email {value!r} is not valid: {exc}", field="email") from exc
    local_bytes = len(result.local_part.encode())
    if local_bytes > MAX_LOCAL_PART:  # mail servers need not take it (RFC 5321 4.5.3.1.1)
        raise ValidationError(
            f"email {value!r} is not valid: the part before the @ is {local_bytes} bytes long "
            f"(at most {MAX_LOCAL_PART})",
            field="email",
        )
    return result.normalized.lower()


MAX_LOCAL_PART = 64


# Most addresses are plain ASCII: letters, digits and ``._+-`` before the @, host names
# after it. ``validate_email`` checks those too, but spends most of an ingest request's time
# doing it (its domain checks are written for internationalised names). Such an address is
# accepted here, lower-cased, exactly when ``validate_email`` would accept it and return the
# same text (``tests/test_contacts_email.py`` holds the two to that); anything else, and
# anything near a rule (a ``--`` in the domain, a special-use domain, a long local part),
# goes to ``validate_email``.
_PLAIN_ADDRESS = re.compile(
    r"(?P<local>[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def _plain_address(address: str) -> str | None:
    """``address`` lower-cased if it is a plain ASCII one ``validate_email`` would accept
    unchanged but for case; None to leave it to ``validate_email``."""
    if len(address) > 254 or not address.isascii():
        return None
    lowered = address.lower()
    match = _PLAIN_ADDRESS.fullmatch(lowered)
    if match is None or len(match["local"]) > 64:
        return None
    domain = match["domain"]
    if "--" in domain or any(
        domain == name or domain.endswith("." + name) for name in _SPECIAL_USE
    ):
        return None
    return lowered


_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
"""Files of the zone database that ``ZoneInfo`` opens but that name no place: the server's
own zone (another on every machine), a template, a placeholder."""


def validate_timezone(value: str) -> str:
    try:
        if value in _NOT_ZONES or value.startswith(("posix/", "right/")):
            # "right/..." counts leap seconds, which nothing else here does; "posix/..." is
            # a duplicate of the plain name: one zone, one name.
            raise ValueError(value)
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, AttributeError) as exc:
        raise ValidationError(
            f"time zone {value!r} is not an IANA time zone name (like 'Europe/Madrid')",
            field="timezone",
        ) from exc
    return value


def validate_stage(journey: Journey, value: str) -> str:
    if value not in journey.stage_names:
        raise ValidationError(
            f"stage {value!r} is unknown; known stages: {', '.join(journey.stage_names)}",
            field="stage",
        )
    return value


def validate_event_type(value: str) -> str:
    if not isinstance(value, str) or len(value) > 128 or not EVENT_TYPE.match(value):
        raise ValidationError(
            f"event type {value!r} must be dotted lower-case words, like 'trial.started'",
            field="type",
        )
    return value


def validate_properties(value: Mapping[str, Any] | None, *, field: str = "properties") -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field} must be an object", field=field)
    try:
        blob = json.dumps(dict(value))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field} must be JSON-serialisable: {exc}", field=field) from exc
    if len(blob) > MAX_PROPERTIES_BYTES:  # json.dumps writes ASCII: a character a byte
        raise ValidationError(f"{field} is larger than {MAX_PROPERTIES_BYTES} bytes", field=field)
    # json.dumps writes U+0000 as \u0000: only then walk for it, to name where it is.
    if "\\u0000" in blob:
        problems = nul_problems(value, field)
        if problems:
            path, message = problems[0]
            raise ValidationError(f"{path} {message}", field=path)
    deep_enough = len(blob) > 2 * MAX_DEPTH and blob.count("{") + blob.count("[") > MAX_DEPTH
    if deep_enough and _depth(value) > MAX_DEPTH:
        raise ValidationError(
            f"{field} is nested deeper than {MAX_DEPTH} levels of objects and arrays",
            field=field,
        )
    return dict(value)


def _depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` goes (iteratively: any depth)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


class FoundContact(NamedTuple):
    contact: Contact
    created: bool
    attributes_before: dict[str, Any] | None
    """What merging the given attributes and time zone into an existing contact replaced
    (``engine.attribute_changes``); None when new or unchanged."""


class FoundContactId(NamedTuple):
    id: int
    created: bool
    attributes_before: dict[str, Any] | None


def find_or_create_contact(
    session: Session,
    *,
    email: str,
    journey: Journey,
    now: datetime,
    timezone: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    stage: str | None = None,
) -> FoundContact:
    """The contact for ``email`` (already normalised), created at the initial stage if new.

    Given attributes are merged into an existing contact, under its row lock (PostgreSQL
    ``FOR NO KEY UPDATE``), so what they replaced is read as the pipeline left it; a concurrent
    create of the same address is resolved by the unique constraint, not by luck. A time
    zone changed counts as a change (``attribute_changes.ZONE``): the caller records it as
    a ``contact.updated`` event like an attribute's, so the pipeline moves the waits for a
    local time the old zone set.
    """
    found = select(Contact).where(Contact.email == email).with_for_update(key_share=True)
    contact = session.exec(found).first()
    if contact is None:
        consent = first_consent(session, email, now=now)
        candidate = _new_contact(email, journey, now, timezone, attributes, stage, consent)
        try:
            with session.begin_nested():
                session.add(candidate)
            return FoundContact(candidate, True, None)
        except IntegrityError:
            contact = session.exec(found).one()
    changed, before, zone_was = _merge(contact, now=now, timezone=timezone, attributes=attributes)
    if zone_was is not None:
        before = with_zone_change(before, zone_was, contact.timezone)
    if changed:
        session.add(contact)
    return FoundContact(contact, False, before)


def find_or_insert_contact_id(
    session: Session,
    *,
    email: str,
    journey: Journey,
    now: datetime,
    timezone: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> FoundContactId:
    """``find_or_create_contact`` for callers that need only the id (recording an event):
    a new contact is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` instead of a
    savepoint around an ORM insert. The contact is locked only when the event changes her
    attributes or time zone (an ingest request takes no row lock of its own unless it
    changes the contact): she is read again then, locked, and the change merged into what
    is committed now, or a concurrent request's attributes (or a pipeline step's) were lost."""
    contact = session.exec(select(Contact).where(Contact.email == email)).first()
    if contact is None:
        consent = first_consent(session, email, now=now)
        new = _new_contact(email, journey, now, timezone, attributes, consent=consent)
        row = new.model_dump(exclude={"id"})
        table: Any = Contact.__table__  # type: ignore[attr-defined]
        new_id = insert_new(session, table, row, unique=("email",))
        if new_id is not None:
            return FoundContactId(new_id, True, None)
        # Created by another writer a moment ago: theirs stands, ours merges into it.
        contact = session.exec(select(Contact).where(Contact.email == email)).one()
    # A time zone changed here is not kept with the event (nor by the batch path): the
    # event goes through the pipeline anyway, which compares zones (``follow_zone_changes``).
    if _would_change(contact, timezone=timezone, attributes=attributes):
        session.refresh(contact, with_for_update={"key_share": True})
    changed, before, _zone_was = _merge(contact, now=now, timezone=timezone, attributes=attributes)
    if changed:
        session.add(contact)
    return FoundContactId(contact.id, False, before)  # type: ignore[arg-type]


def _would_change(
    contact: Contact, *, timezone: str | None, attributes: Mapping[str, Any] | None
) -> bool:
    if attributes and change_of(contact.attributes, attributes) is not None:
        return True
    return bool(timezone) and timezone != contact.timezone


def _new_contact(
    email: str,
    journey: Journey,
    now: datetime,
    timezone: str | None,
    attributes: Mapping[str, Any] | None,
    stage: str | None = None,
    consent: SubscriptionStatus = SubscriptionStatus.SUBSCRIBED,
) -> Contact:
    return Contact(
        email=email,
        subscription_status=consent,
        timezone=timezone or "UTC",
        attributes=dict(attributes or {}),
        stage=stage or journey.initial,
        stage_entered_at=now,
        created_at=now,
        updated_at=now,
    )


def merged_attributes(stored: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` updated with ``given``; ``ValidationError`` when the result would be larger
    than ``MAX_PROPERTIES_BYTES``: each request is held to that size, and a contact's
    attributes, which every event, template and webhook of hers carries, to it too (many
    requests of new keys grew them without end)."""
    merged = {**stored, **given}
    size = len(json.dumps(merged))
    if size > MAX_PROPERTIES_BYTES:
        raise ValidationError(
            f"attributes: the contact's attributes would hold {size} bytes, more than "
            f"{MAX_PROPERTIES_BYTES}: remove some (an attribute set to null is kept as null; "
            "replace large values instead)",
            field="attributes",
        )
    return merged


def _merge(
    contact: Contact,
    *,
    now: datetime,
    timezone: str | None,
    attributes: Mapping[str, Any] | None,
) -> tuple[bool, dict[str, Any] | None, str | None]:
    """Merge given attributes and time zone into an existing contact: whether it changed,
    what the attributes replaced (``attribute_changes.change_of``; None: nothing), and the
    time zone it replaced (None: the same)."""
    before = change_of(contact.attributes, attributes)
    changed = before is not None
    if changed:
        contact.attributes = merged_attributes(contact.attributes, attributes)  # type: ignore[arg-type]
    zone_was = None
    if timezone and timezone != contact.timezone:
        zone_was, contact.timezone = contact.timezone, timezone
        changed = True
    if changed:
        contact.updated_at = now
        contact.version += 1
    return changed, before, zone_was


# --- consent ------------------------------------------------------------------------------

SUBSCRIPTION_EVENTS: Mapping[str, SubscriptionStatus] = MappingProxyType(
    {
        "email.unsubscribed": SubscriptionStatus.UNSUBSCRIBED,
        "email.group_unsubscribed": SubscriptionStatus.UNSUBSCRIBED,
        "email.group_resubscribed": SubscriptionStatus.SUBSCRIBED,
        "email.resubscribed": SubscriptionStatus.SUBSCRIBED,
        "email.spam_reported": SubscriptionStatus.UNSUBSCRIBED,  # a complaint: no more mail
    }
)
"""Event types that set a contact's consent, from whichever source records them."""

CONSENT_SET_WHEN_RECORDED = frozenset({"sendgrid", "journeyline"})
"""Sources whose consent events are applied as they are recorded, in the same transaction
(SendGrid's webhook: ``engine/inbound.py``; the engine's own record of an unsubscribe link,
an API or CLI request: ``engine/unsubscribe.py``). Applying them again when the pipeline
processes them could undo a later change made in between (a resubscribe); the others are
applied then (``engine/feedback.py``)."""


def set_subscription(
    session: Session,
    registry: Registry,
    contact: Contact,
    status: SubscriptionStatus,
    *,
    now: datetime,
) -> bool:
    """Set the contact's consent to ``status``; whether it changed. A contact who is not
    subscribed leaves every marketing workflow that exits on unsubscribe (``exit_unsubscribed``;
    receipts carry on), also when already unsubscribed: a repeat changes nothing else.
    Emails already written are not sent: consent is checked again at the moment of sending.
    The caller holds the contact's row lock (or is the pipeline, which does)."""
    changed = contact.subscription_status != status
    if changed:
        contact.subscription_status = status
        contact.version += 1
        contact.updated_at = now
        session.add(contact)
    if status != SubscriptionStatus.SUBSCRIBED:
        exit_unsubscribed(session, registry, contact, now=now)
    return changed
