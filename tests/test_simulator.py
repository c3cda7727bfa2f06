"""The lifecycle simulator: deterministic, comparable, reported."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from engine import simulator, virtual_time
from engine.cli import _register_subcommands, app
from engine.registry import build_registry
from engine.runtime import Runtime
from engine.simulation_profile import Profile, ProfileError
from engine.simulation_report import html_report, print_results
from engine.simulation_results import SimulationResult
from engine.simulator import load_workflows, simulate

_register_subcommands()
REPO = Path(__file__).parent.parent


def _what_happened(run: SimulationResult) -> tuple[Any, ...]:
    """Everything a run found but its label and how long it took."""
    return (run.events, run.funnel, run.emails, run.goals, run.variants, run.daily)


def test_the_same_seed_gives_the_same_run() -> None:
    registry = load_workflows("workflows")
    first = simulate(registry, contacts=25, days=8, seed=3)
    second = simulate(registry, contacts=25, days=8, seed=3)
    other = simulate(registry, contacts=25, days=8, seed=4)
    assert (first.funnel, first.emails, first.goals) == (second.funnel, second.emails, second.goals)
    assert (first.emails, first.events) != (other.emails, other.events)
    assert first.funnel[0].stage == "awareness" and first.funnel[0].reached == 25
    reached = [row.reached for row in first.funnel if row.stage != "churned"]
    assert reached == sorted(reached, reverse=True)  # a funnel only narrows
    assert len(first.daily) == 8


def test_shards_in_parallel_processes_give_the_same_run_as_one_process() -> None:
    registry = load_workflows("workflows")
    ticks: list[tuple[int, int]] = []
    alone = simulate(registry, contacts=30, days=4, seed=5, shard_contacts=10)
    forked = simulate(
        registry,
        contacts=30,
        days=4,
        seed=5,
        shard_contacts=10,
        processes=2,
        on_progress=lambda done, total: ticks.append((done, total)),
    )
    assert alone.events > 0 and alone.emails
    assert _what_happened(alone) == _what_happened(forked)
    assert ticks[-1] == (12, 12)  # three shards of four days each
    assert [done for done, _ in ticks] == list(range(1, 13))


def test_how_the_population_is_cut_into_shards_does_not_change_the_run() -> None:
    registry = load_workflows("workflows")
    whole = simulate(registry, contacts=60, days=10, seed=5, shard_contacts=60)
    cut = simulate(registry, contacts=60, days=10, seed=5, shard_contacts=20)
    assert whole.emails
    assert _what_happened(whole) == _what_happened(cut)


def test_a_change_to_one_workflow_leaves_the_others_contacts_alone() -> None:
    # Each contact draws from streams of her own: with one stream for all, the first email
    # one version sent and the other did not shifted every later draw of every contact, so
    # a comparison showed differences in parts of the program nobody changed.
    registry = load_workflows("workflows")
    without = build_registry(
        journey=registry.journey,
        rules=registry.rules.rules,
        workflows=[w for w in registry.workflows.values() if w.name != "decision_trial"],
        templates_dir=REPO / "workflows" / "templates",
        events=registry.events,
        guardrails=registry.guardrails,
    )
    before = simulate(registry, contacts=150, days=20, seed=3)
    after = simulate(without, contacts=150, days=20, seed=3)
    early = [k for k in before.emails if k.split(":")[0].startswith(("awareness", "consideration"))]
    assert early and any(k.startswith("decision_trial:") for k in before.emails)
    assert not any(k.startswith("decision_trial:") for k in after.emails)
    assert {k: before.emails[k] for k in early} == {k: after.emails.get(k) for k in early}


def test_settled_hours_skip_only_scheduler_passes_that_would_find_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator advances from settled instants (``advance_to(settled=True)``): the same
    run as with an opening scheduler pass at every hour, with fewer passes."""
    registry = load_workflows("workflows")
    passes = {"count": 0}
    tick = Runtime.tick

    def counted(self: Runtime) -> Any:
        passes["count"] += 1
        return tick(self)

    monkeypatch.setattr(Runtime, "tick", counted)
    settled = simulate(registry, contacts=40, days=6, seed=2)
    settled_passes, passes["count"] = passes["count"], 0

    def unsettled(runtime: Runtime, clock: Any, target: Any, *, settled: bool = False) -> Any:
        return virtual_time.advance_to(runtime, clock, target)  # always the opening pass

    monkeypatch.setattr(simulator, "advance_to", unsettled)
    opened = simulate(registry, contacts=40, days=6, seed=2)
    assert settled.events > 0 and settled.emails
    assert _what_happened(settled) == _what_happened(opened)
    assert settled_passes < passes["count"]


