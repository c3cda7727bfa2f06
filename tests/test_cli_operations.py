"""What the on-call engineer meets: a broker that is down, a scheduler that says what it
does, and failed actions sent again once their cause is fixed (``journeyline actions retry``).
Driven through typer's CliRunner on real SQLite files; the broker that is down is a Redis URL
nobody listens on, so no Redis server is needed."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.exceptions
from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker
from rich.console import Console
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from typer.testing import Result

import engine.cli_scheduler
from engine import Settings, VirtualClock
from engine.cli_scheduler import scheduler_loop
from engine.db import make_engine
from engine.models import Action, ActionStatus, Contact, Event, EventStatus
from engine.runtime import Tick
from engine.testing import midday_zone
from tests.cli_support import cli_env, invoke

BROKER_DOWN = "redis://127.0.0.1:1/12"  # nothing listens on port 1: connection refused


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A migrated SQLite database, stub broker and an outbox folder, all under tmp_path."""
    return cli_env(tmp_path, monkeypatch, columns=250)


def flat(result: Result) -> str:
    """The output on one line, table borders and wrapping gone."""
    return " ".join(result.output.replace("│", " ").split())


@pytest.fixture
def db(env: dict[str, Any]) -> Iterator[Engine]:
    """The test's database, for a look or a change between commands: each in a session of
    its own, closed at once (a SQLite transaction left open would block the commands)."""
    engine = make_engine(env["url"])
    yield engine
    engine.dispose()


def leases_run_out(db: Engine) -> None:
    """As if the leases of every pending event and action had run out (minutes later)."""
    past = datetime(2000, 1, 1, tzinfo=UTC)
    with Session(db) as session:
        session.exec(
            update(Event).where(col(Event.status) == EventStatus.PENDING).values(lease_until=past)
        )
        session.exec(
            update(Action)
            .where(col(Action.status) == ActionStatus.PENDING)
            .values(lease_until=past)
        )
        session.commit()


def the_action_of(db: Engine, address: str) -> Action:
    with Session(db) as session:
        return session.exec(
            select(Action)
            .join(Contact, col(Contact.id) == col(Action.contact_id))
            .where(Contact.email == address)
        ).one()


def the_event(db: Engine, event_id: int) -> Event:
    with Session(db) as session:
        found = session.get(Event, event_id)
        assert found is not None
        return found


def emails_to(outbox: Path, address: str) -> int:
    return sum(
        email.message_from_bytes(path.read_bytes())["To"] == address
        for path in outbox.glob("*.eml")
    )


# --- the broker is down -----------------------------------------------------------------------


def test_track_with_the_broker_down_keeps_the_event_and_says_when_it_goes_on(
    env: dict[str, Any], db: Engine
) -> None:
    url, zone = env["url"], midday_zone()
    # When an event is tracked while the broker refuses connections
    tracked = invoke(
        "--database-url", url, "--broker-url", BROKER_DOWN,
        "track", "ana@example.com", "page.viewed", "--timezone", zone,
    )  # fmt: skip

    # Then it is stored, pending, and the command says so, why the workers do not have it
    # and when a scheduler pass hands it to them: exit 3, no traceback
    assert tracked.exit_code == 3, tracked.output
    said = flat(tracked)
    assert "event 2 for contact 1: recorded" in said
    assert "event 2 is recorded (pending) but was not handed to the workers" in said
    assert "redis://127.0.0.1:1/12 did not take the job (ConnectionError:" in said
    assert "Connection refused" in said
    event = the_event(db, 2)
    assert event.status == EventStatus.PENDING
    assert event.lease_until is not None
    assert f"first scheduler pass after {event.lease_until:%Y-%m-%d %H:%M:%S} UTC" in said
    assert "5-minute dispatch lease" in said
    assert "Traceback" not in tracked.output

    # And a scheduler pass with the broker still down says the same, with exit 3
    leases_run_out(db)
    once = invoke("--database-url", url, "--broker-url", BROKER_DOWN, "scheduler", "--once")
    assert once.exit_code == 3, once.output
    assert "did not take the job" in flat(once)
    assert "once its lease runs out (300 s, JOURNEYLINE_ACTION_LEASE_SECONDS)" in flat(once)
    assert "Traceback" not in once.output

    # And once the broker answers, a pass after the lease processes it: nothing was lost
    leases_run_out(db)
    back = invoke("--database-url", url, "scheduler", "--once")
    assert back.exit_code == 0, back.output
    assert "1 contacts and 0 actions re-dispatched" in back.output
    assert the_event(db, 2).status == EventStatus.PROCESSED
    assert emails_to(env["outbox"], "ana@example.com") == 1


