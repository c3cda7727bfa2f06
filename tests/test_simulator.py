"""The lifecycle simulator: deterministic, comparable, reported."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import simulator, virtual_time
from engine.cli import _register_subcommands, app
from engine.runtime import Runtime
from engine.simulation_report import html_report
from engine.simulator import Profile, SimulationResult, load_workflows, simulate

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
    bad = tmp_path / "profile.json"
    bad.write_text(json.dumps({"open_rte": 0.5}))
    with pytest.raises(ValueError, match="unknown profile keys"):
        Profile.from_file(bad)
    result = CliRunner().invoke(app, ["simulate", "--profile", str(bad), "--days", "1"])
    assert result.exit_code == 2
    assert "open_rte" in result.output


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


def test_usable_cpus_counts_this_process_affinity() -> None:
    assert 1 <= simulator.usable_cpus() <= (os.cpu_count() or 1)


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
