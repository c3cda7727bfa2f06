"""``journeyline scheduler``: wake due enrollments, fire schedule slots and re-dispatch stuck
work every interval, saying what it does; ``--once`` for one pass, ``--periodic`` to hand
the schedule to the workers."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from engine.broker import broker_errors, ping_broker
from engine.cli import (
    BrokerUrl,
    DatabaseUrl,
    app,
    broker_problem,
    console,
    describe_database,
    fail,
    friendly_errors,
    log,
    redact_url,
    settings_for,
)
from engine.db_errors import database_unavailable, describe_database_error


@app.command()
def scheduler(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One tick, print counts, exit.")] = False,
    periodic: Annotated[
        bool,
        typer.Option(
            "--periodic",
            help="Start the periodic scheduler_tick job on the shared broker and exit: the "
            "workers then run the scheduler (extra copies of the job stop themselves).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Wake due enrollments, fire due schedule triggers and re-dispatch stuck events and
    actions, every interval."""
    from engine.runtime import Runtime

    settings = settings_for(ctx, database_url, broker_url)
    log.setLevel(settings.log_level.upper())
    if periodic:
        if settings.broker_url.startswith("stub:"):
            fail(
                "--periodic needs a shared broker (redis:// or amqp://) and running workers; "
                "with stub:// run `journeyline scheduler` itself"
            )
        not_started = "scheduler_tick was not started: run this again once the broker answers"
        with friendly_errors(settings, broker_hint=not_started), Runtime(settings) as runtime:
            runtime.jobs.scheduler_tick.send()
        console.print(
            "scheduler_tick enqueued: workers tick every "
            f"{settings.scheduler_interval_seconds:g} s from now on"
        )
        return
    after_lease = (
        "What this pass claimed is handed out again by a later pass once its lease runs out "
        f"({settings.action_lease_seconds} s, JOURNEYLINE_ACTION_LEASE_SECONDS)"
    )
    with friendly_errors(settings, broker_hint=after_lease), Runtime(settings) as runtime:
        runtime.start()  # a no-op unless the broker is stub://, whose jobs run here
        if once:
            due = runtime.tick()
            if runtime.in_process:
                runtime.drain()
            console.print(tick_counts(due))
            return
        scheduler_loop(runtime, out=console, sleep=time.sleep)


if TYPE_CHECKING:
    from dramatiq import Broker

    from engine.runtime import Runtime, Tick


SCHEDULER_HEARTBEAT = timedelta(minutes=15)
"""A running scheduler whose passes find nothing says it is alive this often."""


def tick_counts(due: Tick) -> str:
    return (
        f"{len(due.enrollments)} enrollments woken, {len(due.contacts)} contacts and "
        f"{len(due.actions)} actions re-dispatched, "
        f"{len(due.schedule_slots)} schedule slots fired"
    )


class _Stop(Exception):
    """SIGTERM arrived between passes: stop now."""


class _Sigterm:
    """The SIGTERM handler of the loop. SIGTERM (what ``docker stop`` sends) stops it as
    Ctrl-C does, but never inside a pass (between claiming rows and queuing them): one that
    arrives during a pass is noted, and the loop stops once the pass is done."""

    def __init__(self) -> None:
        self.received = False
        self.sleeping = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self.sleeping:
            raise _Stop


@contextmanager
def _handling(sigterm: _Sigterm) -> Iterator[None]:
    """``sigterm`` handles SIGTERM inside the block (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def scheduler_loop(
    runtime: Runtime, *, out: Console, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Scheduler passes every interval until Ctrl-C or SIGTERM, saying so: a line when it
    starts, one per pass that found work, one when the broker or the database fails and one
    when it answers again (not at every failed pass), one every ``SCHEDULER_HEARTBEAT`` of
    quiet passes, and one when it stops. SIGTERM lets the pass under way finish.

    A database that fails the first pass ends the command with its message (exit 2): a
    wrong URL or password, a database not migrated, is better said at once than retried
    quietly, and whatever started it (systemd, Docker) starts it again. Once a pass has
    reached the database, losing it only pauses the passes."""
    settings = runtime.settings
    interval = settings.scheduler_interval_seconds
    passes = quiet = 0
    quiet_since = runtime.clock.now()
    broker_down = database_down = reached = False
    sigterm = _Sigterm()
    try:
        with _handling(sigterm):  # before saying it started: from then on SIGTERM stops it
            out.print(
                f"scheduler started: database {describe_database(settings.database_url)}, "
                f"broker {redact_url(settings.broker_url)}, a pass every {interval:g} s "
                "(Ctrl-C to stop)",
                highlight=False,
                soft_wrap=True,
            )
            while not sigterm.received:
                now = runtime.clock.now()
                stamp = f"{now:%Y-%m-%d %H:%M:%S} UTC"
                passes += 1
                said: list[str] = []
                try:
                    due = runtime.tick()
                except broker_errors() as exc:
                    reached = True  # the pass claimed its rows before the broker refused
                    said += _database_back(database_down)
                    database_down = False
                    if not broker_down:
                        said.append(
                            f"{broker_problem(exc, settings.broker_url)}: what this pass "
                            "claimed is handed out again once its lease runs out "
                            f"({settings.action_lease_seconds} s); trying every pass"
                        )
                    broker_down = True
                except Exception as exc:
                    if not (reached and database_unavailable(exc)):
                        raise  # friendly_errors says what it is, or it is a bug
                    if not database_down:
                        said.append(
                            f"the database at {describe_database(settings.database_url)} does "
                            f"not answer ({describe_database_error(exc)}): nothing claimed "
                            "is lost (what a pass holds is leased); trying every pass"
                        )
                    database_down = True
                else:
                    reached = True
                    said += _database_back(database_down)
                    database_down = False
                    # Back only when it took this pass's jobs, or answers when there were
                    # none: a pass with nothing to hand over proves nothing about it.
                    if broker_down and (len(due) or _answers(runtime.broker)):
                        said.append("the broker takes jobs again")
                        broker_down = False
                    if len(due):
                        said.append(tick_counts(due))
                quiet += 1
                if not said and now - quiet_since >= SCHEDULER_HEARTBEAT:
                    said.append(
                        f"running: {quiet} passes since {quiet_since:%H:%M:%S} found nothing due"
                    )
                for line in said:
                    out.print(f"{stamp} {line}", highlight=False, soft_wrap=True)
                if said:
                    quiet, quiet_since = 0, now
                sigterm.sleeping = True
                try:
                    if not sigterm.received:
                        sleep(interval)
                finally:
                    sigterm.sleeping = False
    except _Stop:
        pass
    except KeyboardInterrupt:
        out.print(f"scheduler stopped (Ctrl-C) after {passes} passes", highlight=False)
        return
    out.print(f"scheduler stopped (SIGTERM) after {passes} passes", highlight=False)


def _database_back(was_down: bool) -> list[str]:
    return ["the database answers again"] if was_down else []


def _answers(broker: Broker) -> bool:
    """The broker answers a ping (with a timeout, on a connection of its own)."""
    try:
        ping_broker(broker)
    except Exception:
        return False
    return True
