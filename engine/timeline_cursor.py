"""Where a page of a contact's timeline ends: an opaque cursor naming the oldest entry shown.

A page holds the newest entries older than a cursor. The cursor is the whole place of that
entry in the timeline's order (engine/timeline_order.py): its instant, its ``order`` and
its kind's rank (``Entry.page_key``), so the next page goes on inside a same-instant group
cut in two, without gap or overlap. It is URL-safe base64 of a small JSON list; callers
pass it back unchanged, and one that does not decode is a ``ValidationError`` naming
``before``.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from engine.errors import ValidationError

PageKey = tuple[datetime | int, ...]
"""An entry's place: (its instant, its ``order``..., its kind's rank)."""

# An entry's ``order`` has 3 to 6 numbers (engine/timeline.py), then its kind's rank.
_LEAST, _MOST = 5, 8


def encode(key: PageKey) -> str:
    at, *rest = key
    assert isinstance(at, datetime)
    text = json.dumps([at.astimezone(UTC).isoformat(), *rest], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str) -> PageKey:
    """The place ``cursor`` names; ``ValidationError`` (field ``before``) if it names none."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        if not isinstance(value, list) or not _LEAST <= len(value) <= _MOST:
            raise ValueError("not a timeline position")
        at = datetime.fromisoformat(value[0])
        if at.tzinfo is None:
            raise ValueError("no time zone")
        rest = value[1:]
        if not all(type(n) is int for n in rest):
            raise ValueError("not a timeline position")
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValidationError(
            "before is not a cursor this timeline gave (pass back 'next_before' unchanged)",
            field="before",
        ) from exc
    return (at.astimezone(UTC), *rest)
