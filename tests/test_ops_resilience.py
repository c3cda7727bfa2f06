"""The scheduler outlives its services' outages: the periodic ``scheduler_tick`` chain goes on
through failed turns and passes, a worker's watch restarts a chain whose message the broker
refused, and ``journeyline scheduler`` keeps running while the database is away, saying so
once each way. Tests read as Given / When / Then."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from dramatiq import Broker, Message, Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from rich.console import Console
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

import engine.scheduler_chain
from connectors import RecordingEmailConnector
from engine import Settings, SystemClock, VirtualClock, migrations
from engine.cli_scheduler import scheduler_loop
from engine.db import make_engine
from engine.periodic import PROBE, START, ChainWatch
from engine.runtime import SCHEDULER_QUEUE, Runtime, Tick
from tests.support import make_runtime, reset_postgres

INTERVAL_S = 5.0
INTERVAL_MS = int(INTERVAL_S * 1000)


def refused(detail: str = "Connection refused") -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL does not answer."""
    orig = psycopg.OperationalError(f'connection to server at "db", port 5432 failed: {detail}')
    return OperationalError("SELECT 1", {}, orig)


def ticks_sent(runtime: Runtime) -> list[tuple[tuple[Any, ...], int | None]]:
    """Every scheduler_tick message the runtime sends from now on: its args and delay."""
    sent: list[tuple[tuple[Any, ...], int | None]] = []
    enqueue = runtime.broker.enqueue

    def recording(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if message.actor_name == "scheduler_tick":
            sent.append((tuple(message.args), delay))
        return enqueue(message, delay=delay)

    runtime.broker.enqueue = recording  # type: ignore[method-assign]
    return sent


def failing_first(real: Callable[..., Any], failures: list[BaseException]) -> Callable[..., Any]:
    """``real``, raising each of ``failures`` in turn first."""

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    return flaky


def records(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


# --- the periodic chain -------------------------------------------------------------------------


def test_a_turn_the_database_could_not_take_is_tried_again_and_the_chain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a database that fails the chain's first turn
    rt, _clock, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db", broker_url="inline://", scheduler_interval_seconds=INTERVAL_S
    )
    sent = ticks_sent(rt)
    passes: list[Tick] = []
    real_tick = rt.tick

    def counted() -> Tick:
        passes.append(real_tick())
        return passes[-1]

    rt.tick = counted  # type: ignore[method-assign]
    monkeypatch.setattr(
        engine.scheduler_chain,
        "take_turn",
        failing_first(engine.scheduler_chain.take_turn, [refused()]),
    )
    caplog.set_level(logging.DEBUG, logger="engine")
    try:
        # When the chain is started (inline: every message runs at once, delays ignored)
        rt.jobs.scheduler_tick.send()
        rt.drain()  # raises whatever a job raised
    finally:
        rt.close()
    # Then the failed run sent itself again an interval later with the token it carried; that
    # one took the turn, ran the pass and booked the next run
    assert [args for args, _ in sent][:2] == [(), (START,)]
    assert [delay for _, delay in sent] == [None, INTERVAL_MS, INTERVAL_MS]
    (token,) = sent[2][0]
    assert token not in (START, PROBE)
    assert len(passes) == 1
    # and the outage was said once, without a traceback, and its end once
    (error,) = records(caplog, "engine.runtime", logging.ERROR)
    assert error.getMessage() == (
        'scheduler_tick failed (OperationalError: connection to server at "db", port 5432 '
        "failed: Connection refused); the chain goes on, trying every 5 seconds"
    )
    assert error.exc_info is None
    (back,) = records(caplog, "engine.runtime", logging.WARNING)
    assert back.getMessage() == "scheduler_tick works again, after 1 failed tries"


def test_failed_passes_still_send_the_next_run_and_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a chain whose passes fail three times with a bug, then work
    rt, clock, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db", broker_url="inline://", scheduler_interval_seconds=INTERVAL_S
    )
    failures: list[BaseException] = [RuntimeError("a bug")] * 3
    rt.tick = failing_first(rt.tick, failures)  # type: ignore[method-assign]
    pending = rt.broker.pending  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG, logger="engine")
    try:
        # When the chain runs five times, an interval apart
        took = [rt.periodic_tick()]
        for _ in range(4):
            (message,) = pending
            pending.clear()
            clock.advance(seconds=INTERVAL_S)
            took.append(rt.periodic_tick(*message.args))
    finally:
        rt.close()
    # Then every run took its turn and sent the next: the chain never ended
    assert took == [True] * 5
    assert len(pending) == 1 and not failures
    # and the bug was said once, with its traceback, and passes working again once
    (error,) = records(caplog, "engine.runtime", logging.ERROR)
    assert error.getMessage().startswith("scheduler_tick failed (RuntimeError: a bug)")
    assert error.exc_info is not None
    (back,) = records(caplog, "engine.runtime", logging.WARNING)
    assert back.getMessage() == "scheduler_tick works again, after 3 failed tries"


