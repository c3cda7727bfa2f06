"""The demo's report: what it counts as emails, and the command it hands the reader."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from engine import demo
from engine.demo import DemoOptions, DemoReport, cli_command


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> DemoReport:
    # 30 contacts for 10 days: about a hundred emails and a few CRM tasks (MQL hand-overs)
    output = tmp_path_factory.mktemp("demo") / "demo-output"
    return demo.run(DemoOptions(contacts=30, days=10, output=output), Console(quiet=True))


def printed(report: DemoReport, *, width: int = 200) -> str:
    console = Console(file=io.StringIO(), record=True, width=width, color_system=None)
    demo.render_report(report, console)
    return console.export_text()


def test_the_email_table_counts_emails_only(report: DemoReport) -> None:
    # Given a demo whose workflows also created CRM tasks
    assert report.other_actions, "the demo run should include CRM steps"
    assert {row.kind for row in report.other_actions} == {"crm.task"}
    # Then the email rows are emails, and the emails sent are the .eml files in the outbox
    assert {row.kind for row in report.emails} == {"email"}
    assert sum(row.sent for row in report.emails) == report.eml_files > 0
    # And the CRM steps are counted apart, one JSON record each in outbox/crm
    assert sum(row.sent for row in report.other_actions) == report.crm_records > 0


def test_the_printed_tables_keep_crm_steps_out_of_the_email_table(report: DemoReport) -> None:
    text = printed(report)
    emails, _, rest = text.partition("CRM steps and other actions per workflow step")
    emails = emails.split("Emails per workflow step", 1)[1]
    crm_steps = {row.step for row in report.other_actions}
    assert not [step for step in crm_steps if f" {step} " in emails]
    assert all(f" {step} " in rest for step in crm_steps)
    # The email table's total is the outbox's count, as the line below it says
    total = next(line for line in emails.splitlines() if " total " in line)
    assert total.split("│")[3].strip() == str(report.eml_files)
    assert f"holds {report.eml_files} .eml files, and {report.crm_records} CRM records" in text


def test_the_closing_command_runs_as_printed(report: DemoReport) -> None:
    # Given the report in a narrow terminal, where a folded command would not paste
    text = printed(report, width=60)
    lines = text.splitlines()
    command = lines[lines.index("See one contact's story:") + 1].strip()
    # When it is run as printed, from where the demo ran
    result = subprocess.run(
        shlex.split(command),
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLINE_")},
    )
    # Then it shows that contact's story
    assert result.returncode == 0, result.stderr
    assert report.sample_email and report.sample_email in result.stdout
    assert "Timeline" in result.stdout


def test_the_command_is_the_entry_point_beside_the_interpreter(tmp_path: Path) -> None:
    bin_dir = tmp_path / "project" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "journeyline").write_text("#!/bin/sh\n")
    (bin_dir / "journeyline").chmod(0o755)
    python = str(bin_dir / "python")
    # From the project folder, after `make demo` (venv not activated): the relative path
    assert cli_command(executable=python, cwd=tmp_path / "project", path="") == (
        ".venv/bin/journeyline"
    )
    # From elsewhere: the absolute path
    elsewhere = cli_command(executable=python, cwd=tmp_path / "elsewhere", path="")
    assert elsewhere == shlex.quote(str(bin_dir / "journeyline"))
    # From the bin folder itself: not a bare name, which the shell would look up on PATH
    assert cli_command(executable=python, cwd=bin_dir, path="") == "./journeyline"
    # With the venv activated (its bin on PATH): the bare name
    assert cli_command(executable=python, cwd=tmp_path, path=str(bin_dir)) == "journeyline"


def test_without_an_entry_point_the_command_is_python_dash_m(tmp_path: Path) -> None:
    python = str(tmp_path / "my env" / "python")
    assert cli_command(executable=python, cwd=tmp_path, path="") == (
        f"{shlex.quote(python)} -m engine.cli"
    )


def test_the_closing_report_command_runs_as_printed(report: DemoReport) -> None:
    text = printed(report, width=60)
    lines = text.splitlines()
    heading = "See how the workflows performed:"
    command = lines[lines.index(heading) + 1].strip()
    result = subprocess.run(
        shlex.split(command),
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLINE_")},
    )
    assert result.returncode == 0, result.stderr
    assert "Funnel: contacts reaching each stage" in result.stdout
    assert "Email performance per workflow step" in result.stdout
