"""The same pipeline on production parts: PostgreSQL, Redis or RabbitMQ, a real worker process.

These tests skip locally when a service is missing and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dramatiq import Worker
from sqlmodel import Session, select

from connectors import OutboxEmailConnector
from engine import Settings, SystemClock
from engine.db import make_engine
from engine.models import Action, Contact
from engine.runtime import Runtime
from engine.testing import midday_zone
from tests.support import stop_processes

pytestmark = pytest.mark.slow


def wait_until(check: Callable[[], bool], *, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _statuses(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(Action.status)).all())
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.redis
def test_postgres_and_redis_with_a_dramatiq_worker_process_send_each_email_once(
    pg_db_url: str, redis_url: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": pg_db_url,
        "JOURNEYLINE_BROKER_URL": redis_url,
        "JOURNEYLINE_EMAIL_CONNECTOR": "outbox",
        "JOURNEYLINE_OUTBOX_DIR": str(outbox),
    }
    settings = Settings(
        database_url=pg_db_url, broker_url=redis_url, email_connector="outbox", outbox_dir=outbox
    )
    producer = Runtime(settings, clock=SystemClock())
    # Given a real dramatiq worker process consuming from Redis
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "engine.worker", "--processes", "1", "--threads", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # When five leads start a trial, one of them sent twice by a retrying client
        # (in a zone where it is noon: quiet hours would hold the emails at night)
        emails = [f"lead{i}@example.com" for i in range(5)]
        zone = midday_zone()
        for address in emails:
            producer.track(
                address, "trial.started", idempotency_key=f"trial-{address}", timezone=zone
            )
        producer.track(emails[0], "trial.started", idempotency_key=f"trial-{emails[0]}")

        # Then every lead gets the welcome and the trial offer, once each
        expected = len(emails) * 2
        try:
            wait_until(
                lambda: _statuses(pg_db_url).count("sent") == expected,
                what=f"{expected} sent actions",
            )
        except AssertionError:
            worker.terminate()
            raise AssertionError(
                f"statuses {_statuses(pg_db_url)}; worker said:\n"
                f"{worker.communicate(timeout=30)[0][-4000:]}"
            ) from None
        files = sorted(outbox.glob("*.eml"))
        assert len(files) == expected
        with Session(producer.db) as session:
            stages = set(session.exec(select(Contact.stage)).all())
            action_ids = list(session.exec(select(Action.id)).all())
        assert stages == {"decision"}

        # And performing every action again (a redelivery) sends nothing more
        for action_id in action_ids:
            producer.jobs.perform_action.send(action_id)
        time.sleep(1.0)
        assert len(sorted(outbox.glob("*.eml"))) == expected
        assert _statuses(pg_db_url).count("sent") == expected
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
        producer.close()
    assert "Traceback" not in output, output


@pytest.mark.rabbitmq
def test_rabbitmq_carries_the_same_jobs(amqp_url: str, sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=sqlite_url,
        broker_url=amqp_url,
        email_connector="outbox",
        outbox_dir=tmp_path / "outbox",
    )
    runtime = Runtime(
        settings, clock=SystemClock(), email=OutboxEmailConnector(tmp_path / "outbox")
    )
    runtime.broker.flush_all()
    worker = Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        runtime.track("rabbit@example.com", "page.viewed", timezone=midday_zone())
        wait_until(lambda: _statuses(sqlite_url) == ["sent"], what="the welcome email")
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    finally:
        worker.stop()
        runtime.close()


FLOWS = """
from datetime import timedelta
from engine import Workflow, on_event, send_email, wait
from workflows.rules import RULES
from workflows.stages import JOURNEY

WORKFLOWS = [
    Workflow("it_drip", trigger=on_event("demo.requested"), steps=[
        send_email("welcome", id="first"),
        wait(timedelta(seconds=2)),
        send_email("guide", id="second"),
    ]),
]
"""


@pytest.mark.postgres
@pytest.mark.redis
def test_two_workers_and_two_schedulers_send_each_email_exactly_once(
    pg_db_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a workflow with a short wait, two worker processes and two schedulers
    (tmp_path / "it_flows").mkdir()
    (tmp_path / "it_flows" / "__init__.py").write_text(FLOWS)
    outbox = tmp_path / "outbox"
    repo = Path(__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo)]),
        "JOURNEYLINE_DATABASE_URL": pg_db_url,
        "JOURNEYLINE_BROKER_URL": redis_url,
        "JOURNEYLINE_WORKFLOWS": "it_flows",
        "JOURNEYLINE_TEMPLATES_DIR": str(repo / "workflows" / "templates"),
        "JOURNEYLINE_OUTBOX_DIR": str(outbox),
        "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "JOURNEYLINE_SCHEDULER_BATCH_SIZE": "5",
    }
    cli = [sys.executable, "-m", "engine.cli"]
    processes = [
        subprocess.Popen(
            [*cli, "worker", "--processes", "2", "--threads", "4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        *(
            subprocess.Popen(
                [*cli, "scheduler"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ),
    ]
    sys.path.insert(0, str(tmp_path))
    try:
        settings = Settings(
            database_url=pg_db_url,
            broker_url=redis_url,
            workflows="it_flows",
            templates_dir=repo / "workflows" / "templates",
            outbox_dir=outbox,
        )
        producer = Runtime(settings, clock=SystemClock())
        # When 30 leads ask for a demo, some of them twice
        for i in range(30):
            producer.track(f"it{i}@example.com", "demo.requested", idempotency_key=f"d{i}")
        for i in range(0, 30, 3):
            producer.track(f"it{i}@example.com", "demo.requested", idempotency_key=f"d{i}")
        # Then each gets both emails, once: 60 files, 60 sent actions, no more
        try:
            wait_until(
                lambda: _statuses(pg_db_url).count("sent") == 60,
                timeout_s=90,
                what="60 sent actions",
            )
        except AssertionError:
            raise AssertionError(f"statuses: {sorted(_statuses(pg_db_url))}") from None
        time.sleep(1.5)  # give a double delivery, were there one, the time to show up
        assert len(list(outbox.glob("*.eml"))) == 60
        assert _statuses(pg_db_url).count("sent") == 60
        producer.close()
    finally:
        sys.path.remove(str(tmp_path))
        outputs = stop_processes(processes)
    for output in outputs:
        assert "Traceback" not in output, output
