"""HubSpot's wire format for contacts: keys, property values and records.

HubSpot stores every property value as a string and addresses contacts by its own id or,
with ``idProperty=email``, by a lower-cased email. These helpers turn what callers give into
that form and HubSpot's answers back into :class:`~connectors.crm.base.CRMRecord` objects;
what they cannot express is a ``PermanentConnectorError`` (retrying cannot help).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from connectors.crm.base import CRMRecord, PropertyValue
from engine.errors import PermanentConnectorError

LIFECYCLE_PROPERTY = "lifecyclestage"


def normalise_email(value: str) -> str:
    address = (value or "").strip().lower()
    if "@" not in address or address.startswith("@") or address.endswith("@"):
        raise PermanentConnectorError(f"not an email address: {value!r}")
    return address


def batch_key(raw: str, id_property: str | None) -> str:
    """A batch input's key: a normalised email (``id_property="email"``) or a HubSpot id."""
    if id_property == "email":
        return normalise_email(raw)
    key = str(raw).strip()
    if not key:
        raise PermanentConnectorError("an empty HubSpot id")
    return key


def quote(value: str) -> str:
    """``value`` for a URL path segment (an email keeps its ``@``)."""
    return urllib.parse.quote(value, safe="@")


def properties(values: Mapping[str, PropertyValue]) -> dict[str, str]:
    return {str(name): property_value(name, value) for name, value in values.items()}


def property_value(name: str, value: PropertyValue) -> str:
    """HubSpot takes property values as strings: booleans as true/false, datetimes as epoch
    milliseconds, dates as YYYY-MM-DD, None as "" (which clears the property)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return epoch_ms(value, name=name)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def epoch_ms(moment: datetime, *, name: str = "hs_timestamp") -> str:
    if moment.tzinfo is None:
        raise PermanentConnectorError(f"{name}: a naive datetime is ambiguous; give a time zone")
    return str(int(moment.astimezone(UTC).timestamp() * 1000))


def record(result: Mapping[str, Any], address: str) -> CRMRecord:
    """A contact object HubSpot answered, as a :class:`CRMRecord` for ``address``."""
    created = result.get("new")
    return CRMRecord(
        id=str(result.get("id", "")),
        email=address,
        created=created if isinstance(created, bool) else None,
        properties=dict(result.get("properties") or {}),
    )


def describe_batch_errors(errors: Sequence[Any]) -> str:
    """The first few ``errors`` of a batch answer, for one message."""
    messages = [
        str(error.get("message") or error) if isinstance(error, dict) else str(error)
        for error in errors[:5]
    ]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(messages) + more
