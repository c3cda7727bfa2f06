"""The lifecycle stage machine, built once with ``transitions`` and shared by all contacts.

Building a ``transitions.Machine`` per contact costs ~0.3 ms and ~40 KB; instead one machine
is built from the ``Journey`` and a light subject is attached for the length of one trigger
(``add_model`` / trigger / ``remove_model``) under a lock, so no more than one model is ever
attached and contacts never leak into the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine

from engine.errors import InvalidTransition, WorkflowDefinitionError
from engine.stages import Guard, Journey


class _Subject:
    """The model attached to the machine for one trigger. Compares by identity.

    No ``__slots__``: ``transitions`` hangs its convenience methods on the model.
    """

    def __init__(self, email: str, stage: str, score: int, attributes: Mapping[str, Any]):
        self.email = email
        self.state = stage
        self.score = score
        self.attributes = attributes


@dataclass(frozen=True)
class Move:
    """The outcome of a trigger that the stage allows: moved, or held back by a guard."""

    trigger: str
    source: str
    dest: str
    moved: bool
    refused_by: str | None = None  # the guard that said no


def _condition(guard: Guard) -> Any:
    def check(event: EventData) -> bool:
        return guard(event.model)

    check.__name__ = guard.name
    return check


class StageMachine:
    def __init__(self, journey: Journey) -> None:
        problems = journey.problems()
        if problems:
            raise WorkflowDefinitionError(problems)
        self.journey = journey
        self._allowed: dict[str, dict[str, str]] = {}
        self._guards: dict[tuple[str, str], tuple[Guard, ...]] = {}
        specs = []
        for t in journey.transitions:
            for source in t.sources:
                self._allowed.setdefault(t.trigger, {})[source] = t.dest
                self._guards[(t.trigger, source)] = t.guards
            specs.append(
                {
                    "trigger": t.trigger,
                    "source": list(t.sources),
                    "dest": t.dest,
                    "conditions": [_condition(g) for g in t.guards],
                }
            )
        self._machine = Machine(
            model=None,
            states=list(journey.stage_names),
            transitions=specs,
            initial=journey.initial,
            auto_transitions=False,
            send_event=True,
        )
        self._lock = threading.Lock()

    @property
    def initial(self) -> str:
        return self.journey.initial

    def allows(self, stage: str, trigger: str) -> bool:
        """Whether ``trigger`` is defined from ``stage`` (guards are not evaluated)."""
        return stage in self._allowed.get(trigger, {})

    def destination(self, stage: str, trigger: str) -> str | None:
        return self._allowed.get(trigger, {}).get(stage)

    def fire(
        self,
        *,
        email: str,
        stage: str,
        trigger: str,
        score: int = 0,
        attributes: Mapping[str, Any] | None = None,
    ) -> Move:
        """Fire ``trigger`` for a contact in ``stage``.

        Raises ``InvalidTransition`` (naming the contact, stage and trigger) when the trigger
        is unknown or not allowed from ``stage``. A guard that says no is not an error: the
        returned ``Move`` has ``moved=False`` and names the guard.
        """
        if stage not in self.journey.stage_names:
            raise InvalidTransition(
                contact=email,
                stage=stage,
                trigger=trigger,
                reason=f"unknown stage; known: {list(self.journey.stage_names)}",
            )
        if trigger not in self._allowed:
            raise InvalidTransition(
                contact=email,
                stage=stage,
                trigger=trigger,
                reason=f"unknown trigger; known: {list(self._allowed)}",
            )
        dest = self._allowed[trigger].get(stage)
        if dest is None:
            allowed_from = sorted(self._allowed[trigger])
            raise InvalidTransition(
                contact=email,
                stage=stage,
                trigger=trigger,
                reason=f"only allowed from {allowed_from}",
            )
        subject = _Subject(email, stage, score, attributes or {})
        with self._lock:
            self._machine.add_model(subject, initial=stage)
            try:
                moved = bool(subject.trigger(trigger))  # type: ignore[attr-defined]
            finally:
                self._machine.remove_model(subject)
        if moved:
            return Move(trigger, stage, subject.state, moved=True)
        refused = next(
            (g.name for g in self._guards[(trigger, stage)] if not g(subject)), "a guard"
        )
        return Move(trigger, stage, stage, moved=False, refused_by=refused)
