"""``journeyline workflows``: check, list, show and migrate, as an operator runs them."""

from __future__ import annotations

import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import Workflow, build_registry, lifecycle_journey, on_event, send_email, wait
from engine.cli import _register_subcommands, app
from engine.db import make_engine, transaction
from engine.durations import describe_duration
from engine.versions import apply_migration, plan_migration
from tests.language_support import TEMPLATES, running
from workflows.rules import RULES

_register_subcommands()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_check_passes_on_the_shipped_playbook() -> None:
    result = invoke("workflows", "check")
    assert result.exit_code == 0, result.output
    assert "workflows OK" in result.output


def test_check_lists_every_problem_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "broken_flows"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent("""
        from datetime import timedelta
        from engine import Workflow, on_event, on_stage_entered, send_email, split, wait_for_event

        WORKFLOWS = [
            Workflow("bad", trigger=on_stage_entered("limbo"), steps=[
                send_email("missing_template"),
                wait_for_event("never.happens", timeout=timedelta(0)),
                split(A=[], B=[], weights={"A": 60, "B": 60}),
            ]),
        ]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "broken_flows")
    monkeypatch.setenv("COLUMNS", "400")  # one problem per line, unwrapped
    result = invoke("workflows", "check")
    assert result.exit_code == 1
    output = result.output
    for words in (
        "unknown stage 'limbo'",
        "'missing_template' not found",
        "needs a timeout",
        "unknown event 'never.happens'",
        "add up to 100",
        "__init__.py:6",
    ):
        assert words in output, words


def _write_package(root: Path, name: str, source: str) -> Path:
    package = root / name
    (package / "templates").mkdir(parents=True)
    shipped = Path(__file__).parent.parent / "workflows" / "templates"
    for template in ("welcome.j2", "guide.j2"):
        (package / "templates" / template).write_text((shipped / template).read_text())
    (package / "__init__.py").write_text(textwrap.dedent(source))
    return package / "__init__.py"


def test_check_reports_wrong_types_and_unknown_names_in_conditions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a workflow with a wait for an event without a timeout, and conditions naming an
    # event nothing knows and a step the workflow does not have
    init = _write_package(
        tmp_path,
        "careless_flows",
        """
        from engine import (Workflow, branch, did_event, on_event, opened, send_email,
                            wait_for_event)

        WORKFLOWS = [
            Workflow("careless", trigger=on_event("contact.created"), steps=[
                send_email("welcome", id="hello"),
                wait_for_event("email.opened", timeout=None),
                branch(did_event("never.happens"), then=[send_email("guide")]),
                branch(opened("nope"), then=[send_email("guide", id="again")]),
            ]),
        ]
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "careless_flows")
    monkeypatch.setenv("COLUMNS", "400")
    # When the operator checks it
    result = invoke("workflows", "check")
    # Then each is a problem with the workflow's file and line, not a crash
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    problems = [line for line in result.output.splitlines() if line.startswith("- ")]
    for words in (
        "needs a timeout (it has no other exit), a timedelta such as "
        "timeout=timedelta(days=3), not None",
        "condition names unknown event 'never.happens'",
        "condition names step 'nope', which is not a step of this workflow",
    ):
        assert any(words in p and f"{init}:6" in p for p in problems), words
    assert len(problems) == 3, result.output
    assert "error: 3 problem(s) in careless_flows" in result.output


