"""Why a contact a trigger chose did not enter a workflow, told to whoever listens.

A refusal writes no row: an enrollment would count for the re-entry policy, and a row for
every refused trigger would grow with each page view of a contact already in a workflow.
The entry code hands it to the listeners of this process (and logs an entry rule's or
consent's refusal, ``engine.executor``). The test harness listens, so an expectation that
fails names the entries a contact was refused and why ("entry rule not met: ..."), next to
their timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session

RefusalKind = Literal["in it", "re-entry", "entry rule", "consent"]
"""What refused: the contact is in the workflow now; its re-entry policy; its ``entry_if``;
consent (an unsubscribed contact and a workflow that sends only marketing email)."""


@dataclass(frozen=True)
class Refusal:
    """One refused entry: the contact, the workflow, when (the pipeline's now), what refused
    and why, in words."""

    contact_id: int
    workflow: str
    at: datetime
    kind: RefusalKind
    reason: str


Listener = Callable[[Engine, Refusal], None]
"""Called with the database the refusal happened in (one process may run several, as tests
do) and the refusal, in the transaction's thread, before it commits."""

_LISTENERS: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Hand every refusal of this process to ``listener`` while the block runs."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def listened() -> bool:
    """Whether anyone listens: callers make a refusal's text only then (it costs a format
    of times and conditions, on a path every trigger of a busy contact takes)."""
    return bool(_LISTENERS)


def refuse(
    session: Session,
    contact_id: int,
    workflow: str,
    at: datetime,
    kind: RefusalKind,
    reason: str,
) -> None:
    """Tell the listeners, if any, that ``contact_id`` did not enter ``workflow``."""
    if not _LISTENERS:
        return
    refusal = Refusal(contact_id, workflow, at, kind, reason)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    for listener in list(_LISTENERS):
        listener(engine, refusal)
