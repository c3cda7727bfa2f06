"""The lifecycle stage machine, built once with ``transitions`` and shared by all contacts.

Building a ``transitions.Machine`` per contact costs ~0.3 ms and ~40 KB; instead one machine
is built from the ``Journey`` with one light subject attached for good. A trigger fills the
subject with the contact's stage, score and attributes, fires, and empties it again, under a
lock: one model is ever attached, and no contact stays referenced by the machine. (Attaching
a subject per trigger, ``add_model`` / ``remove_model``, hangs and removes a method per
trigger and stage each time: most of the cost of a trigger.)
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

    def fill(self, email: str, stage: str, score: int, attributes: Mapping[str, Any]) -> None:
        self.email, self.state, self.score, self.attributes = email, stage, score, attributes

    def empty(self, initial: str) -> None:
        self.fill("", initial, 0, {})


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
        assert isinstance(event.model, _Subject)  # the one model attached to the machine
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
        self._subject = _Subject("", journey.initial, 0, {})
        self._machine.add_model(self._subject, initial=journey.initial)
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
        subject = self._subject
        with self._lock:
            subject.fill(email, stage, score, attributes or {})
            try:
                moved = bool(subject.trigger(trigger))  # type: ignore[attr-defined]
                if moved:
                    return Move(trigger, stage, subject.state, moved=True)
                refused = next(
                    (g.name for g in self._guards[(trigger, stage)] if not g(subject)), "a guard"
                )
                return Move(trigger, stage, stage, moved=False, refused_by=refused)
            finally:
                subject.empty(self.journey.initial)