def test_show_writes_durations_as_people_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_package(
        tmp_path,
        "timely_flows",
        """
        from datetime import timedelta
        from engine import (Workflow, add_tag, branch, did_event, not_, on_event, wait,
                            wait_for_event, wait_until_date)

        WORKFLOWS = [
            Workflow("timely", trigger=on_event("contact.created"), steps=[
                branch(not_(did_event("email.clicked", within=timedelta(days=2))),
                       then=[add_tag("cold")]),
                wait(days=4),
                wait(hours=1, minutes=30),
                wait_for_event("email.opened", timeout=timedelta(days=3)),
                wait_until_date("trial_ends_at", days_before=3, time="09:00"),
                wait_until_date("renews_at", days_after=1.5),
                wait_until_date("birthday"),
                add_tag("done"),
            ]),
        ]
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "timely_flows")
    result = invoke("workflows", "show", "timely", "--database-url", "sqlite://")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for text in (
        "if not (did email.clicked within 2 days)",
        "wait 4 days",
        "wait 1 hour 30 minutes",
        "wait for email.opened (up to 3 days)",
        "wait until 3 days before trial_ends_at at 09:00",
        "wait until 1 day 12 hours after renews_at",
        "wait until birthday",
    ):
        assert any(line.endswith(f': {text}"]') for line in lines), text
    assert "0:00" not in result.output and "+ -" not in result.output
    # Still Mermaid: a node per line, quoted labels without quotes inside them
    assert lines[0] == "flowchart TD"
    for line in lines[1:]:
        assert re.fullmatch(r'  (\w+(\(\[|\[)"[^"]*"(\]\)|\])|\w+ (-- \w+ )?--> \w+)', line), line


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=2), "2 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(days=1.5), "1 day 12 hours"),
        (timedelta(days=-3), "3 days"),
        (timedelta(minutes=1, seconds=1), "1 minute 1 second"),
        (timedelta(seconds=3), "3 seconds"),
        (timedelta(0), "0 seconds"),
        (timedelta(days=1 / 3), "8 hours"),
    ],
)
def test_durations_are_written_in_words(duration: timedelta, text: str) -> None:
    assert describe_duration(duration) == text


def test_show_draws_mermaid() -> None:
    result = invoke("workflows", "show", "decision_trial", "--database-url", "sqlite://")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD")
    assert "email trial_offer" in result.output


def _v(second: str) -> Workflow:
    return Workflow(
        "evolving",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email(second, id=second),
        ],
    )


def test_migrate_previews_then_moves_and_refuses_lost_steps(tmp_path: Path) -> None:
    v1 = Workflow(
        "evolving",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email("guide", id="guide"),
            wait(days=2, id="pause2"),
            send_email("trial_offer", id="offer"),
        ],
    )
    # v2 drops "offer" and rewrites the guide step under the same id
    v2 = Workflow(
        "evolving",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email("comparison_guide", id="guide"),
        ],
    )
    with running(tmp_path, [v1]) as (rt, clock, email):
        rt.track("a@example.com", "trial.started")  # will wait before "guide"
        rt.run_until_idle()
        clock.advance(days=2)
        rt.track("b@example.com", "trial.started")  # will wait before "guide"
        rt.run_until_idle()  # a: sent guide, now waits before "offer"
        rt.registry = build_registry(
            journey=lifecycle_journey(), rules=RULES, workflows=[v2], templates_dir=TEMPLATES
        )
        db = make_engine(rt.settings.database_url)
        with transaction(db) as session:
            plan = plan_migration(session, rt.registry, "evolving")
            assert dict(plan.landing) == {"guide": 1}
            assert dict(plan.refused) == {f"{v1.version}@offer": 1}
            assert apply_migration(session, plan) == 1
        db.dispose()
        clock.advance(days=2)
        rt.run_until_idle()
        # b continues on v2 from "guide" without re-running "hello"; a finishes on v1
        assert [m.categories[1] for m in email.to("b@example.com")] == [
            "evolving:hello",
            "evolving:guide",
        ]
        assert [m.subject for m in email.to("b@example.com")][1].startswith("How Acme compares")
        assert [m.categories[1] for m in email.to("a@example.com")] == [
            "evolving:hello",
            "evolving:guide",
            "evolving:offer",
        ]


def test_show_creates_no_database_file_and_migrate_says_to_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    shown = invoke("workflows", "show", "decision_trial", "--database-url", url)
    assert shown.exit_code == 0, shown.output
    assert not (tmp_path / "fresh.db").exists()  # drawn without counts, nothing created
    (tmp_path / "empty.db").touch()  # a database nobody upgraded
    moved = invoke(
        "workflows",
        "migrate",
        "decision_trial",
        "--database-url",
        f"sqlite:///{tmp_path / 'empty.db'}",
    )
    assert moved.exit_code != 0 and "Traceback" not in moved.output
    assert "journeyline db upgrade" in moved.output, moved.output