def test_a_next_run_the_broker_refused_is_restarted_by_a_workers_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a chain whose broker refuses its next message (down for a moment)
    rt, clock, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db", broker_url="inline://", scheduler_interval_seconds=INTERVAL_S
    )
    down = True
    enqueue = rt.broker.enqueue

    def refusing(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if down:
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        return enqueue(message, delay=delay)

    rt.broker.enqueue = refusing  # type: ignore[method-assign]
    pending = rt.broker.pending  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO, logger="engine")
    try:
        # When a run ticks and its next message is refused
        assert rt.periodic_tick() is True  # nothing raised: the job does not fail
        assert not pending
        # Then that is said, with what restarts the chain
        (error,) = records(caplog, "engine.runtime", logging.ERROR)
        assert error.getMessage() == (
            "scheduler_tick: the broker did not take the next run (ConnectionError: Error 111 "
            "connecting. Connection refused): the chain stops until `journeyline scheduler "
            "--periodic` is run again (with JOURNEYLINE_SCHEDULER_IN_WORKERS=true the workers "
            "restart it themselves)"
        )
        # and a worker's watch leaves it alone while the booked run may still come
        down = False
        assert rt.watch_scheduler_chain() is False
        clock.advance(seconds=2 * INTERVAL_S + 1)  # the booked run is over an interval late
        assert rt.watch_scheduler_chain() is True
        (probe,) = pending
        pending.clear()
        assert probe.args == (PROBE,)
        # and its probe takes the chain over: it ticks and books the next run
        assert rt.periodic_tick(*probe.args) is True
        (following,) = pending
        assert following.args[0] not in (START, PROBE)
        assert rt.watch_scheduler_chain() is False
    finally:
        rt.close()


def test_the_watch_looks_every_period_from_boot_to_shutdown_saying_trouble_once() -> None:
    # Given a watch whose first look fails (the database is down)
    looks: list[int] = []
    third = threading.Event()

    def look() -> None:
        looks.append(1)
        if len(looks) == 1:
            raise refused()
        if len(looks) == 3:
            third.set()

    watch = ChainWatch(look, every=timedelta(milliseconds=5), name="tick")
    handler = _Recording()
    logging.getLogger("engine.periodic").addHandler(handler)
    broker = StubBroker()
    try:
        # When a worker boots, and later shuts down
        watch.after_worker_boot(broker, None)  # type: ignore[arg-type]
        assert third.wait(timeout=10)
        watch.before_worker_shutdown(broker, None)  # type: ignore[arg-type]
    finally:
        logging.getLogger("engine.periodic").removeHandler(handler)
        broker.close()
    # Then it looked on, and said the failure once and its end once
    said = [(r.levelno, r.getMessage()) for r in handler.records]
    assert said[:2] == [
        (
            logging.ERROR,
            'the tick watch failed (OperationalError: connection to server at "db", port 5432 '
            "failed: Connection refused); looking again every 0.005 seconds",
        ),
        (logging.WARNING, "the tick watch works again, after 1 failed tries"),
    ]
    assert watch._thread is None


@pytest.mark.parametrize(
    ("broker_url", "in_workers", "watched"),
    [
        ("redis://127.0.0.1:1/13", True, True),  # nothing connects until a job is sent
        ("redis://127.0.0.1:1/13", False, False),
        ("stub://", True, False),  # serve on stub:// ticks in a thread of its own
    ],
)
def test_worker_processes_watch_the_chain_only_when_they_run_it(
    tmp_path: Path, broker_url: str, in_workers: bool, watched: bool
) -> None:
    rt, _, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db", broker_url=broker_url, scheduler_in_workers=in_workers
    )
    try:
        found = [m for m in rt.broker.middleware if isinstance(m, ChainWatch)]
        assert len(found) == int(watched)
    finally:
        rt.close()


class _Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# --- on a real Redis broker, with a real worker ------------------------------------------------


@dataclass
class OnRedis:
    runtime: Runtime
    passes: list[float]
    client: redis.Redis