def test_reactions_to_emails_change_behaviour() -> None:
    registry = load_workflows("workflows")
    deaf = Profile(open_rate=0.0, click_rate=0.0)
    eager = Profile(
        open_rate=1.0,
        click_rate=0.5,
        reactions={
            name: {
                "boost": {event: factor * 5 for event, factor in r["boost"].items()},
                "days": r["days"],
            }
            for name, r in Profile().reactions.items()
        },
    )
    quiet = simulate(registry, contacts=40, days=15, seed=11, profile=deaf)
    keen = simulate(registry, contacts=40, days=15, seed=11, profile=eager)

    def purchases(r):  # type: ignore[no-untyped-def]
        return next(row.reached for row in r.funnel if row.stage == "purchase")

    assert purchases(keen) > purchases(quiet)


def test_compare_runs_two_workflow_folders_side_by_side(tmp_path: Path) -> None:
    folder_b = tmp_path / "lean"
    shutil.copytree(REPO / "workflows", folder_b, ignore=shutil.ignore_patterns("__pycache__"))
    # B drops the awareness nurture entirely
    init = folder_b / "__init__.py"
    init.write_text(
        init.read_text() + "\nWORKFLOWS = [w for w in WORKFLOWS if w.name != 'awareness_nurture']\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--contacts",
            "15",
            "--days",
            "5",
            "--seed",
            "2",
            "--compare",
            "workflows",
            str(folder_b),
            "--html",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "awareness_nurture:welcome" in result.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 4  # a funnel and a stage flow per run
    assert str(folder_b) in page


def test_a_profile_file_with_a_typo_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"open_rte": 0.5}))
    with pytest.raises(ProfileError, match="unknown profile keys"):
        Profile.from_file(bad)
    result = CliRunner().invoke(app, ["simulate", "--profile", str(bad), "--days", "1"])
    assert result.exit_code == 2
    assert "open_rte" in result.output
    assert _flat(result.output).count("bad.json") == 1  # not "profile bad.json: bad.json: ..."


def _flat(text: str) -> str:
    """``text`` without its white space: the terminal wraps long messages where it likes."""
    return "".join(text.split())


def test_a_partial_profile_overrides_only_what_it_gives(tmp_path: Path) -> None:
    given = tmp_path / "partial.json"
    given.write_text(
        json.dumps(
            {
                "behaviour": {
                    "awareness": {"trial.started": 0.05},
                    "decision": {"order.completed": 0},  # 0: this one event never happens
                },
                "reactions": {
                    "trial_offer": {"boost": {"trial.started": 5}, "days": 3},
                    "winback": None,
                },
                "open_rate": 0.5,
            }
        )
    )
    profile = Profile.from_file(given)
    default = Profile()
    assert profile.behaviour["awareness"] == {
        **default.behaviour["awareness"],
        "trial.started": 0.05,
    }
    assert profile.behaviour["decision"] == {"page.viewed": 0.1}
    assert all(
        profile.behaviour[stage] == events
        for stage, events in default.behaviour.items()
        if stage not in ("awareness", "decision")
    )
    assert profile.reactions["trial_offer"] == {"boost": {"trial.started": 5}, "days": 3}
    assert "winback" not in profile.reactions
    assert profile.reactions["nps_survey"] == default.reactions["nps_survey"]
    assert (profile.open_rate, profile.click_rate) == (0.5, default.click_rate)
    assert Profile.from_dict({}) == default


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"open_rate": 1.6}, "open_rate: 1.6 is not a share: use a number from 0 to 1"),
        ({"promoter_share": "high"}, "promoter_share: 'high' is not a share"),
        (
            {"behaviour": {"awareness": {"page.viewed": 2}}},
            'behaviour["awareness"]["page.viewed"]: 2 is not a daily chance: use a number '
            "from 0 to 1",
        ),
        (
            {"open_rate": 0.3, "click_rate": 0.5},
            "click_rate: 0.5 is more than open_rate 0.3: a click needs an open",
        ),
        ({"behaviour": {"awareness": 0.1}}, "behaviour: not a table of stage -> {event:"),
        (
            {"reactions": {"trial_offer": {"boost": {"trial.started": -1}, "days": 7}}},
            'reactions["trial_offer"]["boost"]["trial.started"]: -1 is not a factor',
        ),
        (
            {"reactions": {"trial_offer": {"boost": {}}}},
            'reactions["trial_offer"]: not {"boost": {event: factor}, "days": n}',
        ),
        ([0.5], "a profile is a JSON object, not list"),
        (
            {"reactions": {"trial_offer": {"boost": {}, "days": 7.5}}},
            'reactions["trial_offer"]["days"]: 7.5 is not a whole number of days (0 or more)',
        ),
        ({"open_rat": 0.2}, "unknown profile keys ['open_rat'] (did you mean 'open_rate'?)"),
    ],
)
def test_profile_values_out_of_range_are_refused_naming_the_key(data: Any, message: str) -> None:
    with pytest.raises(ProfileError) as refused:
        Profile.from_dict(data)
    assert message in str(refused.value)


