"""Connectors of the user's own, named in settings as module:factory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from engine import VirtualClock, Workflow, create_crm_task, on_event, send_email, update_crm
from engine.errors import ConfigurationError
from engine.registry import build_registry
from engine.runtime import Runtime
from engine.settings import Settings
from tests.support import actions
from workflows.rules import RULES

REPO = Path(__file__).parent.parent
JOURNEYLINE = str(Path(sys.executable).parent / "journeyline")
SALES = Workflow(
    "sales",
    trigger=on_event("demo.requested"),
    steps=[
        update_crm(lead_status="demo requested"),
        create_crm_task("Call this lead"),
        send_email("welcome", id="hello"),
    ],
)


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    crm_log, email_log = tmp_path / "crm.jsonl", tmp_path / "email.jsonl"
    monkeypatch.setenv("PLUGIN_CRM_LOG", str(crm_log))
    monkeypatch.setenv("PLUGIN_EMAIL_LOG", str(email_log))
    yield crm_log, email_log


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _runtime(tmp_path: Path, **settings: str) -> Runtime:
    registry = build_registry(
        workflows=[SALES], rules=RULES, templates_dir=REPO / "workflows" / "templates"
    )
    runtime = Runtime(
        Settings(database_url=f"sqlite:///{tmp_path}/jl.db", outbox_dir=tmp_path, **settings),  # type: ignore[arg-type]
        registry=registry,
        clock=VirtualClock(),
    )
    SQLModel.metadata.create_all(runtime.db)
    return runtime


def test_a_crm_and_an_email_connector_of_ones_own_do_the_steps(
    tmp_path: Path, logs: tuple[Path, Path]
) -> None:
    crm_log, email_log = logs
    runtime = _runtime(
        tmp_path,
        crm_connector="tests.plugin_connectors:crm",
        email_connector="tests.plugin_connectors:email",
    )
    try:
        runtime.track("ana@example.com", "demo.requested")
        runtime.run_until_idle()
        runtime.track("ana@example.com", "demo.requested", idempotency_key="again")
        runtime.run_until_idle()
    finally:
        runtime.close()
    calls = [(c["method"], c["email"]) for c in _lines(crm_log)]
    assert calls.count(("create_task", "ana@example.com")) == 1
    assert ("upsert_contact", "ana@example.com") in calls
    assert [m["to"] for m in _lines(email_log)] == ["ana@example.com"]


def test_a_task_whose_reply_breaks_is_unknown_and_never_made_twice(
    tmp_path: Path, logs: tuple[Path, Path]
) -> None:
    crm_log, _ = logs
    runtime = _runtime(tmp_path, crm_connector="tests.plugin_connectors:crm_whose_tasks_break")
    try:
        runtime.track("bo@example.com", "demo.requested")
        runtime.run_until_idle()
        runtime.clock.advance(days=1)  # type: ignore[attr-defined]  # a VirtualClock
        runtime.run_until_idle()
        (task,) = [a for a in actions(runtime) if a.kind == "crm.task"]
    finally:
        runtime.close()
    assert [c["method"] for c in _lines(crm_log)].count("create_task") == 1
    assert task.status == "unknown"
    assert "KeyError" in (task.error or "")


def test_an_update_whose_reply_breaks_is_retried_as_harmless_to_repeat(
    tmp_path: Path, logs: tuple[Path, Path]
) -> None:
    crm_log, _ = logs
    runtime = _runtime(tmp_path, crm_connector="tests.plugin_connectors:crm_whose_updates_break")
    try:
        runtime.track("cy@example.com", "demo.requested")
        runtime.run_until_idle()
        (update,) = [a for a in actions(runtime) if a.kind == "crm.update"]
        assert update.status == "pending"
    finally:
        runtime.close()
    assert [c["method"] for c in _lines(crm_log)].count("upsert_contact") == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.plugin_connectors", "unknown CRM connector"),
        ("tests.plugin_connectors:", "is named module:factory"),
        ("no_such_module_here:crm", "cannot import no_such_module_here (ModuleNotFoundError"),
        ("tests.plugin_connectors:missing", "tests.plugin_connectors has no missing"),
        ("tests.plugin_connectors:NOT_CALLABLE", "NOT_CALLABLE is not callable"),
        (
            "tests.plugin_connectors:needs_a_token",
            "needs_a_token(settings) raised RuntimeError: PIPEDRIVE_TOKEN is not set",
        ),
        ("tests.plugin_connectors:not_a_connector", "returned a dict, not a CRMConnector"),
        ("tests.plugin_connectors:email", "returned a FileEmail, not a CRMConnector"),
    ],
)
def test_a_connector_setting_that_cannot_work_says_why(
    tmp_path: Path, spec: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _runtime(tmp_path, crm_connector=spec)
    assert message in str(refused.value)


def test_an_email_connector_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="returned a FileCRM, not a EmailConnector"):
        _runtime(tmp_path, email_connector="tests.plugin_connectors:crm")


def test_the_cli_loads_the_connector_from_the_environment(
    tmp_path: Path, logs: tuple[Path, Path]
) -> None:
    crm_log, _ = logs
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),  # where a worker finds the user's module
        "JOURNEYLINE_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "JOURNEYLINE_CRM_CONNECTOR": "tests.plugin_connectors:crm",
        "JOURNEYLINE_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    run = [JOURNEYLINE]
    subprocess.run([*run, "db", "upgrade"], env=env, check=True, capture_output=True)
    for event in ("content.downloaded", "webinar.attended"):  # 10 + 15 points: an MQL
        done = subprocess.run(
            [*run, "track", "dee@example.com", event], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    tasks = [c for c in _lines(crm_log) if c["method"] == "create_task"]
    assert [t["email"] for t in tasks] == ["dee@example.com"]
    broken = subprocess.run(
        [*run, "track", "dee@example.com", "page.viewed"],
        env={**env, "JOURNEYLINE_CRM_CONNECTOR": "tests.plugin_connectors:needs_a_token"},
        capture_output=True,
        text=True,
    )
    assert broken.returncode != 0
    assert "PIPEDRIVE_TOKEN is not set" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_a_worker_whose_connector_cannot_be_built_says_so_once_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from engine import cli

    started: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: started.append(argv))
    # The command exports these for the worker processes: set here first, so that the test
    # puts back what was there (delenv of an unset variable would record nothing to undo).
    url = f"sqlite:///{tmp_path}/w.db"
    monkeypatch.setenv("JOURNEYLINE_DATABASE_URL", url)
    monkeypatch.setenv("JOURNEYLINE_BROKER_URL", "redis://127.0.0.1:6379/8")
    monkeypatch.setenv("dramatiq_worker_timeout", "1000")
    monkeypatch.setenv("JOURNEYLINE_CRM_CONNECTOR", "tests.plugin_connectors:needs_a_token")
    cli._register_subcommands()
    result = CliRunner().invoke(
        cli.app, ["worker", "--database-url", url, "--broker-url", "redis://127.0.0.1:6379/8"]
    )
    assert result.exit_code == 2
    assert "PIPEDRIVE_TOKEN is not set" in result.output
    assert started == []  # no worker process was started to fail on its own
    monkeypatch.setenv("JOURNEYLINE_CRM_CONNECTOR", "tests.plugin_connectors:crm")
    assert CliRunner().invoke(cli.app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    result = CliRunner().invoke(
        cli.app, ["worker", "--database-url", url, "--broker-url", "redis://127.0.0.1:6379/8"]
    )
    assert result.exit_code == 0, result.output
    assert started and started[0][1:4] == ["-m", "dramatiq", "engine.worker"]
