"""Walking a parsed JSON value without recursion (any depth the parser accepted is fine):
the path of a child, for problems that name where they are, and a copy with its strings
(keys included) and numbers mapped, for the doors that mend a third party's value rather
than refuse it (engine/event_input.py: U+0000; engine/inbound_values.py: lone surrogates,
NaN and Infinity)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$@-]+$")


def child_path(path: str, key: Any) -> str:
    """``path.key``, ``path[3]``, or ``path["odd key"]`` (JSON-escaped: a NUL reads
    ``\\u0000``, a surrogate ``\\ud800``, and a dot stays part of the key)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if _PLAIN_KEY.match(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text)}]"


def mapped(
    value: Any, text: Callable[[str], str], number: Callable[[float], Any] | None = None
) -> Any:
    """A copy of ``value`` with ``text`` applied to every string and every key that is one,
    and ``number`` to every float (when given); a tuple comes back a list (as JSON holds
    it); anything else kept as it is."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, slot, item = stack.pop()
        if isinstance(item, str):
            parent[slot] = text(item)
        elif isinstance(item, float) and number is not None:
            parent[slot] = number(item)
        elif isinstance(item, dict):
            copy: dict[Any, Any] = {}
            parent[slot] = copy
            for key, child in item.items():
                clean = text(key) if isinstance(key, str) else key
                copy[clean] = None
                stack.append((copy, clean, child))
        elif isinstance(item, list | tuple):
            listed: list[Any] = list(item)
            parent[slot] = listed
            stack.extend((listed, index, child) for index, child in enumerate(item))
        else:
            parent[slot] = item
    return root[0]
