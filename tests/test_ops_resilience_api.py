"""What the HTTP service says when its services are in trouble: JSON errors (503 with
``Retry-After`` for a database away or behind the code, 500 for the rest), readiness that
notices an old schema, and metrics of the broker and its dead letters. Over a real socket,
as tests/test_api.py; Given / When / Then."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dramatiq import Actor, Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import engine.api_keys  # noqa: F401  (registers the api_keys table before create_all)
from connectors import RecordingEmailConnector
from engine import Settings, migrations
from engine.api import create_app, health
from engine.api.errors import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE
from engine.api.metrics import BrokerCollector
from engine.api_keys import create_key
from engine.broker import build_broker, probe_broker
from engine.db import transaction
from engine.db_errors import SCHEMA_BEHIND_MESSAGE
from engine.runtime import Runtime
from tests.support import make_runtime, reset_postgres
from tests.test_api import LiveServer
from tests.test_broadcast import add_contacts

OLD_REVISION = "0007"  # before events.attributes_before, which a contact's timeline reads
WELL_FORMED_KEY = "jl_abcdef12_" + "x" * 32


@dataclass
class Served:
    runtime: Runtime
    app: FastAPI
    http: httpx.Client


@contextmanager
def served(runtime: Runtime, app: FastAPI | None = None) -> Iterator[Served]:
    app = app or create_app(runtime)
    try:
        with LiveServer(app) as base, httpx.Client(base_url=base, timeout=30) as http:
            yield Served(runtime, app, http)
    finally:
        runtime.close()


class Recording(logging.Handler):
    """Every record of a logger, whether or not it propagates (uvicorn's do not)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Recording:
        self.level_before = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)


def event(email: str = "ana@example.com") -> dict[str, Any]:
    return {"email": email, "type": "page.viewed"}


def key_for(runtime: Runtime) -> str:
    with transaction(runtime.db) as session:
        return create_key(session, "ops", ["events:write", "contacts:read"], runtime.clock.now())[1]


# --- a database away, or behind the code ----------------------------------------------------


def test_a_database_that_cannot_be_reached_is_a_json_503_with_retry_after() -> None:
    # Given a service whose PostgreSQL does not answer (nothing listens on its port)
    runtime, _, _ = make_runtime(
        "postgresql+psycopg://postgres@127.0.0.1:1/journeyline", create_schema=False
    )
    auth = {"Authorization": f"Bearer {WELL_FORMED_KEY}"}
    with (
        Recording("engine.api.errors") as said,
        Recording("uvicorn.error") as server,
        served(runtime) as api,
    ):
        # When clients call (the key's check is the first thing to need the database)
        posted = api.http.post("/v1/events", json=event(), headers=auth)
        read = api.http.get("/v1/contacts/ana@example.com", headers=auth)
    # Then each is told, in the documented shape, to come back shortly
    for response in (posted, read):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert response.json() == {"error": {"message": UNAVAILABLE_MESSAGE, "field": None}}
    # and the log says why in one line, once for both, without a traceback
    (line,) = said.records
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith(
        "POST /v1/events answered 503: the database is unavailable (OperationalError: "
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection '
        "refused"
    )
    assert line.exc_info is None
    assert server.records == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_schema_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to an older revision than the code's."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/old.db"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url, create_tables=False)
    migrations.upgrade(url, OLD_REVISION)
    return url


def test_a_schema_older_than_the_code_is_a_503_saying_to_upgrade(old_schema_url: str) -> None:
    # Given a service on a database nobody upgraded for this version
    runtime, _, _ = make_runtime(old_schema_url, create_schema=False)
    auth = {"Authorization": f"Bearer {key_for(runtime)}"}
    with Recording("engine.api.errors") as said, served(runtime) as api:
        # (ana in it already: an event for a new address also reads a table it lacks)
        add_contacts(runtime, 1, prefix="ana", stage="awareness")
        api.http.post("/v1/events", json=event("ana0@example.com"), headers=auth)
        # When a contact is read (its timeline reads a column this schema lacks), and
        # readiness is asked
        read = api.http.get("/v1/contacts/ana0@example.com", headers=auth)
        ready = api.http.get("/readyz")
        newcomer = api.http.post("/v1/events", json=event("bo@example.com"), headers=auth)
    # Then the client is told the schema is behind, and readiness names the revisions
    assert newcomer.status_code == 503, newcomer.text
    assert read.status_code == 503, read.text
    assert read.headers["retry-after"] == "30"
    assert read.json() == {"error": {"message": SCHEMA_BEHIND_MESSAGE, "field": None}}
    assert SCHEMA_BEHIND_MESSAGE == (
        "the database schema is older than this version: run journeyline db upgrade"
    )
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == (
        f"the database schema ({OLD_REVISION}) is older than this version "
        f"({migrations.head()}): run journeyline db upgrade"
    )
    # and the log names the missing column, once, without a traceback
    (line,) = [r for r in said.records if r.levelno == logging.ERROR]
    assert "GET /v1/contacts/{email} answered 503: the database schema is older" in (
        line.getMessage()
    )
    assert "hubspot_id" in line.getMessage()  # the first column the read found missing
    assert line.exc_info is None