@pytest.fixture
def on_redis(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OnRedis]]:
    """Runtimes on SQLite and the test Redis under a namespace of their own (no other
    test's worker takes their messages), the wall clock, and a short interval; their
    passes counted. Keys and runtimes are cleaned up after the test."""
    namespace = f"jl-test-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_url)
    built: list[Runtime] = []

    def build(**settings: Any) -> OnRedis:
        url = f"sqlite:///{tmp_path}/jl-{len(built)}.db"
        db = make_engine(url)
        SQLModel.metadata.create_all(db)
        runtime = Runtime(
            Settings(
                database_url=url, broker_url=redis_url, scheduler_interval_seconds=0.3, **settings
            ),
            clock=SystemClock(),
            email=RecordingEmailConnector(),
            db=db,
            broker=RedisBroker(url=redis_url, namespace=namespace),
        )
        built.append(runtime)
        passes: list[float] = []
        real_tick = runtime.tick

        def counted() -> Tick:
            due = real_tick()
            passes.append(time.monotonic())
            return due

        runtime.tick = counted  # type: ignore[method-assign]
        return OnRedis(runtime, passes, client)

    try:
        yield build
    finally:
        for runtime in built:
            runtime.close()
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.close()


def wait_for(condition: Callable[[], bool], *, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
@pytest.mark.redis
def test_on_redis_the_chain_outlives_a_database_outage_and_a_failed_pass(
    on_redis: Callable[..., OnRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker on Redis whose database fails two turns, then a pass
    redis_rt = on_redis()
    rt = redis_rt.runtime
    monkeypatch.setattr(
        engine.scheduler_chain,
        "take_turn",
        failing_first(engine.scheduler_chain.take_turn, [refused()] * 2),
    )
    rt.tick = failing_first(rt.tick, [refused("server closed the connection")])  # type: ignore[method-assign]
    worker = Worker(rt.broker, worker_threads=1, worker_timeout=50)
    try:
        # When the chain is started
        rt.jobs.scheduler_tick.send()
        worker.start()
        # Then passes keep coming once the database answers: the chain never ended
        assert wait_for(lambda: len(redis_rt.passes) >= 3), redis_rt.passes
    finally:
        worker.stop()
    # and no run of it failed as a job: nothing was dead-lettered
    namespace = rt.broker.namespace  # type: ignore[attr-defined]
    assert redis_rt.client.zcard(f"{namespace}:{SCHEDULER_QUEUE}.XQ") == 0


@pytest.mark.slow
@pytest.mark.redis
def test_on_redis_a_worker_restarts_a_chain_whose_next_message_was_refused(
    on_redis: Callable[..., OnRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given workers that run the scheduler, and a broker that refuses the chain's first
    # next run (down at that moment)
    redis_rt = on_redis(scheduler_in_workers=True)
    rt = redis_rt.runtime
    actor = rt.jobs.scheduler_tick
    refusals = [redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")]
    real_send = actor.send_with_options

    def send_with_options(**options: Any) -> Message[Any]:
        if options.get("args") not in (None, (), (PROBE,)) and refusals:
            raise refusals.pop()
        return real_send(**options)

    monkeypatch.setattr(actor, "send_with_options", send_with_options)
    worker = Worker(rt.broker, worker_threads=1, worker_timeout=50)
    try:
        # When the chain is started and its next message refused after the first pass
        actor.send()
        worker.start()
        assert wait_for(lambda: not refusals and len(redis_rt.passes) == 1)
        # Then the worker's watch finds the booked run overdue and restarts the chain
        assert wait_for(lambda: len(redis_rt.passes) >= 3), redis_rt.passes
    finally:
        worker.stop()


# --- journeyline scheduler ---------------------------------------------------------------------


@dataclass
class ScriptedRuntime:
    """What ``scheduler_loop`` uses of a runtime: settings, a clock, a broker to ping, and
    ``tick`` (returning, or raising, what the script says, one pass after another)."""

    settings: Settings
    script: list[Tick | Exception]
    broker: Broker = field(default_factory=StubBroker)
    clock: VirtualClock = field(
        default_factory=lambda: VirtualClock(datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    )

    def tick(self) -> Tick:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def run_loop(runtime: ScriptedRuntime) -> list[str]:
    """The loop's lines, a pass every interval until the script ends (then Ctrl-C)."""
    out = Console(record=True, width=300)

    def sleep(seconds: float) -> None:
        if not runtime.script:
            raise KeyboardInterrupt
        runtime.clock.advance(timedelta(seconds=seconds))

    scheduler_loop(runtime, out=out, sleep=sleep)  # type: ignore[arg-type]
    return out.export_text().splitlines()


SETTINGS = Settings(
    database_url="postgresql+psycopg://jl:hunter2@db.internal:5432/journeyline",
    broker_url="redis://:s3cret@redis.internal:6379/0",
    scheduler_interval_seconds=5,
)


def test_the_scheduler_keeps_running_through_a_database_outage_saying_so_once_each_way() -> None:
    # Given passes that find the database gone for three passes, then back
    runtime = ScriptedRuntime(
        SETTINGS,
        [Tick(), refused(), refused(), refused(), Tick(contacts=[7]), Tick()],
    )
    # When the scheduler runs
    lines = run_loop(runtime)
    # Then it said the outage once (no password), its end once, and went on
    assert lines[1:] == [
        "2025-03-01 10:00:05 UTC the database at db.internal:5432/journeyline does not answer "
        '(OperationalError: connection to server at "db", port 5432 failed: Connection '
        "refused): nothing claimed is lost (what a pass holds is leased); trying every pass",
        "2025-03-01 10:00:20 UTC the database answers again",
        "2025-03-01 10:00:20 UTC 0 enrollments woken, 1 contacts and 0 actions re-dispatched, "
        "0 schedule slots fired",
        "scheduler stopped (Ctrl-C) after 6 passes",
    ]


def test_a_database_that_fails_the_first_pass_still_ends_the_scheduler() -> None:
    # Given a database that never answered this process (a wrong URL, or down at start)
    runtime = ScriptedRuntime(SETTINGS, [refused(), Tick()])
    # When the scheduler runs, the error reaches the command, which says it and exits 2
    with pytest.raises(OperationalError):
        run_loop(runtime)
    assert runtime.script == [Tick()]


def test_the_broker_is_said_back_only_once_it_took_jobs_or_answers() -> None:
    down = redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
    # Given a broker that refuses a pass's jobs, then passes with nothing to hand over while
    # it is still down (it refuses a ping), then a pass whose jobs it takes
    still_down = RedisBroker(url="redis://127.0.0.1:1/0")
    try:
        runtime = ScriptedRuntime(
            SETTINGS, [Tick(), down, Tick(), Tick(), Tick(contacts=[3])], broker=still_down
        )
        lines = run_loop(runtime)
    finally:
        still_down.close()
    # Then it is back only with the pass it took jobs from
    assert lines[1:-1] == [
        "2025-03-01 10:00:05 UTC the broker redis://:***@redis.internal:6379/0 did not take "
        "the job (ConnectionError: Error 111 connecting. Connection refused): what this pass "
        "claimed is handed out again once its lease runs out (300 s); trying every pass",
        "2025-03-01 10:00:20 UTC the broker takes jobs again",
        "2025-03-01 10:00:20 UTC 0 enrollments woken, 1 contacts and 0 actions re-dispatched, "
        "0 schedule slots fired",
    ]
    # And when it answers a ping, an empty pass is enough
    answering = ScriptedRuntime(SETTINGS, [down, Tick(), Tick()])
    assert run_loop(answering)[2] == "2025-03-01 10:00:05 UTC the broker takes jobs again"


class TcpOutage:
    """A TCP proxy to ``target`` on a port of its own, which can be cut (its listener closed
    and its connections reset, as a database restart does) and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would not,
                # and the socket would go on listening until its next connection
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.accepted += 1
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def lines_of(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line_with(lines: queue.Queue[str], text: str, *, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} within {seconds} s")


@pytest.mark.slow
@pytest.mark.postgres
def test_journeyline_scheduler_waits_out_a_postgres_outage(
    postgres_url: str, tmp_path: Path
) -> None:
    # Given a migrated PostgreSQL reached through a connection we can cut
    reset_postgres(postgres_url, create_tables=False)
    migrations.upgrade(postgres_url)
    from sqlalchemy.engine import make_url

    real = make_url(postgres_url)
    outage = TcpOutage((real.host or "127.0.0.1", real.port or 5432))
    outage.restore()
    proxied = real.set(host="127.0.0.1", port=outage.port).render_as_string(hide_password=False)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "journeyline"), "scheduler"],
        env={
            **os.environ,
            "JOURNEYLINE_DATABASE_URL": proxied,
            "JOURNEYLINE_BROKER_URL": "stub://",
            "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "0.1",
            "JOURNEYLINE_OUTBOX_DIR": str(tmp_path / "outbox"),
            "PYTHONUNBUFFERED": "1",
        },
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = lines_of(process.stdout)
        next_line_with(lines, "scheduler started")
        assert wait_for(lambda: outage.accepted >= 1)
        time.sleep(0.5)  # a few passes reach the database
        # When the database goes away for a while
        outage.cut()
        # Then the scheduler says so and keeps running
        down = next_line_with(lines, "does not answer")
        assert f"the database at 127.0.0.1:{outage.port}/{real.database} does not answer" in down
        time.sleep(1)  # ten passes fail meanwhile, said once
        assert process.poll() is None
        # and says when it answers again
        outage.restore()
        next_line_with(lines, "the database answers again")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        outage.cut()
    assert process.returncode == 0, err
    assert "does not answer" not in out  # said once: nothing more after the first
    assert "Traceback" not in err
