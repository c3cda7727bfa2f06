"""Generic inbound webhooks: any system that can sign a JSON POST becomes a source of events.

A source is declared in Python, beside the workflows (``workflows/inbound.py`` by default,
``JOURNEYLINE_INBOUND_SOURCES`` to choose another module), as a name and a list of
:class:`MapEvent` rules that say which payloads become which events::

    SOURCES = [
        WebhookSource(
            "pipedrive",
            maps=[
                MapEvent(
                    "deal.stage_changed",
                    when={"meta.entity": "deal", "meta.action": "change",
                          "previous.stage_id": PRESENT},
                    email="data.person_email",
                    properties={"deal_id": "data.id", "stage_id": "data.stage_id"},
                    key="meta.id",
                    occurred_at="meta.timestamp",
                )
            ],
        )
    ]

Paths are dotted keys into the JSON (``data.stage_id``), with integers for list positions
(``items.0.id``). ``when`` is checked on the whole payload: a payload no rule matches is
acknowledged and ignored (the sender must not retry it). ``each`` names a list whose items
each become one event; the other paths are then relative to the item. Its shared secret
comes from ``JOURNEYLINE_INBOUND_WEBHOOK_SECRETS``, never from code.

A payload that matches a rule but lacks what the rule needs (no email at the path, a
timestamp that does not parse or is implausible: before 2000, more than a day ahead of the
server's clock) or holds what cannot be stored (U+0000, a lone UTF-16 surrogate, NaN or
Infinity in a mapped property: ``engine.inbound_values``) is refused whole,
every problem named by its path, and nothing of it is recorded: the sender is the operator's
own system or relay, which can mend the payload and send it again. Matched events are
recorded in one transaction, each keyed by ``key`` (or, without one, by a hash of the item's
content), so a redelivery records nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.contacts import normalize_email, validate_event_type, validate_properties
from engine.db import transaction
from engine.errors import ValidationError, WorkflowDefinitionError
from engine.event_input import nul_problems, occurred_at_problem
from engine.inbound import InboundResult
from engine.inbound_values import value_problems
from engine.recording import record_event

__all__ = [
    "PRESENT",
    "MapEvent",
    "MappedEvent",
    "MappingProblems",
    "WebhookSource",
    "load_sources",
    "map_payload",
    "record_generic_events",
    "validate_sources",
]

RESERVED_NAMES = frozenset({"sendgrid", "hubspot"})
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_MILLIS_THRESHOLD = 100_000_000_000  # numbers above this are milliseconds (after 1973 in ms)


class _Present:
    def __repr__(self) -> str:
        return "PRESENT"


PRESENT: Any = _Present()
"""A ``when`` value that matches any value other than null or absent."""

_MISSING = object()


@dataclass(frozen=True)
class MapEvent:
    """One rule: payloads matching ``when`` become events of ``type``."""

    type: str
    email: str
    when: Mapping[str, Any] = field(default_factory=dict)
    each: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    key: str | Sequence[str] | None = None
    occurred_at: str | None = None

    @property
    def key_paths(self) -> tuple[str, ...]:
        if self.key is None:
            return ()
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)


@dataclass(frozen=True)
class WebhookSource:
    """A generic webhook source, served at ``POST /v1/webhooks/<name>``."""

    name: str
    maps: Sequence[MapEvent]
    description: str = ""


@dataclass(frozen=True)
class MappedEvent:
    email: str
    type: str
    properties: dict[str, Any]
    key: str
    occurred_at: datetime | None


class MappingProblems(ValidationError):
    """A payload matched a rule but cannot become events; ``problems`` lists
    ``(field path, message)`` for every fault."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        first_field, first_message = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first_field}: {first_message}{more}", field=first_field)


# --- declaring and loading -----------------------------------------------------------------


def validate_sources(sources: Sequence[WebhookSource]) -> dict[str, WebhookSource]:
    """The sources by name; raises ``WorkflowDefinitionError`` naming every problem."""
    problems: list[str] = []
    found: dict[str, WebhookSource] = {}
    for position, source in enumerate(sources):
        if not isinstance(source, WebhookSource):
            problems.append(f"SOURCES[{position}] is not a WebhookSource")
            continue
        where = f"webhook source {source.name!r}"
        if not isinstance(source.name, str) or not SOURCE_NAME.match(source.name):
            problems.append(f"{where}: the name must be lower-case letters, digits, - or _")
        elif source.name in RESERVED_NAMES:
            problems.append(f"{where}: the name is taken by the built-in endpoint")
        elif source.name in found:
            problems.append(f"{where}: declared twice")
        if not source.maps:
            problems.append(f"{where}: has no maps")
        for index, rule in enumerate(source.maps):
            problems += [f"{where} maps[{index}]: {p}" for p in _rule_problems(rule)]
        found[source.name] = source
    if problems:
        raise WorkflowDefinitionError(problems)
    return found


def _rule_problems(rule: Any) -> list[str]:
    if not isinstance(rule, MapEvent):
        return ["is not a MapEvent"]
    problems: list[str] = []
    try:
        validate_event_type(rule.type)
    except ValidationError as exc:
        problems.append(str(exc))
    paths = [rule.email, *rule.when, *rule.properties.values(), *rule.key_paths]
    paths += [p for p in (rule.each, rule.occurred_at) if p is not None]
    for path in paths:
        if not isinstance(path, str) or not path or any(not s for s in path.split(".")):
            problems.append(f"path {path!r} is not dotted keys like 'data.stage_id'")
    return problems


