"""The ``journeyline`` command line, driven through typer's CliRunner on real SQLite files."""

from __future__ import annotations

import email
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.cli import parse_value
from engine.testing import midday_zone
from tests.cli_support import cli_env, invoke
from tests.support import make_runtime


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A migrated SQLite database, stub broker and an outbox folder, all under tmp_path."""
    return cli_env(tmp_path, monkeypatch, columns=200)


def test_track_then_contact_shows_stage_and_timeline(env: dict) -> None:
    url = env["url"]
    # Given a new contact tracked from the command line, where it is noon (the wall clock
    # runs here: quiet hours would hold her emails at night)
    zone = midday_zone()
    result = invoke(
        "--database-url", url, "track", "Ana@Example.com", "page.viewed",
        "--prop", "url=/pricing", "--prop", "pages=3", "--attr", "first_name=Ana",
        "--timezone", zone,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "recorded" in result.output
    # When the same trial is tracked twice with one idempotency key
    first = invoke(
        "track", "ana@example.com", "trial.started", "--key", "t1", "--database-url", url
    )
    again = invoke(
        "track", "ana@example.com", "trial.started", "--key", "t1", "--database-url", url
    )
    assert first.exit_code == 0 and again.exit_code == 0
    assert "duplicate" not in first.output
    assert "duplicate" in again.output

    # Then the contact is in decision, with both welcome and trial offer emails sent
    shown = invoke("contact", "ana@example.com", "--database-url", url)
    assert shown.exit_code == 0, shown.output
    assert "stage decision" in shown.output
    assert "score 27" in shown.output
    assert "subscribed" in shown.output
    assert "awareness -> decision by evaluate" in shown.output
    assert "awareness_nurture/welcome: sent" in shown.output
    assert "decision_trial/offer: sent" in shown.output
    assert len(list(env["outbox"].glob("*.eml"))) == 2
    # And what comes next: the trial workflow waits to send its reminder (no trial end date
    # known: four days later)
    assert "Live enrollments" in shown.output
    assert "reminder (6)" in shown.output

    as_json = invoke("--database-url", url, "contact", "ana@example.com", "--json")
    assert as_json.exit_code == 0, as_json.output
    timeline = json.loads(as_json.stdout)
    assert timeline["contact"]["attributes"] == {"first_name": "Ana"}
    assert timeline["contact"]["timezone"] == zone
    page_view = next(e for e in timeline["entries"] if e["details"].get("type") == "page.viewed")
    assert page_view["details"]["properties"] == {"url": "/pricing", "pages": 3}
    times = [e["at"] for e in timeline["entries"]]
    assert times == sorted(times)
    kinds = {e["kind"] for e in timeline["entries"]}
    assert kinds == {"event", "stage", "enrollment", "action"}
    trial_events = [e for e in timeline["entries"] if e["details"].get("type") == "trial.started"]
    assert len(trial_events) == 1


def test_invalid_email_exits_2_naming_it(env: dict) -> None:
    result = invoke("--database-url", env["url"], "track", "not-an-email", "page.viewed")
    assert result.exit_code == 2
    assert "not-an-email" in result.output
    assert "Traceback" not in result.output
    assert not env["outbox"].exists()


def test_unknown_contact_exits_1(env: dict) -> None:
    result = invoke("--database-url", env["url"], "contact", "nobody@example.com")
    assert result.exit_code == 1
    assert "nobody@example.com" in result.output


def test_actions_failed_lists_dead_letters_only(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    url = env["url"]
    zone = midday_zone()  # the wall clock runs: no quiet hours
    ok = invoke("--database-url", url, "track", "ok@example.com", "page.viewed", "--timezone", zone)
    assert ok.exit_code == 0, ok.output
    # Given an outbox that cannot be written (a file where its folder should be) and one try
    blocked = env["tmp"] / "blocked"
    blocked.write_text("not a folder")
    monkeypatch.setenv("JOURNEYLINE_OUTBOX_DIR", str(blocked))
    monkeypatch.setenv("JOURNEYLINE_MAX_ATTEMPTS", "1")
    tracked = invoke(
        "--database-url", url, "track", "stuck@example.com", "page.viewed", "--timezone", zone
    )
    assert tracked.exit_code == 0, tracked.output

    # When an operator looks at the dead letters
    result = invoke("--database-url", url, "actions", "--failed")

    # Then the failed send is listed with its reason, and the sent one is not
    assert result.exit_code == 0, result.output
    assert "stuck@example.com" in result.output
    assert "awareness_nurture/welcome" in result.output
    assert "failed" in result.output
    assert "cannot write to outbox" in result.output
    assert "ok@example.com" not in result.output
    everything = invoke("--database-url", url, "actions")
    assert "ok@example.com" in everything.output and "sent" in everything.output
    bad = invoke("--database-url", url, "actions", "--status", "lost")
    assert bad.exit_code == 2


def test_demo_runs_and_writes_parseable_emails(env: dict) -> None:
    output = env["tmp"] / "demo"
    result = invoke("demo", "--contacts", "30", "--days", "10", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert "Contacts per stage" in result.output
    assert "Emails per workflow step" in result.output
    assert "awareness_nurture" in result.output
    assert "journeyline contact " in result.output
    files = list((output / "outbox").glob("*.eml"))
    assert len(files) >= 30  # at least every contact's welcome
    assert f"holds {len(files)} .eml files" in result.output
    for path in files:
        message = email.message_from_bytes(path.read_bytes())
        assert message["Subject"], path
        assert message["To"].endswith("@example.com")
    assert (output / "journeyline.db").is_file()


def test_demo_refuses_to_delete_a_foreign_folder(env: dict) -> None:
    precious = env["tmp"] / "work"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    result = invoke("demo", "--contacts", "2", "--days", "1", "--output", str(precious))
    assert result.exit_code == 2
    assert (precious / "thesis.txt").exists()


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("2.5", 2.5), ("true", True), ("null", None), ("hello", "hello"), ("NaN", "NaN")],
)
def test_values_parse_as_json_when_they_can(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_events_lists_unmapped_ones_for_operators(env: dict) -> None:
    url = env["url"]
    # Given one event a rule knows and one nobody knows
    assert invoke("--database-url", url, "track", "bo@example.com", "page.viewed").exit_code == 0
    odd = invoke("--database-url", url, "track", "bo@example.com", "survey.mystery")
    assert odd.exit_code == 0, odd.output
    # When an operator lists the unmapped events
    listed = invoke("--database-url", url, "events", "--unmapped")
    # Then only the unknown one shows, kept with its contact
    assert listed.exit_code == 0, listed.output
    assert "survey.mystery" in listed.output
    assert "bo@example.com" in listed.output
    assert "page.viewed" not in listed.output
    everything = invoke("--database-url", url, "events")
    assert "page.viewed" in everything.output and "contact.created" in everything.output


@pytest.mark.parametrize(("preset", "expected"), [(None, "100"), ("250", "250")])
def test_the_worker_command_starts_dramatiq_polling_idle_queues_every_100_ms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str | None, expected: str
) -> None:
    """Dramatiq's default idle backoff (up to 1 s) would add up to a second per job at light
    load; an explicit dramatiq_worker_timeout in the environment is kept."""
    started: list[list[str]] = []
    monkeypatch.setattr("engine.cli.os.execv", lambda _exe, argv: started.append(argv))
    # The command sets these in the environment: noted by monkeypatch first (setenv), so
    # each is put back as it was after the test (delenv of an unset name notes nothing).
    for name in ("JOURNEYLINE_DATABASE_URL", "JOURNEYLINE_BROKER_URL", "dramatiq_worker_timeout"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    if preset is not None:
        monkeypatch.setenv("dramatiq_worker_timeout", preset)
    url = f"sqlite:///{tmp_path}/jl.db"
    assert invoke("--database-url", url, "db", "upgrade").exit_code == 0
    result = invoke(
        "--database-url", url, "--broker-url", "redis://127.0.0.1:6379/0", "worker",
        "--processes", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert started and started[0][1:4] == ["-m", "dramatiq", "engine.worker"]
    assert os.environ["dramatiq_worker_timeout"] == expected  # noqa: SIM112 (Dramatiq's name)


@pytest.mark.parametrize(
    ("database", "said"),
    [
        ("sqlite:///{tmp}/never.db", "never migrated: run journeyline db upgrade"),
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test", "cannot connect"),
    ],
    ids=["not migrated", "unreachable"],
)
def test_a_worker_on_a_database_it_cannot_use_says_so_once_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database: str, said: str
) -> None:
    """It looked ready and failed every job it took (on-call probe)."""
    started: list[list[str]] = []
    monkeypatch.setattr("engine.cli.os.execv", lambda _exe, argv: started.append(argv))
    for name in ("JOURNEYLINE_DATABASE_URL", "JOURNEYLINE_BROKER_URL", "dramatiq_worker_timeout"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    url = database.format(tmp=tmp_path)
    result = invoke("--database-url", url, "--broker-url", "redis://127.0.0.1:6379/0", "worker")
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert "hunter2" not in result.output and "Traceback" not in result.output
    assert started == []


# --- what an operator is told when something is off -----------------------------------------


@pytest.mark.parametrize("command", [["actions"], ["contact", "ana@example.com"], ["events"]])
def test_an_unreachable_database_is_named_without_its_password_and_not_told_to_migrate(
    env: dict, command: list[str]
) -> None:
    # Given a PostgreSQL URL whose server does not listen (nothing on port 1)
    url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test"
    # When a command needs the database
    result = invoke("--database-url", url, *command)
    # Then it says it cannot connect, where to, and what to check; not to migrate
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "cannot connect to the database at 127.0.0.1:1/test" in output
    assert "JOURNEYLINE_DATABASE_URL" in output
    assert "hunter2" not in output
    assert "db upgrade" not in output
    assert "Traceback" not in output


def test_a_database_without_tables_is_told_to_migrate(env: dict) -> None:
    url = f"sqlite:///{env['tmp'] / 'empty.db'}"
    result = invoke("--database-url", url, "actions")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "answers, but Journeyline's tables are missing" in output
    assert "Run: journeyline db upgrade" in output
    assert "cannot connect" not in output


def test_bad_settings_name_the_variables_not_the_fields(env: dict) -> None:
    # Given a .env with two bad values (read from the working directory)
    Path(".env").write_text("JOURNEYLINE_MAX_ATTEMPTS=abc\nJOURNEYLINE_WORKER_POLL_MS=1\n")
    # When any command loads the settings
    result = invoke("--database-url", env["url"], "actions")
    # Then each bad variable is one line, as the operator wrote it, without pydantic's noise
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert "error: JOURNEYLINE_MAX_ATTEMPTS='abc': must be an integer" in lines
    assert "error: JOURNEYLINE_WORKER_POLL_MS='1': must be at least 10" in lines
    assert "max_attempts" not in result.output
    assert "pydantic" not in result.output
    assert "http" not in result.output


def test_a_bad_http_service_setting_names_its_variable(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.cli_api  # noqa: F401 (registers `serve`, as the journeyline script does)

    monkeypatch.setenv("JOURNEYLINE_API_MAX_BODY_BYTES", "lots")
    result = invoke("--database-url", env["url"], "serve", "--port", "0")
    assert result.exit_code == 2, result.output
    assert "JOURNEYLINE_API_MAX_BODY_BYTES='lots': must be an integer" in result.output
    assert "pydantic" not in result.output


def test_pending_actions_say_what_holds_them_and_until_when(env: dict) -> None:
    url = env["url"]
    # Given a contact for whom it is about midnight: her welcome email waits for the morning
    night = midday_zone(datetime.now(UTC) + timedelta(hours=12))
    tracked = invoke(
        "--database-url", url, "track", "owl@example.com", "page.viewed", "--timezone", night
    )
    assert tracked.exit_code == 0, tracked.output
    # When an operator lists the pending actions
    result = invoke("--database-url", url, "actions", "--status", "pending")
    # Then the row says which rule holds it and until when, as `contact` does
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.replace("│", " ").split())
    assert "owl@example.com" in output
    assert "held until " in output
    assert f"quiet hours 21:00-08:00 ({night})" in output
    shown = invoke("--database-url", url, "contact", "owl@example.com")
    held = re.search(r"held until (\S+ \S+) UTC", shown.output)
    assert held is not None, shown.output
    assert f"held until {held.group(1)} UTC" in output


def test_events_lists_late_ones_kept_as_history(env: dict) -> None:
    url = env["url"]
    # Given an event that arrived ten days after it occurred (a backfill), and one on time
    runtime, clock, _email = make_runtime(url, broker_url="inline://", create_schema=False)
    try:
        runtime.track("cy@example.com", "page.viewed")
        runtime.track(
            "cy@example.com", "trial.started", occurred_at=clock.now() - timedelta(days=10)
        )
        runtime.run_until_idle()
    finally:
        runtime.close()
    # When an operator lists the late events
    listed = invoke("--database-url", url, "events", "--late")
    # Then only the backfilled one shows
    assert listed.exit_code == 0, listed.output
    assert "trial.started" in listed.output and "late" in listed.output
    assert "page.viewed" not in listed.output
    # with when it occurred beside when it came
    occurred = clock.now() - timedelta(days=10)
    assert f"{occurred:%Y-%m-%d}" in listed.output.replace("\n", "")


def test_track_takes_when_the_event_occurred(env: dict) -> None:
    url = env["url"]
    # A backfilled event from the command line: kept as history
    done = invoke(
        "--database-url", url, "track", "cy@example.com", "trial.started",
        "--occurred-at", (datetime.now(UTC) - timedelta(days=10)).isoformat(),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    listed = invoke("--database-url", url, "events", "--late")
    assert "trial.started" in listed.output, listed.output
    # A time that is no time, or one the track API would refuse, is one line (exit 2)
    bad = invoke("--database-url", url, "track", "cy@example.com", "x.y", "--occurred-at", "soon")
    assert bad.exit_code == 2 and "--occurred-at 'soon' is not an ISO 8601 time" in bad.output
    ahead = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    refused = invoke(
        "--database-url", url, "track", "cy@example.com", "x.y", "--occurred-at", ahead
    )
    assert refused.exit_code == 2, refused.output
    assert "occurred_at" in refused.output
