"""Attributes a workflow waits on must hold dates.

``wait_until_date("trial_ends_at", days_before=3)`` counts from an attribute. A value that
is not a date there (``20/01/2026``, ``Jan 20``) reads as no date at all, and a wait without
a date goes straight on: every trialist of a bad import would get "your trial ends in 3
days" at once. So the doors a person or a program writes attributes through (the track
API, ``PUT /v1/contacts``, ``journeyline track``, imports) refuse such a value for an
attribute the registry's date waits name, saying which forms are dates
(``engine.localtime.parse_instant``: ISO 8601, or a Unix time). Provider webhooks are not
refused (their events must not be lost): a wait that finds no date there says so in the
log and the contact's timeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import ValidationError
from engine.localtime import date_problem
from engine.registry import Registry


def date_attribute_problems(
    registry: Registry, attributes: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """(attribute, why) for each value of ``attributes`` a date wait needs a date in and
    that is not one."""
    if not attributes or not registry.date_attributes:
        return []
    found = []
    for name in registry.date_attributes.intersection(attributes):
        problem = date_problem(attributes[name])
        if problem is not None:
            found.append((name, f"{problem} (a wait_until_date step counts from it)"))
    return sorted(found)


def refuse_bad_dates(
    registry: Registry, attributes: Mapping[str, Any] | None, *, field: str = "attributes"
) -> None:
    """Raise ``ValidationError`` naming the first attribute whose value is not a date."""
    for name, why in date_attribute_problems(registry, attributes):
        raise ValidationError(f"attribute {name!r}: {why}", field=f"{field}.{name}")