def load_sources(module_name: str | None, *, workflows: str) -> dict[str, WebhookSource]:
    """Import the module declaring ``SOURCES`` and validate them.

    ``module_name=None`` means ``<workflows>.inbound``, and that module may be absent (no
    generic sources). A module named explicitly must exist.
    """
    name = module_name or f"{workflows}.inbound"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if module_name is None and exc.name in (name, workflows):
            return {}
        raise
    sources = getattr(module, "SOURCES", None)
    if sources is None:
        raise WorkflowDefinitionError([f"module {name!r} defines no SOURCES list"])
    return validate_sources(list(sources))


# --- mapping a payload ---------------------------------------------------------------------


def resolve(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` in parsed JSON, or ``_MISSING``."""
    for segment in path.split("."):
        if isinstance(value, Mapping):
            if segment not in value:
                return _MISSING
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
    return value


def _matches(payload: Any, when: Mapping[str, Any]) -> bool:
    for path, expected in when.items():
        found = resolve(payload, path)
        if expected is PRESENT:
            if found is _MISSING or found is None:
                return False
        elif found is _MISSING or found != expected:
            return False
    return True


def map_payload(
    source: WebhookSource, payload: Any, *, now: datetime | None = None
) -> list[MappedEvent]:
    """The events ``payload`` stands for under ``source``'s rules ([] when none matches).

    Raises :class:`MappingProblems` naming every fault when a matching rule cannot be
    applied; then nothing of the payload may be recorded. A property holding U+0000 (in a
    key or a value, at any depth) is such a fault, named by its path in the payload; so is
    a time, given ``now`` (the server's clock), before 2000 or more than a day after it.
    """
    events: list[MappedEvent] = []
    problems: list[tuple[str, str]] = []
    for rule in source.maps:
        if not _matches(payload, rule.when):
            continue
        if rule.each is None:
            items: list[tuple[str, Any]] = [("", payload)]
        else:
            listed = resolve(payload, rule.each)
            if not isinstance(listed, list):
                problems.append((rule.each, "must be a list"))
                continue
            items = [(f"{rule.each}[{i}].", item) for i, item in enumerate(listed)]
        for prefix, item in items:
            mapped = _map_item(rule, item, prefix, problems, now=now)
            if mapped is not None:
                events.append(mapped)
    if problems:
        raise MappingProblems(problems)
    return events


def _map_item(
    rule: MapEvent,
    item: Any,
    prefix: str,
    problems: list[tuple[str, str]],
    *,
    now: datetime | None,
) -> MappedEvent | None:
    before = len(problems)
    email = resolve(item, rule.email)
    if email is _MISSING or email is None or email == "":
        problems.append((prefix + rule.email, "is required: the contact's email address"))
    elif not isinstance(email, str):
        problems.append((prefix + rule.email, "must be a string (an email address)"))
    else:
        try:
            email = normalize_email(email)
        except ValidationError as exc:
            problems.append((prefix + rule.email, str(exc)))
    properties: dict[str, Any] = {}
    nul_found: list[tuple[str, str]] = []  # named by their paths in the payload
    for name, path in rule.properties.items():
        value = resolve(item, path)
        if value is not _MISSING:
            properties[name] = value
            nul_found += nul_problems(value, prefix + path)
            nul_found += value_problems(value, prefix + path)
    problems += nul_found
    try:
        validate_properties(properties)
    except ValidationError as exc:
        if not nul_found:
            problems.append((prefix.rstrip(".") or "body", str(exc)))
    occurred: datetime | None = None
    if rule.occurred_at is not None:
        raw_time = resolve(item, rule.occurred_at)
        if raw_time is not _MISSING and raw_time is not None:
            occurred = _parse_time(raw_time)
            implausible = None
            if occurred is not None and now is not None:
                implausible = occurred_at_problem(occurred, now=now)
            if occurred is None:
                problems.append(
                    (
                        prefix + rule.occurred_at,
                        f"{raw_time!r} is not a time (ISO 8601, unix seconds or milliseconds)",
                    )
                )
            elif implausible is not None:
                problems.append((prefix + rule.occurred_at, implausible))
    key_values = []
    for path in rule.key_paths:
        value = resolve(item, path)
        if value is _MISSING or value is None or value == "":
            problems.append((prefix + path, "is required: it identifies the event for dedupe"))
        key_values.append(value)
    if len(problems) > before:
        return None
    identity: Any = key_values if rule.key_paths else item
    digest = hashlib.sha256(
        json.dumps([rule.type, identity], sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()
    return MappedEvent(
        email=email,
        type=rule.type,
        properties=properties,
        key=("key:" if rule.key_paths else "body:") + digest,
        occurred_at=occurred,
    )


def _parse_time(value: Any) -> datetime | None:
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            number = float(value)
            if number > _MILLIS_THRESHOLD:
                number /= 1000
            return datetime.fromtimestamp(number, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


# --- recording -----------------------------------------------------------------------------


def record_generic_events(
    runtime: Any, source: WebhookSource, events: Sequence[MappedEvent]
) -> InboundResult:
    """Record mapped events in one transaction (all or nothing), then enqueue processing."""
    result = InboundResult()
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        for event in events:
            recorded = record_event(
                session,
                runtime.registry,
                now=now,
                email=event.email,
                event_type=event.type,
                properties=event.properties,
                source=f"webhook:{source.name}",
                idempotency_key=event.key,
                occurred_at=event.occurred_at,
            )
            if recorded.duplicate:
                result.duplicates += 1
            else:
                result.recorded += 1
                result.contacts.add(recorded.contact_id)
    runtime.enqueue_or_leave(sorted(result.contacts), what="webhook events")
    return result