def test_a_profile_naming_an_unknown_stage_or_event_is_refused_when_the_run_starts(
    tmp_path: Path,
) -> None:
    registry = load_workflows("workflows")
    typos = {
        "awarenes": {"page.viewed": 0.1},
        "decision": {"x.y": 0.2, "trial.strated": 0.1},
    }
    profile = Profile.from_dict({"behaviour": typos})
    with pytest.raises(ProfileError) as refused:
        simulate(registry, contacts=2, days=1, profile=profile)
    assert sorted(refused.value.problems) == [
        f"behaviour[\"awarenes\"]: unknown stage (did you mean 'awareness'?); stages: "
        f"{', '.join(registry.journey.stage_names)}",
        f'behaviour["decision"]["trial.strated"]: unknown event type (did you mean '
        f"'trial.started'?); known: {', '.join(sorted(registry.events))}",
        f'behaviour["decision"]["x.y"]: unknown event type; known: '
        f"{', '.join(sorted(registry.events))}",
    ]
    assert "trial.started" in registry.events and "awareness" in registry.journey.stage_names
    assert Profile().registry_problems(registry) == []
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({"behaviour": typos}))
    result = CliRunner().invoke(app, ["simulate", "--profile", str(bad), "--days", "1"])
    assert result.exit_code == 2, result.output
    expected = (
        "behaviour[\"awarenes\"]: unknown stage (did you mean 'awareness'?); stages: awareness,"
    )
    assert _flat(expected) in _flat(result.output)
    assert _flat('behaviour["decision"]["x.y"]: unknown event type') in _flat(result.output)


def test_the_defaults_for_stages_another_journey_lacks_are_not_refused() -> None:
    """The default profile is written for the shipped journey; a registry with fewer stages
    simply never sees those entries, unless a profile changes them."""
    registry = load_workflows("workflows")
    narrower = dataclasses.replace(
        registry,
        journey=dataclasses.replace(
            registry.journey,
            stages=tuple(s for s in registry.journey.stages if s.name != "advocacy"),
        ),
    )
    assert "advocacy" not in narrower.journey.stage_names
    assert Profile().registry_problems(narrower) == []
    changed = Profile.from_dict({"behaviour": {"advocacy": {"product.used": 0.5}}})
    assert changed.registry_problems(narrower) == [
        f'behaviour["advocacy"]: unknown stage; stages: {", ".join(narrower.journey.stage_names)}'
    ]


def test_the_simulate_command_uses_the_configured_workflows_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "nosuch")
    configured = CliRunner().invoke(app, ["simulate", "--contacts", "2", "--days", "1"])
    assert configured.exit_code == 2
    assert "workflows nosuch:" in configured.output and "'nosuch'" in configured.output
    told = CliRunner().invoke(
        app, ["simulate", "--contacts", "2", "--days", "1", "--workflows", "workflows"]
    )
    assert told.exit_code == 0, told.output
    missing = CliRunner().invoke(app, ["simulate", "--days", "1", "--workflows", "nosuch/"])
    assert missing.exit_code == 2
    assert "no folder 'nosuch/'" in missing.output


def test_workflows_without_a_goal_show_no_goal_rather_than_no_conversions() -> None:
    registry = load_workflows("workflows")
    run = simulate(registry, contacts=5, days=1, seed=1)
    assert run.without_goal == {name for name, w in registry.workflows.items() if not w.goals}
    assert {
        "engagement_education",
        "nps_survey",
        "purchase_thanks",
        "loyalty_reward",
        "advocacy_referral",
    } <= run.without_goal
    assert "awareness_nurture" not in run.without_goal
    shown = dataclasses.replace(
        run,
        emails={},
        goals={"awareness_nurture": (200, 92), "purchase_thanks": (67, 0)},
        without_goal=frozenset({"purchase_thanks"}),
    )
    console = Console(file=io.StringIO(), record=True, width=120)
    print_results([shown], console)
    lines = console.export_text().splitlines()
    assert "92/200 (46%)" in next(line for line in lines if "awareness_nurture" in line)
    thanks = next(line for line in lines if "purchase_thanks" in line)
    assert "-/67 (no goal)" in thanks and "0%" not in thanks
    page = html_report([shown])
    assert "<td>purchase_thanks</td><td>67</td><td>-</td><td>no goal</td>" in page
    assert "<td>awareness_nurture</td><td>200</td><td>92</td><td>46%</td>" in page


