"""On-call probe of the CLI: what a command says when the broker is RabbitMQ and down, and
when the jobs it started on stub:// never finish (a poison action)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from dramatiq.errors import QueueJoinTimeout

from engine.models import Event, EventStatus
from engine.runtime import Runtime
from tests.cli_support import cli_env, invoke

AMQP_DOWN = "amqp://guest:guest@127.0.0.1:1/"  # port 1: nothing listens


@pytest.fixture(autouse=True)
def pika_level_restored() -> Any:
    """The CLI quiets pika for the process: give the next test pika as it was."""
    pika = logging.getLogger("pika")
    before = pika.level
    yield
    pika.setLevel(before)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return cli_env(tmp_path, monkeypatch, columns=200)


def test_track_with_rabbitmq_down_says_it_in_one_line_without_pika_tracebacks(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given RabbitMQ does not answer
    # When an event is tracked
    caplog.set_level(logging.WARNING)
    tracked = invoke(
        "--database-url", env["url"], "--broker-url", AMQP_DOWN,
        "track", "ana@example.com", "page.viewed",
    )  # fmt: skip

    # Then the command's own warning says it (exit 3), and pika's connection errors, a
    # dozen records with tracebacks per attempt, are not printed before it
    assert tracked.exit_code == 3, tracked.output
    assert "did not take the job" in " ".join(tracked.output.split())
    pika_records = [r for r in caplog.records if r.name.startswith("pika")]
    assert pika_records == [], [r.getMessage() for r in pika_records]


def test_track_whose_jobs_never_finish_on_stub_ends_in_one_line_and_exit_3(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the jobs a command starts on stub:// do not finish (an action whose template
    # raises is retried with backoff until the drain gives up)
    def never_finishes(self: Runtime, *, timeout_ms: int = 60_000) -> None:
        raise QueueJoinTimeout("timed out after 60.00 seconds")

    monkeypatch.setattr(Runtime, "drain", never_finishes)

    # When an event is tracked
    tracked = invoke("--database-url", env["url"], "track", "ana@example.com", "page.viewed")

    # Then the command says what happened and what to do, with exit 3 (stored, not handed
    # on), not 1 (not found) and a traceback
    assert tracked.exit_code == 3, tracked.output
    assert tracked.exception is None or isinstance(tracked.exception, SystemExit)
    said = " ".join(tracked.output.split())
    assert "did not finish in time" in said
    assert "journeyline scheduler --once" in said
    assert "Traceback" not in tracked.output

    # And the event is kept
    from sqlmodel import Session, create_engine, select

    db = create_engine(env["url"])
    try:
        with Session(db) as session:
            statuses = session.exec(select(Event.type, Event.status)).all()
    finally:
        db.dispose()
    assert ("page.viewed", EventStatus.PENDING) in statuses or (
        "page.viewed",
        EventStatus.PROCESSED,
    ) in statuses


def test_db_upgrade_on_a_database_a_newer_version_migrated_says_so_and_is_done(
    env: dict[str, Any],
) -> None:
    # Given a database a newer Journeyline migrated (a rollback, a rolling deploy's old image)
    from sqlalchemy import create_engine, text

    db = create_engine(env["url"])
    try:
        with db.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    finally:
        db.dispose()

    # When this version's one-shot migration runs (compose starts nothing until it exits 0)
    upgraded = invoke("--database-url", env["url"], "db", "upgrade")

    # Then it says the database is ahead, what that means, and succeeds: nothing to do
    said = " ".join(upgraded.output.split())
    assert upgraded.exit_code == 0, upgraded.output
    assert "is at 0999, newer than this version's newest" in said
    assert "nothing to do" in said

    # And asked for a given revision, it refuses in one line naming why (exit 2)
    pinned = invoke("--database-url", env["url"], "db", "upgrade", "--revision", "0005")
    assert pinned.exit_code == 2, pinned.output
    assert "it never goes back, so not to '0005'" in " ".join(pinned.output.split())
    assert "Traceback" not in pinned.output


@pytest.mark.parametrize("provider", ["sendgrid", "hubspot"])
def test_a_fake_on_a_port_in_use_says_so_in_one_line(provider: str) -> None:
    # Given a port something already listens on
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    try:
        # When the fake is started on it
        started = invoke("fake", provider, "--port", port)
    finally:
        taken.close()

    # Then it says why it cannot start and what to do, exit 2, no traceback
    said = " ".join(started.output.split())
    assert started.exit_code == 2, started.output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in said
    assert "choose another --port" in said
    assert "Traceback" not in started.output


def test_a_demo_output_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    # Given --output names a file, not a folder (a tired tab-completion)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")

    # When the demo is run into it
    ran = invoke("demo", "--contacts", "1", "--days", "1", "--output", str(notes))

    # Then it says why and what to do, exit 2, no traceback, and the file is untouched
    said = " ".join(ran.output.split())
    assert ran.exit_code == 2, ran.output
    assert "Not a directory; choose another --output" in said
    assert "Traceback" not in ran.output
    assert notes.read_text() == "mine\n"