def test_starting_the_periodic_scheduler_with_the_broker_down_says_nothing_started(
    env: dict[str, Any],
) -> None:
    result = invoke(
        "--database-url", env["url"], "--broker-url", BROKER_DOWN, "scheduler", "--periodic"
    )
    assert result.exit_code == 3, result.output
    assert "scheduler_tick was not started" in flat(result)
    assert "Traceback" not in result.output


# --- the scheduler says what it does -----------------------------------------------------------


@dataclass
class ScriptedRuntime:
    """What ``scheduler_loop`` uses of a runtime: settings, a clock, a broker it pings when
    an empty pass follows a refusal (the in-process one, which always answers), and ``tick``
    (here returning, or raising, what the script says, one pass after another)."""

    settings: Settings
    script: list[Tick | Exception]
    broker: Broker = field(default_factory=StubBroker)
    clock: VirtualClock = field(
        default_factory=lambda: VirtualClock(datetime(2025, 3, 1, tzinfo=UTC))
    )

    def tick(self) -> Tick:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def test_the_scheduler_says_when_it_starts_works_and_stops_and_is_quiet_in_between() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://jl:hunter2@db.internal:5432/journeyline",
        broker_url="redis://:s3cret@redis.internal:6379/0",
        scheduler_interval_seconds=5,
    )
    down = redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
    runtime = ScriptedRuntime(
        settings,
        [
            Tick(),  # 10:00:00 nothing due: quiet
            Tick(contacts=[7], actions=[1, 2]),  # 10:00:05
            Tick(),
            down,  # 10:00:15 the broker refuses the pass's jobs
            down,  # still: not said again
            Tick(),  # 10:00:25 it answers again
            *[Tick()] * 200,  # quiet for 1,000 s: one heartbeat at 15 minutes
        ],
    )
    runtime.clock.set(datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    out = Console(record=True, width=300)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a pass every interval, then Ctrl-C
        slept.append(seconds)
        if not runtime.script:
            raise KeyboardInterrupt
        runtime.clock.advance(timedelta(seconds=seconds))

    # When the scheduler runs until Ctrl-C
    scheduler_loop(runtime, out=out, sleep=sleep)  # type: ignore[arg-type]

    # Then it says where it works (no passwords), each pass that found work, the broker's
    # trouble once and its return, a heartbeat, and that it stopped; nothing for idle passes
    lines = out.export_text().splitlines()
    assert lines == [
        "scheduler started: database db.internal:5432/journeyline, broker "
        "redis://:***@redis.internal:6379/0, a pass every 5 s (Ctrl-C to stop)",
        "2025-03-01 10:00:05 UTC 0 enrollments woken, 1 contacts and 2 actions re-dispatched, "
        "0 schedule slots fired",
        "2025-03-01 10:00:15 UTC the broker redis://:***@redis.internal:6379/0 did not take the "
        "job (ConnectionError: Error 111 connecting. Connection refused): what this pass "
        "claimed is handed out again once its lease runs out (300 s); trying every pass",
        "2025-03-01 10:00:25 UTC the broker takes jobs again",
        "2025-03-01 10:15:25 UTC running: 180 passes since 10:00:25 found nothing due",
        "scheduler stopped (Ctrl-C) after 206 passes",
    ]
    assert set(slept) == {5}


def test_the_scheduler_command_prints_its_start_and_stop(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.cli_scheduler, "time", SimpleNamespace(sleep=interrupt))
    result = invoke("--database-url", env["url"], "scheduler")
    assert result.exit_code == 0, result.output
    said = flat(result)
    assert f"scheduler started: database SQLite file {env['tmp'] / 'cli.db'}" in said
    assert "a pass every 5 s" in said
    assert "scheduler stopped (Ctrl-C) after 1 passes" in said


def test_sigterm_during_a_pass_lets_it_finish_then_stops_with_its_line() -> None:
    # Given a scheduler whose second pass is under way when SIGTERM (docker stop) arrives
    class Terminated(ScriptedRuntime):
        def tick(self) -> Tick:
            if len(self.script) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # handled before tick() returns
            return super().tick()

    runtime = Terminated(Settings(), [Tick(), Tick(contacts=[7], actions=[1, 2]), Tick()])
    runtime.clock.set(datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    out = Console(record=True, width=300)
    outside: list[int] = []

    def ours(signum: int, frame: object) -> None:  # the process's own handler, meanwhile
        outside.append(signum)

    def sleep(seconds: float) -> None:
        runtime.clock.advance(seconds=seconds)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        # When the scheduler runs
        scheduler_loop(runtime, out=out, sleep=sleep)  # type: ignore[arg-type]
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # Then that pass finished (its rows were queued and said), no other began, and it said
    # that it stopped; the signal was the loop's to handle, and the process's handler is back
    assert out.export_text().splitlines()[1:] == [
        "2025-03-01 10:00:05 UTC 0 enrollments woken, 1 contacts and 2 actions re-dispatched, "
        "0 schedule slots fired",
        "scheduler stopped (SIGTERM) after 2 passes",
    ]
    assert outside == []
    assert handler_after is ours
    assert runtime.script == [Tick()]


@pytest.mark.slow
def test_the_scheduler_command_stops_on_sigterm_with_its_line_and_exit_0(
    env: dict[str, Any],
) -> None:
    # Given `journeyline scheduler` running, a pass every 0.1 s
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "journeyline"), "scheduler"],
        env={
            **os.environ,
            "JOURNEYLINE_DATABASE_URL": env["url"],
            "JOURNEYLINE_BROKER_URL": "stub://",
            "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "0.1",
            "PYTHONUNBUFFERED": "1",
        },
        cwd=env["tmp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        started = process.stdout.readline()
        assert "scheduler started" in started, started
        # When it gets SIGTERM, as `docker stop` sends
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # Then it says so and exits 0
    assert process.returncode == 0, err
    assert "scheduler stopped (SIGTERM) after" in out, out
    assert "Traceback" not in err


# --- actions retry -----------------------------------------------------------------------------


def fail_an_email(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Track a contact while the outbox cannot be written and one try is allowed: her
    welcome email ends ``failed``; then undo the cause (the outbox works again)."""
    blocked = env["tmp"] / "blocked"
    blocked.write_text("not a folder")
    with monkeypatch.context() as broken:
        broken.setenv("JOURNEYLINE_OUTBOX_DIR", str(blocked))
        broken.setenv("JOURNEYLINE_MAX_ATTEMPTS", "1")
        tracked = invoke(
            "--database-url", env["url"], "track", address, "page.viewed",
            "--timezone", midday_zone(),
        )  # fmt: skip
    assert tracked.exit_code == 0, tracked.output


def test_a_failed_email_retried_after_its_cause_is_fixed_is_sent_exactly_once(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, db: Engine
) -> None:
    url = env["url"]
    # Given a welcome email that failed (its outbox could not be written), then the fix
    fail_an_email(env, monkeypatch, "stuck@example.com")
    failed = the_action_of(db, "stuck@example.com")
    assert failed.status == ActionStatus.FAILED
    key, error = failed.idempotency_key, failed.error
    assert emails_to(env["outbox"], "stuck@example.com") == 0

    # When an operator retries the failed actions
    retried = invoke("--database-url", url, "actions", "retry", "--failed")

    # Then it is sent once, in this process (stub://), and the command says what it did
    assert retried.exit_code == 0, retried.output
    said = flat(retried)
    assert f"1 action(s) back to pending for a fresh attempt: {failed.id}" in said
    assert "performed in this process: 1 sent" in said
    assert emails_to(env["outbox"], "stuck@example.com") == 1
    # And the row kept its key, counts the fresh attempt, and notes the retry and its past
    sent = the_action_of(db, "stuck@example.com")
    assert (sent.status, sent.attempts, sent.idempotency_key) == (ActionStatus.SENT, 1, key)
    assert sent.error is None
    [note] = sent.reason["retries"]
    assert (note["status"], note["error"], note["attempts"]) == ("failed", error, 1)
    listing = flat(invoke("--database-url", url, "actions"))
    assert "retried once, last at" in listing and "(was failed)" in listing

    # And retrying again sends nothing more: none is failed, and a sent one is refused
    again = invoke("--database-url", url, "actions", "retry", "--failed")
    assert again.exit_code == 0, again.output
    assert "no action retried: none failed" in again.output
    by_id = invoke("--database-url", url, "actions", "retry", str(failed.id))
    assert by_id.exit_code == 1, by_id.output
    assert f"not retried: action {failed.id}: sent: never sent again" in flat(by_id)
    assert emails_to(env["outbox"], "stuck@example.com") == 1


def test_retry_refuses_unknown_ones_unless_told_and_never_touches_sent_or_skipped(
    env: dict[str, Any], db: Engine
) -> None:
    url, zone = env["url"], midday_zone()
    for address in ("sent@example.com", "lost@example.com", "quiet@example.com"):
        tracked = invoke("--database-url", url, "track", address, "page.viewed", "--timezone", zone)
        assert tracked.exit_code == 0, tracked.output
    sent = the_action_of(db, "sent@example.com")
    # Given a send whose worker died mid-call (unknown) and one skipped
    lost = the_action_of(db, "lost@example.com")
    lost.status, lost.error = ActionStatus.UNKNOWN, "a worker stopped during the send"
    skipped = the_action_of(db, "quiet@example.com")
    skipped.status = ActionStatus.SKIPPED
    with Session(db, expire_on_commit=False) as session:
        session.add_all([lost, skipped])
        session.commit()
    ids = [str(a.id) for a in (sent, lost, skipped)]

    # When an operator retries all three by id
    refused = invoke("--database-url", url, "actions", "retry", *ids)

    # Then none is touched, each refusal says why, and the exit code says not all went
    assert refused.exit_code == 1, refused.output
    said = flat(refused)
    assert f"action {sent.id}: sent: never sent again" in said
    assert f"action {skipped.id}: skipped: never sent again" in said
    assert f"action {lost.id}: unknown:" in said and "--unknown-ok" in said
    assert "no action retried" in said
    for address, status in (
        ("sent@example.com", "sent"),
        ("lost@example.com", "unknown"),
        ("quiet@example.com", "skipped"),
    ):
        assert the_action_of(db, address).status == status

    # When the unknown one is retried with --unknown-ok: a warning, and it goes out again
    forced = invoke("--database-url", url, "actions", "retry", str(lost.id), "--unknown-ok")
    assert forced.exit_code == 0, forced.output
    assert f"action {lost.id} was unknown: the provider may already have accepted it" in flat(
        forced
    )
    assert the_action_of(db, "lost@example.com").status == ActionStatus.SENT
    assert the_action_of(db, "quiet@example.com").status == ActionStatus.SKIPPED


def test_retry_filters_and_without_a_broker_leaves_them_to_the_sweeper(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, db: Engine
) -> None:
    url = env["url"]
    fail_an_email(env, monkeypatch, "stuck@example.com")
    # --kind and --since select among the failed ones; they need --failed or ids
    for narrower in (["--kind", "crm.update"], ["--since", "2999-01-01"]):
        none = invoke("--database-url", url, "actions", "retry", "--failed", *narrower)
        assert none.exit_code == 0 and "none failed" in none.output, none.output
    assert invoke("--database-url", url, "actions", "retry").exit_code == 2
    assert invoke("--database-url", url, "actions", "retry", "--kind", "email").exit_code == 2
    assert the_action_of(db, "stuck@example.com").status == ActionStatus.FAILED

    # When the broker is down during the retry: back to pending, left to the sweeper, exit 3
    down = invoke(
        "--database-url", url, "--broker-url", BROKER_DOWN,
        "actions", "retry", "--failed", "--kind", "email", "--since", "1h",
    )  # fmt: skip
    assert down.exit_code == 3, down.output
    assert "they wait for the sweeper, which hands them out once their lease ends" in flat(down)
    assert the_action_of(db, "stuck@example.com").status == ActionStatus.PENDING

    # Then a scheduler pass after the lease sends it, once
    leases_run_out(db)
    swept = invoke("--database-url", url, "scheduler", "--once")
    assert swept.exit_code == 0, swept.output
    assert the_action_of(db, "stuck@example.com").status == ActionStatus.SENT
    assert emails_to(env["outbox"], "stuck@example.com") == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pa/ss@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
        ("postgresql://u:p@ss@db/x", "<a URL that cannot be parsed: not shown>"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("sqlite:///jl.db", "sqlite:///jl.db"),
    ],
)
def test_urls_are_shown_without_their_passwords_whatever_they_hold(url: str, shown: str) -> None:
    from engine.cli import describe_database, redact_url

    assert redact_url(url) == shown
    for secret in ("pa/ss", "s3cret", "p@ss", ":guest@"):
        if secret in url:
            assert secret not in describe_database(url)


def test_db_upgrade_names_the_database_as_describe_database_does(env: dict[str, Any]) -> None:
    result = invoke("db", "upgrade", "--database-url", env["url"])
    assert result.exit_code == 0, result.output
    assert "SQLite file" in flat(result)
    assert "upgraded from" in flat(result) or "already at" in flat(result)


def test_db_upgrade_says_the_revision_reached_not_the_one_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/up.db"
    first = invoke("db", "upgrade", "--database-url", url, "--revision", "0002")
    assert "upgraded from an empty schema to 0002" in flat(first), first.output
    head = invoke("db", "upgrade", "--database-url", url)
    assert "upgraded from 0002 to" in flat(head), head.output
    # Asking for an older revision changes nothing, and says so (it used to claim it)
    back = invoke("db", "upgrade", "--database-url", url, "--revision", "0002")
    assert back.exit_code == 0, back.output
    assert "already at" in flat(back) and "0002 is not ahead of it" in flat(back)
    unknown = invoke("db", "upgrade", "--database-url", url, "--revision", "9999")
    assert unknown.exit_code == 2
    assert "cannot upgrade" in flat(unknown) and "9999" in flat(unknown)


# --- actions, a page at a time -------------------------------------------------------------


def dead_letters(db: Engine, failed: int, unknown: int) -> None:
    """A contact with ``failed`` failed and ``unknown`` unknown actions, and one sent."""
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with Session(db) as session:
        ana = Contact(
            email="ana@example.com", stage="awareness", stage_entered_at=at, created_at=at,
            updated_at=at,
        )  # fmt: skip
        session.add(ana)
        session.flush()
        assert ana.id is not None
        statuses = [ActionStatus.FAILED] * failed + [ActionStatus.UNKNOWN] * unknown
        for n, status in enumerate([*statuses, ActionStatus.SENT]):
            session.add(
                Action(
                    contact_id=ana.id, kind="email", payload={"template": "welcome"},
                    idempotency_key=f"test:{n}", status=status, attempts=1,
                    error="permanent error: 400", next_attempt_at=at, created_at=at,
                    updated_at=at + timedelta(minutes=n),
                )
            )  # fmt: skip
        session.commit()


def test_the_actions_listing_says_how_many_there_are_when_it_shows_a_page(
    env: dict[str, Any], db: Engine
) -> None:
    url = env["url"]
    # Given 4 failed and 3 unknown actions, and a sent one
    dead_letters(db, failed=4, unknown=3)
    # When an operator lists the dead letters a page of 5 at a time
    page = flat(invoke("--database-url", url, "actions", "--failed", "--limit", "5"))
    # Then the title counts them all, not the page, and says how to see the rest
    assert "Failed and unknown actions (5 of 7)" in page
    assert "the newest 5 of 7: --limit 7 lists them all" in page
    # And a page that holds them all says only how many there are
    for limit in ("7", "50"):
        whole = flat(invoke("--database-url", url, "actions", "--failed", "--limit", limit))
        assert "Failed and unknown actions (7)" in whole
        assert "--limit" not in whole
    # And the filters count as they list
    assert "Actions (2 of 3)" in flat(
        invoke("--database-url", url, "actions", "--status", "unknown", "--limit", "2")
    )
    assert "Actions (2 of 8)" in flat(invoke("--database-url", url, "actions", "--limit", "2"))


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redsi://u:topsecret@h/0", "broker URL 'redsi://u:***@h/0': unknown scheme 'redsi'"),
        (
            "redis:/u:topsecret@h/0",
            "broker URL '<a URL that cannot be parsed: not shown>': no scheme",
        ),
        ("u:topsecret@h", "broker URL '<a URL that cannot be parsed: not shown>': no scheme"),
    ],
)
def test_a_mistyped_broker_url_is_refused_without_its_password(
    env: dict[str, Any], url: str, said: str
) -> None:
    result = invoke(
        "--database-url", env["url"], "--broker-url", url, "track", "a@example.com", "page.viewed"
    )
    assert result.exit_code == 2, result.output
    assert said in flat(result)
    assert "topsecret" not in result.output
