"""Event rules: what an incoming event does to a contact's score and stage.

Rules are declared in the workflows module as ``RULES = [EventRule(...), ...]``. For each
event, every matching rule adds its ``score`` and then offers its ``triggers`` to the stage
machine in order; a trigger the contact's current stage does not allow is passed over (an
event like ``order.completed`` means different things to a lead and to a loyal customer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EventFilter = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class EventRule:
    event: str
    score: int = 0
    triggers: tuple[str, ...] = ()
    when: EventFilter | None = None  # a predicate on the event's properties
    description: str = ""

    def matches(self, event_type: str, properties: Mapping[str, Any]) -> bool:
        if event_type != self.event:
            return False
        return self.when is None or bool(self.when(properties))


class RuleSet:
    """Rules indexed by event type."""

    def __init__(self, rules: Iterable[EventRule]) -> None:
        self.rules = tuple(rules)
        self._by_type: dict[str, list[EventRule]] = {}
        for rule in self.rules:
            self._by_type.setdefault(rule.event, []).append(rule)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    def knows(self, event_type: str) -> bool:
        return event_type in self._by_type

    def matching(self, event_type: str, properties: Mapping[str, Any]) -> list[EventRule]:
        return [r for r in self._by_type.get(event_type, ()) if r.matches(event_type, properties)]

    def problems(self, triggers: Iterable[str]) -> list[str]:
        known = set(triggers)
        return [
            f"rule for event {rule.event!r} names unknown trigger {trigger!r}; "
            f"known: {sorted(known)}"
            for rule in self.rules
            for trigger in rule.triggers
            if trigger not in known
        ]