def test_a_copied_workflows_folder_runs_its_own_modules(tmp_path: Path) -> None:
    copy = tmp_path / "workflows_b"
    shutil.copytree(REPO / "workflows", copy, ignore=shutil.ignore_patterns("__pycache__"))
    original = load_workflows("workflows")
    assert load_workflows(copy).workflows["awareness_nurture"].version == (
        original.workflows["awareness_nurture"].version
    )
    # Given the copy's awareness module (not its __init__) changed after it was loaded once
    module = copy / "awareness.py"
    module.write_text(
        module.read_text().replace(
            'send_email("welcome", id="welcome")', 'send_email("welcome", id="hello")'
        )
    )
    assert load_workflows(copy).workflows["awareness_nurture"].version != (
        original.workflows["awareness_nurture"].version
    )
    args = ["simulate", "--contacts", "10", "--days", "2", "--seed", "2", "--compare"]
    result = CliRunner().invoke(app, [*args, "workflows", str(copy)])
    assert result.exit_code == 0, result.output
    # Then the emails table shows the step under its new id, for the copy only
    sent = {
        step: [int(n) for n in re.findall(r"\b\d+\b", line)]
        for line in result.output.splitlines()
        for step in ("awareness_nurture:hello", "awareness_nurture:welcome")
        if step in line
    }
    welcomes = sent["awareness_nurture:welcome"][0]
    assert welcomes > 0
    assert sent == {
        "awareness_nurture:welcome": [welcomes, 0],
        "awareness_nurture:hello": [0, welcomes],
    }
    assert "warning" not in result.output


def test_compare_warns_when_both_sides_are_the_same_workflows(tmp_path: Path) -> None:
    copy = tmp_path / "workflows_b"
    shutil.copytree(REPO / "workflows", copy, ignore=shutil.ignore_patterns("__pycache__"))
    args = ["simulate", "--contacts", "2", "--days", "1", "--compare", "workflows", str(copy)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _flat("hold the same workflows, each at the same version") in _flat(result.output)
    assert "defined outside" not in result.output


def test_a_copied_folder_that_imports_the_original_is_flagged(tmp_path: Path) -> None:
    copy = tmp_path / "workflows_b"
    shutil.copytree(REPO / "workflows", copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text().replace("from . import (", "from workflows import ("))
    assert simulator.defined_outside(load_workflows(copy), copy)
    result = CliRunner().invoke(
        app, ["simulate", "--contacts", "2", "--days", "1", "--workflows", str(copy)]
    )
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert _flat("runs workflows defined outside it: awareness_nurture (") in flat
    assert _flat(f"{REPO / 'workflows' / 'awareness.py'}:") in flat


def test_the_html_report_is_one_page() -> None:
    result = simulate(load_workflows("workflows"), contacts=10, days=3, seed=1)
    page = html_report([result])
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert "awareness" in page


def test_the_cli_uses_every_usable_cpu_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.cli_simulate as cli_simulate

    asked: list[int] = []

    def recording(registry: Any, **options: Any) -> SimulationResult:
        asked.append(options["processes"])
        return simulate(registry, **{**options, "processes": 1})

    monkeypatch.setattr(cli_simulate, "simulate", recording)
    monkeypatch.setattr(cli_simulate, "usable_cpus", lambda: 3)
    for extra, expected in (([], 3), (["--processes", "1"], 1)):
        result = CliRunner().invoke(app, ["simulate", "--contacts", "3", "--days", "1", *extra])
        assert result.exit_code == 0, result.output
        assert asked.pop() == expected


def test_usable_cpus_counts_this_process_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 2, 5}, raising=False)
    assert simulator.usable_cpus() == 3  # the CPUs it may use, not the machine's
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(), raising=False)
    assert simulator.usable_cpus() == 1  # never none
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # not on Linux
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert simulator.usable_cpus() == 6


