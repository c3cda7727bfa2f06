"""``journeyline workflows``: check, list, show and migrate, as an operator runs them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import Workflow, build_registry, lifecycle_journey, on_event, send_email, wait
from engine.cli import _register_subcommands, app
from engine.db import make_engine, transaction
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
