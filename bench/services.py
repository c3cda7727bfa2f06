"""The processes the end-to-end, ingest and memory benchmarks run, each in its own process
so that their CPU shows up where it would in production:

- ``FakeSendGridProcess``: ``connectors.fakes.FakeSendGrid`` in a child process, recording
  when each recipient's email arrived (``time.time()``, comparable across processes) and
  nothing else, so that 100,000 emails do not fill its memory with bodies;
- ``ApiServer``: ``journeyline serve`` (uvicorn serving the real app);
- ``Workers``: ``dramatiq MODULE --processes P --threads T``, its log in a file;
- ``redis_for``: a dedicated Redis database, flushed before and after use.

``python -m bench.services fake-sendgrid`` runs the timed fake and prints its URL.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from connectors.fakes.sendgrid import FakeSendGrid, RecordedRequest
from engine.settings import WORKER_POLL_MS

REPO = Path(__file__).resolve().parent.parent
API_KEY = "SG.bench-key"
STATS_PATH = "/_bench/sent"
# ``python -m engine.cli`` would not see the sub-commands registered from other modules.
JOURNEYLINE = [sys.executable, "-c", "from engine.cli import main; main()"]


class TimedFakeSendGrid(FakeSendGrid):
    """FakeSendGrid that keeps only (arrival time, recipient) per accepted email.

    ``GET /_bench/sent?since=K`` answers ``{"count": N, "sent": [[t, email], ...]}`` with the
    records from index K on.
    """

    def __init__(self, *, api_key: str = API_KEY) -> None:
        super().__init__(api_key=api_key)
        self._sent: list[tuple[float, str]] = []

    def _respond(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes | None
    ) -> tuple[int, dict[str, str], Any, Any]:
        parts = urlsplit(path)
        if parts.path == STATS_PATH:
            since = int(parse_qs(parts.query).get("since", ["0"])[0])
            with self._lock:
                return 200, {}, {"count": len(self._sent), "sent": self._sent[since:]}, None
        return super()._respond(method, path, headers, raw)

    def _record(self, request: RecordedRequest) -> None:
        if request.status != 202 or not isinstance(request.body, dict):
            return
        now = time.time()
        recipients = [
            str(to.get("email"))
            for p in request.body.get("personalizations", [])
            for to in p.get("to", [])
        ]
        with self._lock:
            self._sent.extend((now, email) for email in recipients)


class FakeSendGridProcess:
    """The timed fake in a child process; ``url`` to point connectors at."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.services", "fake-sendgrid"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"fake SendGrid did not start: {line!r}")
        self.url = line
        self._client = httpx.Client(base_url=self.url, timeout=30)

    def count(self) -> int:
        return int(self._client.get(STATS_PATH, params={"since": 1 << 62}).json()["count"])

    def sent(self, since: int = 0) -> list[tuple[float, str]]:
        """Every (arrival time, recipient) from the ``since``-th on."""
        answer = self._client.get(STATS_PATH, params={"since": since}).json()
        return [(t, e) for t, e in answer["sent"]]

    def wait_for(self, n: int, *, timeout_s: float, poll_s: float = 0.05) -> int:
        """Wait until ``n`` emails arrived (or the timeout passed); return how many did."""
        deadline = time.monotonic() + timeout_s
        count = self.count()
        while count < n and time.monotonic() < deadline:
            time.sleep(poll_s)
            count = self.count()
        return count

    def close(self) -> None:
        if hasattr(self, "_client"):
            self._client.close()
        stop(self._proc)

    def __enter__(self) -> FakeSendGridProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop(proc: subprocess.Popen[Any], *, timeout_s: float = 20) -> None:
    """Terminate a child we started, and kill it if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_env(**values: str) -> dict[str, str]:
    """The environment of a child: ours, the repo on the path, and ``values``."""
    env = {**os.environ, **values}
    # What `journeyline worker` gives its Dramatiq processes (engine/cli.py), for every
    # worker a benchmark starts, ours and the baselines' alike.
    env.setdefault("dramatiq_worker_timeout", str(WORKER_POLL_MS))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class ApiServer:
    """``journeyline serve`` on a free port, waited for until ``/healthz`` answers."""

    def __init__(self, env: Mapping[str, str], *, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self._proc = subprocess.Popen(
            [*JOURNEYLINE, "serve", "--port", str(self.port)],
            cwd=REPO,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.url}/healthz", self._proc, log)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self) -> None:
        stop(self._proc)
        self._log.close()


class UvicornApp:
    """Any ASGI app (``module:attribute``) under uvicorn on a free port, like ``ApiServer``."""

    def __init__(self, app: str, env: Mapping[str, str], *, log: Path, health: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.url}{health}", self._proc, log)

    def close(self) -> None:
        stop(self._proc)
        self._log.close()


def _wait_http(url: str, proc: subprocess.Popen[Any], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


class Scheduler:
    """``journeyline scheduler``: re-dispatches retries, wake-ups and expired leases."""

    def __init__(self, env: Mapping[str, str], *, log: Path) -> None:
        self._log = log.open("w")
        self._proc = subprocess.Popen(
            [*JOURNEYLINE, "scheduler"],
            cwd=REPO,
            env={**env, "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def close(self) -> None:
        stop(self._proc)
        self._log.close()


class Workers:
    """``dramatiq MODULE --processes P --threads T``; its log goes to ``log``."""

    def __init__(
        self, module: str, env: Mapping[str, str], *, processes: int, threads: int, log: Path
    ) -> None:
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.started = time.time()  # before any of them can take a message
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                module,
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            cwd=REPO,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, processes: int, *, timeout_s: float = 120) -> float:
        """Wait until every worker process said it is ready; when that was (``time.time()``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.log_path.read_text().count("ready for action") >= processes:
                return time.time()
            time.sleep(0.05)
        raise RuntimeError(f"workers not ready after {timeout_s} s")

    def check_alive(self) -> None:
        if self._proc.poll() is not None:
            raise RuntimeError(
                f"workers exited with {self._proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
            )

    def close(self) -> str:
        """Stop the workers; return their log."""
        stop(self._proc, timeout_s=60)
        self._log.close()
        return self.log_path.read_text()


def redis_db_url(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@contextmanager
def redis_for(url: str) -> Iterator[str]:
    """A Redis database for one benchmark: flushed before and after."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def queue_backlog(url: str, queues: tuple[str, ...]) -> int:
    """Messages enqueued and not yet acknowledged on dramatiq's Redis ``queues``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(int(client.hlen(f"dramatiq:{q}.msgs")) for q in queues)
    finally:
        client.close()


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jl-bench-") as path:
        yield Path(path)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _serve_fake() -> None:
    fake = TimedFakeSendGrid().start()
    print(fake.url, flush=True)
    stopped = threading.Event()

    def stop_at_eof() -> None:  # the parent closes our stdin (or terminates us) to stop
        sys.stdin.read()
        stopped.set()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    try:
        stopped.wait()
    finally:
        fake.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["fake-sendgrid"]:
        sys.exit("usage: python -m bench.services fake-sendgrid")
    _serve_fake()


def contact_row(
    email: str,
    *,
    now: Any,
    stage: str = "awareness",
    attributes: dict[str, Any] | None = None,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """A ``contacts`` row for seeding by Core ``insert`` (a subscribed contact, score 0).

    A benchmark that sends the shipped workflows' marketing email on the wall clock passes
    ``timezone=midday_zone(now)``: their quiet hours would hold it in a night-time run.
    """
    return {
        "email": email,
        "timezone": timezone,
        "attributes": attributes or {},
        "external_ids": {},
        "stage": stage,
        "score": 0,
        "subscription_status": "subscribed",
        "version": 1,
        "stage_entered_at": now,
        "created_at": now,
        "updated_at": now,
    }


def spawn_workers(
    module: str, env: Mapping[str, str], logs: Sequence[IO[str]]
) -> list[subprocess.Popen[str]]:
    """One ``python -m <module> --worker`` process per log file, reporting on stdout."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", module, "--worker"],
            cwd=REPO,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        for log in logs
    ]