def test_a_run_leaves_the_callers_garbage_collector_as_it_found_it() -> None:
    import gc

    before = (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled())
    during: list[tuple[int, ...]] = []
    simulate(
        load_workflows("workflows"),
        contacts=5,
        days=2,
        seed=1,
        on_progress=lambda _done, _total: during.append(gc.get_threshold()),
    )
    assert during == [simulator.GC_THRESHOLDS] * 2 != [before[0]] * 2
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before


def test_a_workflows_folder_that_raises_is_one_error_with_its_file_and_line(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "__init__.py").write_text("from engine import wait\n\nSTEPS = [wait(dayz=2)]\n")
    result = CliRunner().invoke(app, ["simulate", "--workflows", str(folder), "--days", "1"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    squeezed = "".join(result.output.split())  # rich wraps long paths anywhere
    assert "broken/__init__.py:3:TypeError:wait()" in squeezed, result.output


def test_a_reaction_to_a_template_no_workflow_sends_is_refused() -> None:
    registry = load_workflows("workflows")
    profile = Profile.from_dict(
        {"reactions": {"trial_ofer": {"boost": {"trial.started": 2}, "days": 3}}}
    )
    (problem,) = profile.registry_problems(registry)
    assert problem.startswith(
        'reactions["trial_ofer"]: no workflow sends this template (did you mean '
        "'trial_offer'?), so the reaction would "
        "never apply; templates sent: "
    )
    assert "trial_offer" in problem


def test_an_html_report_path_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no" / "such" / "report.html"
    result = CliRunner().invoke(app, ["simulate", "--days", "1", "--html", str(missing)])
    assert result.exit_code == 2, result.output
    assert _flat("there is no folder") in _flat(result.output)
    assert "Funnel" not in result.output  # nothing ran


def test_goal_conversions_say_how_many_enrollments_were_still_running() -> None:
    run = simulate(load_workflows("workflows"), contacts=40, days=5, seed=2)
    assert run.running, "a five-day run ends with enrollments still waiting"
    for workflow, running in run.running.items():
        entered, converted = run.goals[workflow]
        assert 0 < running <= entered - converted
    out = io.StringIO()
    print_results([run], Console(file=out, width=100))
    workflow, running = next(iter(run.running.items()))
    (row,) = [line for line in out.getvalue().splitlines() if f" {workflow} " in line]
    assert f"{running} running" in row
    assert "counted as not converted" in out.getvalue()
    assert "<th>still running</th>" in html_report([run])


def test_off_a_terminal_a_long_run_says_how_far_it_is_at_every_tenth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine import cli_simulate

    now = [100.0]
    monkeypatch.setattr(cli_simulate.time, "monotonic", lambda: now[0])
    lines = cli_simulate.ProgressLines("workflows_b")
    now[0] = 101.0
    lines.tick(1, 10)  # a second in: quiet, a short run says nothing
    now[0] = 110.0
    lines.tick(2, 10)
    lines.tick(2, 10)  # the same tenth: once
    now[0] = 120.0
    lines.tick(5, 20)  # 25%: still the second tenth
    lines.tick(10, 20)
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "simulating workflows_b: 2/10 shard-days (20%), 10 s so far, about 40 s left",
        "simulating workflows_b: 10/20 shard-days (50%), 20 s so far, about 20 s left",
    ]


def test_the_default_shards_keep_every_process_busy() -> None:
    assert simulator.shard_size(1000, 2) == 500  # one shard of 1,000 left a core idle
    assert simulator.shard_size(10_000, 2) == 5_000
    assert simulator.shard_size(12_000, 2) == 3_000  # not 5,000 + 5,000 + 2,000
    assert simulator.shard_size(100_000, 2) == 5_000
    assert simulator.shard_size(3, 8) == 1
    assert simulator.shard_size(5_000, 1) == 5_000


def test_a_run_on_two_processes_with_its_own_shards_is_the_run_on_one() -> None:
    registry = load_workflows("workflows")
    one = simulate(registry, contacts=40, days=6, seed=9, processes=1)  # a shard of 40
    two = simulate(registry, contacts=40, days=6, seed=9, processes=2)  # two of 20
    assert one.emails
    assert _what_happened(one) == _what_happened(two)


@pytest.mark.parametrize("contacts", [0, -3])
def test_a_run_of_no_contacts_is_refused_as_the_docstring_says(contacts: int) -> None:
    # The default shard size is worked out from the number of contacts: a run of none must
    # still be the ValueError simulate() documents, not a division by zero.
    with pytest.raises(ValueError, match="contacts, days and shard_contacts must be at least 1"):
        simulate(load_workflows("workflows"), contacts=contacts, days=1)