def test_anything_else_unexpected_is_a_json_500_logged_once_with_its_traceback(
    sqlite_url: str,
) -> None:
    # Given routes that fail in ways nobody planned for
    runtime, _, _ = make_runtime(sqlite_url)
    app = create_app(runtime)

    def bug() -> None:
        raise RuntimeError("secret internals /srv/jl/config.py")

    def constraint() -> None:
        raise IntegrityError("INSERT INTO x", {}, Exception("duplicate key (secret)"))

    app.add_api_route("/test/bug", bug)
    app.add_api_route("/test/constraint", constraint)
    with (
        Recording("engine.api.errors") as said,
        Recording("uvicorn.error") as server,
        Recording("engine.api.access_log") as access,
        served(runtime, app) as api,
    ):
        # When they are called
        answers = [api.http.get("/test/bug"), api.http.get("/test/constraint")]
        metrics = api.http.get("/metrics").text
    # Then each answer is a JSON 500 in the documented shape, with nothing of the internals
    for response in answers:
        assert response.status_code == 500
        assert response.json() == {"error": {"message": INTERNAL_MESSAGE, "field": None}}
        assert "secret" not in response.text
    # and each traceback was logged once, by us, not again by the server
    assert [r.getMessage() for r in said.records] == [
        "GET /test/bug answered 500: unexpected error",
        "GET /test/constraint answered 500: unexpected error",
    ]
    assert all(r.exc_info is not None for r in said.records)
    assert server.records == []
    # and the access log and the metrics counted them as the 500s they were
    assert "GET /test/bug 500" in access.records[0].getMessage()
    assert 'route="/test/bug",status="500"} 1.0' in metrics


# --- readiness and the schema's revision -----------------------------------------------------


def test_readiness_compares_the_schema_with_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READINESS_MAX_AGE_SECONDS", 0.0)  # each request checks
    url = f"sqlite:///{tmp_path}/jl.db"
    migrations.upgrade(url)
    runtime, _, _ = make_runtime(url, create_schema=False)
    with served(runtime) as api:
        # Given a database at the code's head: ready
        assert api.http.get("/readyz").json() == {
            "status": "ready",
            "checks": {"database": "ok", "broker": "ok"},
        }
        # When a newer version migrated it first (a rolling deploy): still ready, for this
        # process serves until it is replaced
        with runtime.db.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
        assert api.http.get("/readyz").status_code == 200
        # When it has no revision at all: not ready, and why
        with runtime.db.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        never = api.http.get("/readyz")
    assert never.status_code == 503
    assert never.json() == {
        "status": "unavailable",
        "checks": {
            "database": "the database was never migrated: run journeyline db upgrade",
            "broker": "ok",
        },
    }


# --- the broker and its dead letters in /metrics ----------------------------------------------


def test_metrics_say_the_in_process_broker_answers_and_has_no_dead_letters(
    sqlite_url: str,
) -> None:
    runtime, _, _ = make_runtime(sqlite_url)
    with served(runtime) as api:
        scraped = api.http.get("/metrics").text
    assert "journeyline_broker_up 1.0" in scraped
    for queue in ("journeyline", "journeyline_transactional", "journeyline_scheduler"):
        assert f'journeyline_dead_letter_messages{{queue="{queue}"}} 0.0' in scraped


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung broker)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_broker_that_is_down_or_hung_is_scraped_as_down_within_the_timeout(scheme: str) -> None:
    with silent_server() as hung:
        for port in (1, hung):  # refused at once; accepted, then nothing
            broker = build_broker(
                f"redis://127.0.0.1:{port}/13"
                if scheme == "redis"
                else f"amqp://guest:guest@127.0.0.1:{port}/%2F"
            )
            try:
                started = time.monotonic()
                families = list(BrokerCollector(broker, timeout_seconds=0.3).collect())
                took = time.monotonic() - started
            finally:
                broker.close()
            assert [(f.name, [s.value for s in f.samples]) for f in families][:1] == [
                ("journeyline_broker_up", [0.0])
            ]
            assert "journeyline_dead_letter_messages" not in {f.name for f in families}
            assert took < 2, took


