"""What text and times from outside may hold before they become an event.

Two limits, checked at every door an event comes in by (the track API, the webhooks,
``Runtime.track``; ``recording`` checks U+0000 again as the last line):

- PostgreSQL cannot store U+0000 (NUL) in a text or JSON column; SQLite can. Unchecked, the
  same event would be kept on one database and be a 500 on the other. :func:`nul_problems`
  names every string (a key or a value, at any depth) that holds one, so a door can refuse it
  naming the field; :func:`without_nul` replaces them with U+FFFD (the Unicode replacement
  character, a visible trace) for the doors that must not lose the event.
- An event's time must be plausible: not before :data:`EARLIEST_EVENT_TIME` and not more than
  :data:`MAX_FUTURE_SKEW` after the server's clock. A time in 2099 would sit at the end of
  every timeline and inside every ``within=`` window for decades; one in year 1 is a typo.
  :func:`occurred_at_problem` says why a time is refused.

Both walk JSON without recursion, so no nesting depth the JSON parser accepted can make
them fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.errors import ValidationError
from engine.json_values import child_path, mapped

__all__ = [
    "EARLIEST_EVENT_TIME",
    "MAX_FUTURE_SKEW",
    "NUL",
    "NUL_MESSAGE",
    "REPLACEMENT",
    "holds_nul",
    "nul_problems",
    "occurred_at_problem",
    "refuse_nul",
    "without_nul",
]

NUL = "\x00"
REPLACEMENT = "\ufffd"
NUL_MESSAGE = "contains a NUL character (U+0000), which text cannot hold; remove or escape it"
_KEY_MESSAGE = "this key " + NUL_MESSAGE

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Events said to have happened before this are refused: lifecycle data does not go back
further, and a fixed floor reads the same on every server and in every test."""
MAX_FUTURE_SKEW = timedelta(days=1)
"""How far ahead of the server's clock an event time may be: a sender's clock running
fast, or a time zone mistaken for UTC (at most 14 hours), not an event yet to happen."""


def holds_nul(value: Any) -> bool:
    """Whether any string in ``value`` (a key or a value, at any depth) holds U+0000: the
    check every event pays, so it builds no paths (``nul_problems`` does, when one does)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and NUL in key:
                    return True
                if not isinstance(child, int | float | bool) and child is not None:
                    stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def nul_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """``(field path, message)`` for every string in ``value`` holding U+0000, in document
    order: ``properties.note``, ``properties.items[2]``, ``properties["a\\u0000"]`` (a key)."""
    if not holds_nul(value):
        return []
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, _BadKey):
            found.append((where, _KEY_MESSAGE))
        elif isinstance(item, str):
            if NUL in item:
                found.append((where, NUL_MESSAGE))
        elif isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                named = child_path(where, key)
                if isinstance(key, str) and NUL in key:
                    children.append((named, _BadKey()))
                children.append((named, child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(child_path(where, i), c) for i, c in enumerate(item)]))
    return found


class _BadKey:
    """Stands, on the walk's stack, for a key holding U+0000 (reported in document order)."""


def refuse_nul(fields: Mapping[str, Any]) -> None:
    """Raise ``ValidationError`` naming the first string in ``fields`` (name -> value) that
    holds U+0000."""
    for name, value in fields.items():
        if not holds_nul(value):
            continue
        problems = nul_problems(value, name)
        if problems:
            path, message = problems[0]
            raise ValidationError(f"{path} {message}", field=path)


def without_nul(value: Any) -> Any:
    """``value`` with U+0000 replaced by U+FFFD in every string, keys included (a copy; the
    input is returned as it is when it holds none)."""
    if not holds_nul(value):
        return value
    return mapped(value, lambda text: text.replace(NUL, REPLACEMENT))


def occurred_at_problem(when: datetime, *, now: datetime) -> str | None:
    """Why ``when`` (naive means UTC) cannot be an event's time, or None if it can."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    # Comparisons only: converting year 1 or year 9999 with an offset to UTC overflows.
    if aware < EARLIEST_EVENT_TIME:
        return (
            f"{aware.isoformat()} is before {EARLIEST_EVENT_TIME.date().isoformat()}, "
            "the earliest event time accepted"
        )
    if aware > now + MAX_FUTURE_SKEW:
        return (
            f"{aware.isoformat()} is in the future: more than {MAX_FUTURE_SKEW.days} day "
            f"after the server's clock ({now.isoformat()})"
        )
    return None
