"""What a JSON value from outside may hold to be stored and served back.

Python's JSON parser accepts two things that are not text or numbers any database or JSON
client can hold, and the doors events come in by must refuse them, naming the field, rather
than store them:

- a lone UTF-16 surrogate (``"\\ud800"``): UTF-8 cannot encode one. Depending on how the
  row is written it is a 500 at once (PostgreSQL) or stored as an escape, and then every
  later answer that shows it (the contact's timeline) fails to serialise: a 500 on that
  contact for good;
- ``NaN``, ``Infinity`` and ``-Infinity``: not JSON at all; PostgreSQL refuses them (a
  500), and on SQLite the API would show them as ``null``.

:func:`value_problems` walks the value without recursion (any depth the parser accepted is
fine) and names every fault by its path, as ``engine.event_input.nul_problems`` names NULs.
SendGrid's and HubSpot's events are a third party's words, kept rather than refused (as
their U+0000 is): :func:`without_unstorable` marks a surrogate with U+FFFD and turns NaN
or Infinity into null.
"""

from __future__ import annotations

import math
import re
from typing import Any

from engine.json_values import child_path, mapped

__all__ = [
    "NON_FINITE_MESSAGE",
    "REPLACEMENT",
    "SURROGATE_MESSAGE",
    "holds_unstorable",
    "value_problems",
    "without_unstorable",
]

SURROGATE_MESSAGE = (
    "contains a lone UTF-16 surrogate (such as \\ud800), which is not text: send the "
    "character it was meant to be, as a pair or in UTF-8"
)
NON_FINITE_MESSAGE = "is NaN or Infinity, which JSON cannot hold: send a number or null"
_KEY_MESSAGE = "this key " + SURROGATE_MESSAGE
REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")


def holds_unstorable(value: Any) -> bool:
    """Whether ``value`` holds a lone surrogate or a non-finite number anywhere: the check
    every event pays, so it builds no paths (``value_problems`` does, when one does)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and _SURROGATE.search(key):
                    return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def value_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """``(field path, message)`` for every lone surrogate (in a key or a string) and every
    non-finite number in ``value``, in document order."""
    if not holds_unstorable(value):
        return []
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any, bool]] = [(path, value, False)]  # (where, item, a bad key)
    while stack:
        where, item, bad_key = stack.pop()
        if bad_key:
            found.append((where, _KEY_MESSAGE))
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                found.append((where, SURROGATE_MESSAGE))
        elif isinstance(item, float):
            if not math.isfinite(item):
                found.append((where, NON_FINITE_MESSAGE))
        elif isinstance(item, dict):
            children: list[tuple[str, Any, bool]] = []
            for key, child in item.items():
                named = child_path(where, key)
                if isinstance(key, str) and _SURROGATE.search(key):
                    children.append((named, None, True))
                children.append((named, child, False))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(child_path(where, i), c, False) for i, c in enumerate(item)]))
    return found


def without_unstorable(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD (keys included) and every
    non-finite number by None: for the doors that must keep a third party's event rather
    than refuse it (a copy; the input is returned as it is when it holds none)."""
    if not holds_unstorable(value):
        return value
    return mapped(
        value,
        lambda text: _SURROGATE.sub(REPLACEMENT, text),
        lambda number: number if math.isfinite(number) else None,
    )
