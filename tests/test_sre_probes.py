"""What an operator's probes and scrapes rely on: liveness answers while requests wait for a
hung database, readiness checks its parts at once, and every label of ``/metrics`` has a
bounded set of values, every status a series even at 0. Given / When / Then."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from engine.api import create_app, health, metrics
from engine.models import ActionStatus, EventStatus
from engine.stages import lifecycle_journey
from tests.support import make_runtime

WAIT = 30.0
"""How long a test waits for what must happen before calling it stuck (never reached when
the code is right)."""


@pytest.fixture
def app(sqlite_url: str) -> Iterator[FastAPI]:
    runtime, _clock, _email = make_runtime(sqlite_url)
    try:
        yield create_app(runtime)
    finally:
        runtime.close()


def scrape(app: FastAPI, *requests: tuple[str, str]) -> dict[str, list[dict[str, str]]]:
    """The requests, then ``/metrics``: each family's samples' labels, by sample name."""

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://jl") as http:
            for method, url in requests:
                await http.request(method, url)
            answer = await http.get("/metrics")
            assert answer.status_code == 200
            return answer.text

    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(asyncio.run(run())):
        for sample in family.samples:
            found.setdefault(sample.name, []).append({**sample.labels, "value": sample.value})
    return found


def test_a_made_up_http_method_is_counted_as_other_not_by_its_name(app: FastAPI) -> None:
    # Given a caller without a key inventing methods (the server accepts any token)
    requests = [(f"FOO{n}", "/healthz") for n in range(5)]

    # When it sends them, then /metrics is scraped
    found = scrape(app, *requests, ("GET", "/healthz"))

    # Then they share one series, "other", beside the real GET: no series per invention
    methods = {s["method"] for s in found["journeyline_http_requests_total"]}
    assert methods == {"GET", "other"}
    other = [s for s in found["journeyline_http_requests_total"] if s["method"] == "other"]
    assert [(s["route"], s["status"], s["value"]) for s in other] == [("/healthz", "405", 5.0)]
    buckets = {s["method"] for s in found["journeyline_http_request_duration_seconds_bucket"]}
    assert buckets == {"GET", "other"}


def test_every_event_and_action_status_has_a_series_even_at_zero(app: FastAPI) -> None:
    # Given an empty database

    # When /metrics is scraped
    found = scrape(app)

    # Then each status of events and actions is there, at 0 (a dashboard shows 0 failed,
    # not "no data", and an alert comparing with an hour ago has something to compare)
    events = {s["status"]: s["value"] for s in found["journeyline_events"]}
    actions = {s["status"]: s["value"] for s in found["journeyline_actions"]}
    assert events == {str(status): 0.0 for status in EventStatus}
    assert actions == {str(status): 0.0 for status in ActionStatus}
    # and so is each stage of the journey, with no contact in it yet
    contacts = {s["stage"]: s["value"] for s in found["journeyline_contacts"]}
    assert contacts == {stage: 0.0 for stage in lifecycle_journey().stage_names}


def test_liveness_answers_while_requests_waiting_for_the_database_fill_the_thread_pool(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database that does not answer, and a request holding the pool's only thread
    # waiting for it (as track requests fill a pool of 40 in an outage)
    checking = threading.Event()
    release = threading.Event()

    def hung_database(db: object) -> str:
        checking.set()
        assert release.wait(WAIT), "the test never let the database answer"
        return "ok"

    monkeypatch.setattr(health, "check_database", hung_database)

    async def run() -> int:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://jl") as http:
            waiting = asyncio.create_task(http.get("/readyz"))
            assert await asyncio.to_thread(checking.wait, WAIT)
            try:
                # When the liveness probe comes
                alive = await asyncio.wait_for(http.get("/healthz"), WAIT)
            finally:
                release.set()
                await waiting
            return alive.status_code

    # Then it is answered at once, not queued behind the database
    assert asyncio.run(run()) == 200


def test_readiness_checks_the_database_and_the_broker_at_once(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given parts that each answer only once the other one is being checked too (as a hung
    # database and a hung broker each take their whole timeout)
    both = threading.Barrier(2, timeout=WAIT)

    def part(_: object) -> str:
        try:
            both.wait()
        except threading.BrokenBarrierError:
            return "failed: checked one after the other"
        return "ok"

    monkeypatch.setattr(health, "check_database", part)
    monkeypatch.setattr(health, "check_broker", part)

    # When readiness is asked
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://jl") as http:
            return await http.get("/readyz")

    answer = asyncio.run(run())

    # Then both were checked at the same time: the answer takes one timeout, not the sum
    assert answer.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    assert answer.status_code == 200


def test_service_logs_off_a_terminal_are_one_plain_line_a_record_with_its_time() -> None:
    # Given the CLI's logging set up in a process whose stderr is a pipe (a service's log)
    code = (
        "import logging, engine.cli as cli;"
        "logging.basicConfig(level=logging.WARNING, **cli._log_format());"
        "log = logging.getLogger('journeyline.probe');"
        "log.warning('a record longer than any terminal: ' + 'x' * 200);"
        "log.warning('a second record in the same second')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    # Then each record is one line, each with its time, level and logger (Rich wrapped the
    # first at 80 columns and left the second's repeated time out)
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING journeyline.probe ", line)


def test_counting_rows_slowly_is_not_a_database_down_and_its_counts_come_later(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database whose backlog queries answer at once, but whose counts by status
    # (whole tables: seconds at tens of millions of events) take longer than the timeout
    runtime, _clock, _email = make_runtime(sqlite_url)
    collector = metrics.DatabaseCollector(runtime.db, timeout_seconds=0.2)
    counting = threading.Event()
    release = threading.Event()
    real_count = collector._count_tallies

    def slow_count() -> None:
        counting.set()
        assert release.wait(WAIT), "the test never let the count finish"
        real_count()

    monkeypatch.setattr(collector, "_count_tallies", slow_count)
    try:
        # When it is scraped while the count runs
        families = {family.name: family for family in collector.collect()}

        # Then the database is up, the backlog is there, and no count is made up
        assert counting.is_set()
        assert families["journeyline_database_up"].samples[0].value == 1
        assert "journeyline_actions_due" in families
        assert "journeyline_events" not in families

        # And once the count is done, the next scrape shows it without counting again
        release.set()
        deadline = time.monotonic() + WAIT
        while collector._tallies is None and time.monotonic() < deadline:
            time.sleep(0.01)
        counting.clear()
        families = {family.name: family for family in collector.collect()}
        assert not counting.is_set()
        assert {s.labels["status"] for s in families["journeyline_events"].samples} == {
            str(status) for status in EventStatus
        }
    finally:
        release.set()
        runtime.close()
