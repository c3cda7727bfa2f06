"""What a transaction asks to be done once it has committed: ``Effects``.

The executor, the pipeline, schedules and broadcasts gather in one ``Effects`` the actions
their steps wrote (marketing and transactional, enqueued on their own queues) and the
contacts left with events to process; the runtime enqueues them after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import object_session

from engine.models import Action

ActionFields = tuple[str, dict[str, Any], dict[str, Any]]
"""An action's kind, payload and reason."""


class Effects:
    """What a transaction asks to be enqueued once it has committed: marketing actions,
    transactional ones (they jump the marketing queue), and contacts with pending events
    left to process.

    A step's new action is kept as the object, not flushed for its id there and then, so a
    job's actions reach the database in one multi-row INSERT at its next flush. Reading
    ``actions`` or ``transactional`` gives ids: after the commit from each object's identity;
    inside the transaction, flushing the session first if some were not written yet."""

    def __init__(
        self,
        actions: Iterable[int] = (),
        transactional: Iterable[int] = (),
        contacts: Iterable[int] = (),
    ) -> None:
        self._marketing: list[int | Action] = list(actions)
        self._transactional: list[int | Action] = list(transactional)
        self.contacts: list[int] = list(contacts)
        # What grouping into batches reads of a new action, kept as written: after the
        # commit the objects' attributes are expired, and re-reading them costs a query.
        self._described: list[tuple[Action, ActionFields]] = []

    def add_action(self, action: Action, *, marketing: bool) -> None:
        (self._marketing if marketing else self._transactional).append(action)
        self._described.append((action, (action.kind, action.payload, action.reason)))

    def described(self) -> dict[int, ActionFields]:
        """Action id -> (kind, payload, reason) of the actions these effects wrote."""
        return {inspect(action).identity[0]: fields for action, fields in self._described}

    @property
    def actions(self) -> list[int]:
        return _ids(self._marketing)

    @property
    def transactional(self) -> list[int]:
        return _ids(self._transactional)

    def extend(self, other: Effects) -> None:
        self._marketing.extend(other._marketing)
        self._transactional.extend(other._transactional)
        self.contacts.extend(other.contacts)
        self._described.extend(other._described)

    def __repr__(self) -> str:
        return (
            f"Effects(actions={self.actions}, transactional={self.transactional}, "
            f"contacts={self.contacts})"
        )


def _ids(items: list[int | Action]) -> list[int]:
    unwritten = [i for i in items if not isinstance(i, int) and inspect(i).identity is None]
    if unwritten:
        session = object_session(unwritten[0])
        if session is None:
            raise RuntimeError("an action of these effects was never written (rolled back?)")
        session.flush()
    return [i if isinstance(i, int) else inspect(i).identity[0] for i in items]