def failing_actor(broker: Any, queue: str) -> Actor[[], None]:
    def fails() -> None:
        raise RuntimeError("fails on purpose: a test's dead letter")

    return Actor(
        fails, broker=broker, actor_name=f"fails_{queue}", queue_name=queue, priority=0,
        options={"max_retries": 0},
    )  # fmt: skip


def dead_letter_one(broker: Any, queue: str) -> None:
    """Run a job that fails, without retries, on a worker: Dramatiq dead-letters it."""
    actor = failing_actor(broker, queue)
    worker = Worker(broker, queues={queue}, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        actor.send()
        deadline = time.monotonic() + 30
        while probe_broker(broker, queues=[queue])[queue] < 1:
            assert time.monotonic() < deadline, "the job was not dead-lettered"
            time.sleep(0.05)
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.redis
def test_metrics_count_what_dramatiq_dead_lettered_on_redis(
    sqlite_url: str, redis_url: str
) -> None:
    import redis

    # Given a job that failed out of its retries on Redis (a namespace of its own)
    namespace = f"jl-test-{secrets.token_hex(4)}"
    queue = f"jl_test_{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_url)
    runtime = Runtime(
        Settings(database_url=sqlite_url, broker_url=redis_url),
        email=RecordingEmailConnector(),
        broker=RedisBroker(url=redis_url, namespace=namespace),
    )
    try:
        dead_letter_one(runtime.broker, queue)
        assert client.zcard(f"{namespace}:{queue}.XQ") == 1  # where Dramatiq keeps it
        # When Prometheus scrapes
        with served(runtime) as api:
            scraped = api.http.get("/metrics").text
    finally:
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.close()
    # Then it sees the broker up and the dead letter in its queue, the others empty
    assert "journeyline_broker_up 1.0" in scraped
    assert f'journeyline_dead_letter_messages{{queue="{queue}"}} 1.0' in scraped
    assert 'journeyline_dead_letter_messages{queue="journeyline"} 0.0' in scraped


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_the_probe_counts_what_dramatiq_dead_lettered_on_rabbitmq(amqp_url: str) -> None:
    import pika

    # Given a job that failed out of its retries on RabbitMQ (queues of its own)
    queue = f"jl_test_{secrets.token_hex(4)}"
    broker = RabbitmqBroker(url=amqp_url)
    try:
        dead_letter_one(broker, queue)
        # When the broker is probed, for that queue and one never used
        counts = probe_broker(broker, queues=[queue, f"{queue}_unused"])
        families = {f.name: f for f in BrokerCollector(broker).collect()}
    finally:
        broker.close()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()
    # Then the dead letter is counted in its queue, and a queue never made has none
    assert counts == {queue: 1, f"{queue}_unused": 0}
    assert [s.value for s in families["journeyline_broker_up"].samples] == [1.0]
    dead = {
        s.labels["queue"]: s.value for s in families["journeyline_dead_letter_messages"].samples
    }
    assert dead == {queue: 1.0}


def test_a_flood_of_readiness_requests_checks_the_parts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a broker whose check takes a while
    calls: list[float] = []

    def slow_broker(_broker: object) -> str:
        calls.append(time.monotonic())
        time.sleep(0.5)
        return "ok"

    monkeypatch.setattr(health, "check_broker", slow_broker)
    url = f"sqlite:///{tmp_path}/jl.db"
    migrations.upgrade(url)
    runtime, _, _ = make_runtime(url, create_schema=False)
    # When twenty requests come at once
    with served(runtime) as api, ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: api.http.get("/readyz").status_code, range(20)))
    # Then all are answered, from one check of the parts
    assert answers == [200] * 20
    assert len(calls) == 1
