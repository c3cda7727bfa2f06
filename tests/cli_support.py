"""What the CLI tests share: a migrated SQLite database with a stub broker and an outbox
folder under the test's own directory, and ``invoke`` with every sub-command registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from engine.cli import _register_subcommands, app

_register_subcommands()


def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, columns: int) -> dict[str, Any]:
    """``columns`` wide enough that rich tables do not truncate what a test reads."""
    monkeypatch.chdir(tmp_path)  # no stray .env, and default folders stay here
    monkeypatch.setenv("JOURNEYLINE_BROKER_URL", "stub://")
    monkeypatch.setenv("JOURNEYLINE_EMAIL_CONNECTOR", "outbox")
    monkeypatch.setenv("JOURNEYLINE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("COLUMNS", str(columns))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = invoke("--database-url", url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    return {"url": url, "outbox": tmp_path / "outbox", "tmp": tmp_path}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))
