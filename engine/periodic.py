"""Periodic jobs that re-enqueue themselves, without a separate process to drive them.

``scheduler_tick`` runs one scheduler pass and sends itself again with a delay. Anything may
start such a chain (``journeyline scheduler --periodic``, each worker process at boot with
``JOURNEYLINE_SCHEDULER_IN_WORKERS=true``), so starters must not multiply it. The
``periodic_ticks`` row books the next run and names the chain that owns it (a token the
chain's next message carries):

- the owner's message ticks, books the next run with a fresh token and sends it on;
- any other run stops, unless the booked run is overdue by more than an interval (its
  message was lost): then it takes the chain over;
- a starter that finds a live chain looks once more two intervals later, so a chain lost a
  moment before a worker booted is still picked up.

So one chain lives, and even while copies overlap the pass itself is safe to run in
parallel (leases, ``SKIP LOCKED``, unique slot keys).

No failure of a run ends its chain: a turn the database could not take sends the same
message again an interval later (the booking did not change, so an owner stays the owner),
and a pass that failed still sends the next. What can still lose a chain is its message:
the broker refusing the next one (down at that moment), or losing it (restarted without
persistence). Then nobody carries the booked run's token and it falls overdue: each worker
process's ``ChainWatch`` looks every two intervals (``chain_lost``) and sends a probe, which
takes the chain over. Several probes are harmless: the first takes the chain, the others
find it alive and stop.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from dramatiq import Broker, Middleware, Worker
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, select

from engine.broker import broker_errors, describe_broker_error
from engine.db import transaction
from engine.db_errors import database_unavailable, describe_database_error, schema_behind
from engine.durations import describe_duration
from engine.models import PeriodicTick

log = logging.getLogger(__name__)

START = ""  # the token of a message that starts a chain
PROBE = "probe"  # the token of a starter's second look; never owns a chain


def take_turn(
    db: Engine, *, name: str, now: datetime, interval: timedelta, token: str = START
) -> str | None:
    """The token to carry in the next message when this run of ``name`` should tick now;
    None when it should stop."""
    fresh = secrets.token_hex(8)
    with transaction(db) as session:
        row = session.exec(
            select(PeriodicTick).where(PeriodicTick.name == name).with_for_update()
        ).first()
        if row is None:
            try:
                with session.begin_nested():
                    session.add(
                        PeriodicTick(name=name, token=fresh, next_at=now + interval, updated_at=now)
                    )
                return fresh
            except IntegrityError:  # another starter booked the first run a moment ago
                return None
        # Not before half an interval ahead of the booking: a broker that ignores delays
        # (inline://) must not spin the chain in a loop.
        owner = token not in (START, PROBE) and token == row.token
        owner = owner and now >= row.next_at - interval / 2
        lost = now > row.next_at + interval
        if not (owner or lost):
            return None
        row.token = fresh
        row.next_at = now + interval
        row.updated_at = now
        session.add(row)
    return fresh


def chain_lost(db: Engine, *, name: str, now: datetime, interval: timedelta) -> bool:
    """No run of ``name`` is booked, or the booked one is more than an interval overdue:
    its message was lost, and a probe sent now would take the chain over."""
    with Session(db) as session:
        row = session.get(PeriodicTick, name)
    return row is None or now > row.next_at + interval


class Trouble:
    """Says a failure that repeats once, when it begins, and once more when it ends, rather
    than at every try. The database or the broker being down is one line; anything else
    carries its traceback, the first time."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, then: str) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        if not first:
            self.logger.debug("%s failed again (%s)", self.what, describe_failure(exc))
            return
        expected = expected_failure(exc)
        self.logger.error(
            "%s failed (%s); %s", self.what, describe_failure(exc), then,
            exc_info=None if expected else exc,
        )  # fmt: skip

    def ok(self) -> None:
        with self._lock:
            failures, self.failures = self.failures, 0
        if failures:
            self.logger.warning("%s works again, after %d failed tries", self.what, failures)


def expected_failure(exc: BaseException) -> bool:
    """The database or the broker cannot serve now: their state, not a bug."""
    return database_unavailable(exc) or schema_behind(exc) or isinstance(exc, broker_errors())


def describe_failure(exc: BaseException) -> str:
    """One line: a database's error without its SQL, any other as its type and message."""
    if isinstance(exc, DBAPIError):
        return describe_database_error(exc)
    return describe_broker_error(exc)


class ChainWatch(Middleware):
    """Looks after a periodic chain from every worker process: ``look`` (``Runtime``'s
    ``watch_scheduler_chain``: a probe when the booking is overdue) runs every ``every`` in
    a daemon thread, from the worker's boot to its shutdown. It costs a read of one row."""

    def __init__(self, look: Callable[[], object], *, every: timedelta, name: str) -> None:
        self.look = look
        self.every = every
        self.name = name
        self.trouble = Trouble(log, f"the {name} watch")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"journeyline-{self.name}-watch", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a look stuck on a connection ends with the process
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every.total_seconds()):
            try:
                self.look()
            except Exception as exc:
                self.trouble.failed(exc, f"looking again every {describe_duration(self.every)}")
            else:
                self.trouble.ok()
