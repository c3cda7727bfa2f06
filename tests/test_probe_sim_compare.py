"""Comparing two versions of a program: a profile, the terminal tables and the HTML page."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from engine.cli import _register_subcommands, app
from engine.simulation_profile import Profile
from engine.simulation_report import html_report, print_results
from engine.simulator import load_workflows, simulate

_register_subcommands()
REPO = Path(__file__).parent.parent


def _with_a_new_offer(tmp_path: Path) -> Path:
    """A copy of the playbook whose trial offer is a new template, ``trial_offer_30``."""
    folder = tmp_path / "bigger_offer"
    shutil.copytree(REPO / "workflows", folder, ignore=shutil.ignore_patterns("__pycache__"))
    decision = folder / "decision.py"
    decision.write_text(decision.read_text().replace('"trial_offer"', '"trial_offer_30"'))
    shutil.copy(folder / "templates" / "trial_offer.j2", folder / "templates" / "trial_offer_30.j2")
    return folder


def test_a_reaction_to_the_new_versions_template_is_not_refused_for_the_old(
    tmp_path: Path,
) -> None:
    # Given a profile saying how contacts react to the email only version B sends
    folder = _with_a_new_offer(tmp_path)
    profile = tmp_path / "profile.json"
    reaction = {"boost": {"order.completed": 2.5}, "days": 7}
    profile.write_text(json.dumps({"reactions": {"trial_offer_30": reaction}}))
    args = ["simulate", "--contacts", "3", "--days", "1", "--profile", str(profile)]
    # When the two versions are compared
    result = CliRunner().invoke(app, [*args, "--compare", "workflows", str(folder)])
    # Then both run
    assert result.exit_code == 0, result.output
    assert "contacts, 1 days" in result.output
    # And a reaction to a template neither side sends is still refused
    profile.write_text(json.dumps({"reactions": {"trial_offer_99": reaction}}))
    refused = CliRunner().invoke(app, [*args, "--compare", "workflows", str(folder)])
    assert refused.exit_code == 2
    assert "trial_offer_99" in refused.output


def test_each_side_runs_with_the_reactions_to_what_it_sends() -> None:
    registry = load_workflows("workflows")
    profile = Profile.from_dict(
        {"reactions": {"trial_offer_30": {"boost": {"order.completed": 2.5}, "days": 7}}}
    )
    assert profile.registry_problems(registry)  # alone, the reaction would never apply
    assert not profile.registry_problems(registry, sent_elsewhere={"trial_offer_30"})
    mine = profile.for_registry(registry)
    assert "trial_offer_30" not in mine.reactions
    assert mine.reactions["trial_offer"] == profile.reactions["trial_offer"]
    assert not mine.registry_problems(registry)


def test_ab_variants_say_whether_the_difference_could_be_chance() -> None:
    run = simulate(load_workflows("workflows"), contacts=3, days=1, seed=1)
    shown = dataclasses.replace(
        run,
        variants={
            "trial:offer=a": (400, 40),
            "trial:offer=b": (400, 80),
            "trial:offer=c": (10, 1),
        },
    )
    console = Console(file=io.StringIO(), record=True, width=120)
    print_results([shown, dataclasses.replace(shown, label="other", variants={})], console)
    lines = console.export_text().splitlines()
    assert "base" in next(line for line in lines if "trial:offer=a" in line)
    assert "p <0.001" in next(line for line in lines if "trial:offer=b" in line)
    c = next(line for line in lines if "trial:offer=c" in line)
    assert "too few" in c and "not in this run" in c
    page = html_report([shown])
    assert "<h2>A/B variants (converted / entered)</h2>" in page
    assert "80/400 (20%), p &lt;0.001" in page


def test_the_html_page_has_the_emails_per_step_and_explains_its_charts() -> None:
    run = simulate(load_workflows("workflows"), contacts=5, days=2, seed=1)
    page = html_report([run, dataclasses.replace(run, label="b")])
    assert "<h2>Emails sent per workflow step</h2>" in page
    welcome = run.emails["awareness_nurture:welcome"]
    assert f"<td>awareness_nurture:welcome</td><td>{welcome}</td><td>{welcome}</td>" in page
    assert "conversion from the stage before" in page
    assert "from day 1 (left) to day 2 (right)" in page
    assert page.count("<svg") == 4


def test_side_by_side_the_funnel_keeps_the_stage_names_on_an_80_column_terminal() -> None:
    run = simulate(load_workflows("workflows"), contacts=3, days=1, seed=1)
    console = Console(file=io.StringIO(), record=True, width=80)
    print_results([run, dataclasses.replace(run, label="workflows_b")], console)
    text = console.export_text()
    for stage in ("awareness", "consideration", "engagement", "onboarding"):
        assert f"│ {stage}" in text, text
