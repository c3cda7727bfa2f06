"""Why a contact a trigger chose did not enter a workflow, told to whoever listens.

A refusal writes no row: an enrollment would count for the re-entry policy, and a row for
every refused trigger would grow with each page view of a contact already in a workflow.
The entry code logs it (``engine.executor``) and hands it to the listeners of this
process. The test harness listens, so an expectation that fails names the entries a
contact was refused and why ("entry rule not met: ..."), next to their timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session


@dataclass(frozen=True)
class Refusal:
    """One refused entry: the contact, the workflow, when (the pipeline's now) and why."""

    contact_id: int
    workflow: str
    at: datetime
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


def refuse(session: Session, contact_id: int, workflow: str, at: datetime, reason: str) -> None:
    """Tell the listeners, if any, that ``contact_id`` did not enter ``workflow``."""
    if not _LISTENERS:
        return
    refusal = Refusal(contact_id, workflow, at, reason)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    for listener in list(_LISTENERS):
        listener(engine, refusal)
