"""Turning workflow vocabulary into JSON-able specs and back.

Every trigger, step, condition and predicate is a frozen dataclass registered here under a
``kind`` name. ``to_spec`` gives a plain dict (stable, sorted, hashable into a version);
``from_spec`` rebuilds the objects, which is how an enrollment finishes on the version it
started with even after the Python definition changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

_KINDS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def vocabulary(kind: str) -> Any:
    """Class decorator: register a frozen dataclass under ``kind``."""

    def register(cls: T) -> T:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"vocabulary kind {kind!r} is registered twice")
        _KINDS[kind] = cls
        cls.kind = kind  # type: ignore[attr-defined]
        return cls

    return register


def to_spec(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = getattr(type(value), "kind", None)
        if kind is None:
            raise TypeError(f"{type(value).__name__} is not workflow vocabulary")
        out: dict[str, Any] = {"kind": kind}
        for f in dataclasses.fields(value):
            if not f.metadata.get("spec", True):
                continue
            field_value = getattr(value, f.name)
            # A field added later is left out while at its default, so that definitions
            # which do not use it keep their spec, and their version, unchanged.
            if f.metadata.get("omit_default") and field_value == f.default:
                continue
            out[f.name] = to_spec(field_value)
        return out
    if isinstance(value, timedelta):
        return {"kind": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, list | tuple):
        return [to_spec(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_spec(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(
        f"{value!r} cannot be part of a workflow definition: use the vocabulary's conditions "
        "and predicates (they are data), not functions or arbitrary objects"
    )


def from_spec(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(from_spec(v) for v in value)
    if isinstance(value, Mapping):
        kind = value.get("kind")
        if kind == "timedelta":
            return timedelta(seconds=value["seconds"])
        if isinstance(kind, str) and kind in _KINDS:
            cls = _KINDS[kind]
            args = {k: from_spec(v) for k, v in value.items() if k != "kind"}
            return cls(**args)
        return {k: from_spec(v) for k, v in value.items()}
    return value


def canonical_json(spec: Any) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))
