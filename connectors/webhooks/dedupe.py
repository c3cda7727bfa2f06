"""Dedupe keys for inbound webhook events.

Both SendGrid and HubSpot deliver at least once: SendGrid retries any non-2xx for up to
24 hours and HubSpot up to 10 times over 24 hours, so the same event arrives more than once.
A key is the same for every delivery of one event and differs between events; store it under
a unique index and skip events whose key is already there.

Keys are ``"<provider>:<kind>:<sha256 hex>"`` of a canonical JSON list of the identifying
fields: a fixed length that fits an indexed column, and no separator a field value could
forge (a click ``url`` may contain any character). Numbers and their string forms hash the
same (``1700000000`` and ``"1700000000"``), so a field that changes type does not split a key.
Fields that change between deliveries of one event (HubSpot's ``attemptNumber``) are left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from engine.errors import ValidationError

__all__ = ["hubspot_event_key", "sendgrid_event_key"]


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        # str(True) would be "True"; JSON spelling keeps it equal to a "true" string value.
        return "true" if value else "false"
    return str(value)


def _digest(parts: list[tuple[str, Any]]) -> str:
    payload = json.dumps(
        [[name, _canonical(value)] for name, value in parts],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _present(event: Mapping[str, Any], name: str) -> bool:
    value = event.get(name)
    return value is not None and value != ""


def sendgrid_event_key(event: Mapping[str, Any]) -> str:
    """The dedupe key of one SendGrid Event Webhook event.

    ``sg_event_id`` is SendGrid's own unique id for an event and is used when present. Events
    without it fall back to ``sg_message_id + event + timestamp``, plus ``url`` for clicks (two
    links clicked in the same second are two events). The fallback also exists because one
    report says a retried POST may carry a new ``sg_event_id``; a store worried about that can
    key on the fallback alone (see CONNECTOR-FACTS.md, SendGrid Event Webhook).

    Raises :class:`ValidationError` when the event has neither form of identity.
    """
    if _present(event, "sg_event_id"):
        return "sendgrid:id:" + _digest([("sg_event_id", event["sg_event_id"])])
    missing = [n for n in ("sg_message_id", "event", "timestamp") if not _present(event, n)]
    if missing:
        raise ValidationError(
            f"SendGrid event has no sg_event_id and no {', '.join(missing)}",
            field=missing[0],
        )
    parts = [
        ("sg_message_id", event["sg_message_id"]),
        ("event", event["event"]),
        ("timestamp", event["timestamp"]),
        ("url", event.get("url")),
    ]
    return "sendgrid:msg:" + _digest(parts)


def hubspot_event_key(event: Mapping[str, Any]) -> str:
    """The dedupe key of one HubSpot webhook event.

    HubSpot documents ``eventId`` as not guaranteed unique, so it cannot be the key alone. The
    key combines ``subscriptionType, objectId, propertyName, propertyValue, occurredAt,
    eventId`` (what happened, to which object, when) and ``portalId``, because one app serves
    many HubSpot accounts and object ids are only unique within one. ``attemptNumber`` is left
    out: it is the one field that differs between retries of the same event.

    Raises :class:`ValidationError` when ``subscriptionType``, ``objectId`` or ``occurredAt``
    is missing: without them two unrelated events could share a key.
    """
    missing = [n for n in ("subscriptionType", "objectId", "occurredAt") if not _present(event, n)]
    if missing:
        raise ValidationError(f"HubSpot event has no {', '.join(missing)}", field=missing[0])
    parts = [
        (name, event.get(name))
        for name in (
            "portalId",
            "subscriptionType",
            "objectId",
            "propertyName",
            "propertyValue",
            "occurredAt",
            "eventId",
        )
    ]
    return "hubspot:evt:" + _digest(parts)
