"""The runtime's periodic ``scheduler_tick`` chain: its job, its turns and its watch.

``scheduler_tick`` runs one scheduler pass (``Runtime.tick``) and sends itself again after
the interval; ``engine/periodic.py`` decides whose turn it is. Worker processes that start
the chain also watch it (``ChainWatch``) and restart it should its message be lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.stub import StubBroker

from engine.durations import describe_duration
from engine.periodic import (
    PROBE,
    START,
    ChainWatch,
    Trouble,
    chain_lost,
    describe_failure,
    take_turn,
)

if TYPE_CHECKING:
    from engine.runtime import Runtime

# The chain's lines keep the runtime's logger, which operators (and tests) filter on.
log = logging.getLogger("engine.runtime")

# The periodic scheduler job lives apart: drain() never waits for a chain that never ends.
SCHEDULER_QUEUE = "journeyline_scheduler"
SCHEDULER_TICK = "scheduler_tick"
# The module the job is declared for: Dramatiq names the actor's logger after it.
JOBS_MODULE = "engine.runtime"


class SchedulerChain:
    """The ``scheduler_tick`` chain of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.trouble = Trouble(log, SCHEDULER_TICK)
        interval = timedelta(seconds=runtime.settings.scheduler_interval_seconds)
        self.watch_every = 2 * interval
        # Worker processes that start the chain also restart it should its message be lost
        # (the in-process broker loses nothing: serve on stub:// ticks in a thread).
        self.watching = runtime.settings.scheduler_in_workers and not isinstance(
            runtime.broker, StubBroker
        )

    def declare(self, fn: Callable[..., None]) -> dramatiq.Actor[..., None]:
        """Declare ``fn`` as the ``scheduler_tick`` job on the runtime's broker, with the
        watch when this process restarts lost chains."""
        fn.__module__ = JOBS_MODULE
        broker = self.runtime.broker
        if self.watching:
            broker.add_middleware(
                ChainWatch(
                    self.runtime.watch_scheduler_chain, every=self.watch_every, name=SCHEDULER_TICK
                )
            )
        return dramatiq.Actor(
            fn,
            broker=broker,
            actor_name=SCHEDULER_TICK,
            queue_name=SCHEDULER_QUEUE,
            priority=0,
            # No retries: the chain re-enqueues itself even when a pass fails.
            options={"max_retries": 0, "time_limit": 600_000},
        )

    def run_turn(self, token: str = START) -> bool:
        """The body of ``Runtime.periodic_tick`` (which says what it does)."""
        rt = self.runtime
        interval = timedelta(seconds=rt.settings.scheduler_interval_seconds)
        delay_ms = int(interval.total_seconds() * 1000)
        again = f"the chain goes on, trying every {describe_duration(interval)}"
        try:
            turn = take_turn(
                rt.db, name=SCHEDULER_TICK, now=rt.clock.now(), interval=interval, token=token
            )
        except Exception as exc:  # nothing was booked: this message's token stays good
            self.trouble.failed(exc, again)
            self.send(token, delay_ms)
            return False
        if turn is None:
            if token == START:
                self.send(PROBE, 2 * delay_ms)
            return False
        try:
            rt.tick()
        except Exception as exc:  # what the pass claimed is leased: a later pass has it
            self.trouble.failed(exc, again)
        else:
            self.trouble.ok()
        finally:  # even a pass stopped by its time limit sends the next
            self.send(turn, delay_ms)
        return True

    def send(self, token: str, delay_ms: int) -> None:
        """Send the chain's next message; log it when the broker refuses it."""
        try:
            self.runtime.jobs.scheduler_tick.send_with_options(args=(token,), delay=delay_ms)
        except Exception as exc:
            restart = (
                "a worker process finds its booked run overdue (each looks every "
                f"{describe_duration(self.watch_every)})"
                if self.watching
                else "`journeyline scheduler --periodic` is run again (with "
                "JOURNEYLINE_SCHEDULER_IN_WORKERS=true the workers restart it themselves)"
            )
            log.error(
                "%s: the broker did not take the next run (%s): the chain stops until %s",
                SCHEDULER_TICK,
                describe_failure(exc),
                restart,
            )

    def watch(self) -> bool:
        """The body of ``Runtime.watch_scheduler_chain`` (which says what it does)."""
        rt = self.runtime
        interval = timedelta(seconds=rt.settings.scheduler_interval_seconds)
        if not chain_lost(rt.db, name=SCHEDULER_TICK, now=rt.clock.now(), interval=interval):
            return False
        rt.jobs.scheduler_tick.send(PROBE)
        log.warning(
            "%s: its booked run is overdue, its message lost: restarting it", SCHEDULER_TICK
        )
        return True
