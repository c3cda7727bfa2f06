"""``journeyline simulate`` at its edges: Ctrl-C, sizes out of range, names that look like
Rich markup, failed actions, a one-day chart, profile shapes, output off a terminal."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from engine import simulator
from engine.cli import _register_subcommands, app
from engine.reports.funnel import FunnelRow
from engine.simulation_profile import Profile, ProfileError
from engine.simulation_report import html_report, print_results
from engine.simulation_results import SimulationResult
from engine.simulator import MAX_CONTACTS, MAX_DAYS, load_workflows, simulate

_register_subcommands()

REPO = Path(__file__).resolve().parents[1]


def _flat(text: str) -> str:
    return "".join(text.split())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("journeyline-simulate-*"))


def test_ctrl_c_while_a_shard_is_set_up_leaves_no_database_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(simulator, "make_engine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate(load_workflows("workflows"), contacts=2, days=1, processes=1)
    assert _leftovers(tmp_path) == []


_INTERRUPTED_RUN = textwrap.dedent(
    """
    import sys
    from engine import simulator

    started = sys.argv[1]
    run_shard = simulator._run_shard

    def logged(registry, profile, seed, shard, *rest):
        with open(started, "a") as f:
            f.write(f"{shard}\\n")
        return run_shard(registry, profile, seed, shard, *rest)

    simulator._run_shard = logged  # forked workers inherit it

    def progress(done, total):
        print("tick", flush=True)

    try:
        simulator.simulate(
            simulator.load_workflows("workflows"), contacts=8, days=300, seed=3,
            processes=2, shard_contacts=2, on_progress=progress,
        )
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    sys.exit(0)
    """
)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="worker processes need fork"
)
def test_ctrl_c_with_worker_processes_stops_every_shard_quietly(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: no worker prints a traceback, the shards
    queued behind the running ones never start, and no shard's database is left."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    started = tmp_path / "started"
    script = tmp_path / "run.py"
    script.write_text(_INTERRUPTED_RUN)
    run = subprocess.Popen(
        [sys.executable, str(script), str(started)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stdout is not None
    try:
        assert run.stdout.readline() == "tick\n"  # the first shard-day is done: running
        os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert sorted(started.read_text().split()) == ["0", "1"]  # 2 and 3 were queued
    assert _leftovers(temp) == []


def test_sizes_out_of_range_are_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("a shard ran")

    monkeypatch.setattr(simulator, "_run_shard", ran)
    registry = load_workflows("workflows")
    with pytest.raises(ValueError, match="at most 1,000,000 contacts and 3,650 days"):
        simulate(registry, contacts=MAX_CONTACTS + 1, days=1)
    with pytest.raises(ValueError, match="at most"):
        simulate(registry, contacts=1, days=MAX_DAYS + 1)
    for option, value in (("--days", "3651"), ("--contacts", "1000001"), ("--processes", "65")):
        result = CliRunner().invoke(app, ["simulate", "--contacts", "1", option, value])
        assert result.exit_code == 2, result.output
        assert "less than or equal to" in result.output


def _result(label: str, **overrides: object) -> SimulationResult:
    stages = ["awareness", "consideration"]
    fields: dict[str, object] = {
        "label": label,
        "contacts": 2,
        "days": 1,
        "seed": 1,
        "events": 2,
        "seconds": 0.1,
        "funnel": [FunnelRow("awareness", 2, None, 1.5), FunnelRow("consideration", 1, 0.5, None)],
        "emails": {"trial_[/]x:st[bold]ep": 3},
        "goals": {"trial_[/]x": (2, 1)},
        "variants": {"trial_[/]x:ab=[red]A": (2, 1)},
        "daily": [{"awareness": 1, "consideration": 1}],
        "stages": stages,
    }
    fields.update(overrides)
    return SimulationResult(**fields)  # type: ignore[arg-type]


def test_names_that_look_like_rich_markup_are_printed_as_written() -> None:
    out = io.StringIO()
    print_results([_result("w[red]x")], Console(file=out, width=240))
    text = out.getvalue()
    for name in ("w[red]x: reached", "trial_[/]x:st[bold]ep", "trial_[/]x:ab=[red]A"):
        assert name in text
    assert "w[red]x: 2 contacts" in text


def test_the_funnel_says_its_median_counts_only_the_stays_that_ended() -> None:
    out = io.StringIO()
    print_results([_result("run", emails={}, goals={}, variants={})], Console(file=out, width=240))
    assert "contacts still in the stage at the end are left out" in out.getvalue()


def test_a_one_day_run_draws_its_stage_flow_across_the_chart() -> None:
    page = html_report([_result("run")])
    polygons = page.split("<polygon points='")[1:]
    assert polygons
    for polygon in polygons:
        xs = {float(p.split(",")[0]) for p in polygon.split("'")[0].split()}
        assert xs == {0.0, 720.0}


def test_actions_that_failed_are_reported_not_silently_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(REPO / "workflows", folder, ignore=shutil.ignore_patterns("__pycache__"))
    template = folder / "templates" / "welcome.j2"
    template.write_text(
        template.read_text().replace("{% block text %}", "{% block text %}{{ 1 // 0 }}", 1)
    )
    run = simulate(load_workflows(folder), contacts=3, days=1, seed=1)
    assert "awareness_nurture:welcome" not in run.emails
    count, error = run.failed["awareness_nurture:welcome"]
    assert count == 3
    assert "ZeroDivisionError" in error
    out = io.StringIO()
    print_results([run], Console(file=out, width=300))
    assert "3 awareness_nurture:welcome action(s) failed" in out.getvalue()
    assert "Actions that failed" in html_report([run])


@pytest.mark.parametrize("stage_value", [0.1, None, [0.1]])
def test_a_stage_that_is_not_a_table_is_named(stage_value: object) -> None:
    with pytest.raises(ProfileError) as refused:
        Profile.from_dict({"behaviour": {"awareness": stage_value}})
    assert 'behaviour["awareness"]' in str(refused.value)


def test_off_a_terminal_the_output_starts_with_the_tables_not_a_blank_line() -> None:
    result = CliRunner().invoke(app, ["simulate", "--contacts", "2", "--days", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.lstrip(" ").startswith("Funnel"), repr(result.output[:80])


def test_a_folder_without_workflows_is_warned_about(tmp_path: Path) -> None:
    folder = tmp_path / "none"
    shutil.copytree(REPO / "workflows", folder, ignore=shutil.ignore_patterns("__pycache__"))
    init = folder / "__init__.py"
    init.write_text(init.read_text() + "\nWORKFLOWS = []\n")
    result = CliRunner().invoke(
        app, ["simulate", "--contacts", "2", "--days", "1", "--workflows", str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert "definesnoworkflows" in _flat(result.output)


def test_compared_journeys_with_different_stages_keep_each_figure_on_its_stage() -> None:
    before = _result(
        "before",
        funnel=[FunnelRow("awareness", 10, None, None), FunnelRow("consideration", 4, 0.4, None)],
        emails={},
        goals={},
        variants={},
    )
    after = _result(
        "after",
        stages=["awareness", "interest", "consideration"],
        funnel=[
            FunnelRow("awareness", 10, None, None),
            FunnelRow("interest", 7, 0.7, None),
            FunnelRow("consideration", 3, 3 / 7, None),
        ],
        emails={},
        goals={},
        variants={},
    )
    out = io.StringIO()
    print_results([before, after], Console(file=out, width=240))
    rows = {
        cells[0]: cells[1:]
        for line in out.getvalue().splitlines()
        if "│" in line
        for cells in [[c.strip() for c in line.strip("│ ").split("│")]]
    }
    assert rows["consideration"] == ["4", "40%", "-", "3", "43%", "-"]
    assert rows["interest"] == ["n/a", "", "", "7", "70%", "-"]


def test_workflows_given_with_compare_is_refused_not_ignored() -> None:
    both = ["--workflows", "workflows", "--compare", "workflows", "nosuch"]
    result = CliRunner().invoke(app, ["simulate", "--contacts", "1", "--days", "1", *both])
    assert result.exit_code == 2, result.output
    assert "leave--workflowsout" in _flat(result.output)


def test_a_workflow_only_one_compared_side_runs_is_not_shown_as_entered_by_nobody() -> None:
    before = _result(
        "before",
        workflows=frozenset({"nurture", "extra"}),
        goals={"nurture": (10, 4), "extra": (5, 1)},
        emails={},
        variants={},
    )
    after = _result(
        "after",
        workflows=frozenset({"nurture"}),
        goals={"nurture": (10, 4)},
        emails={},
        variants={},
    )
    out = io.StringIO()
    print_results([before, after], Console(file=out, width=240))
    extra = next(line for line in out.getvalue().splitlines() if "extra" in line)
    assert "1/5 (20%)" in extra
    assert "- (not in this run)" in extra
    assert "0/0" not in extra


def test_a_progress_line_gives_the_share_done_not_the_tenth_it_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import cli_simulate

    printed = io.StringIO()
    monkeypatch.setattr(cli_simulate, "err_console", Console(file=printed, width=200))
    monkeypatch.setattr(cli_simulate.ProgressLines, "QUIET_SECONDS", 0.0)
    lines = cli_simulate.ProgressLines("workflows")
    lines.tick(7, 40)  # the first line after the quiet start: 17.5% done
    assert "7/40 shard-days (17%)" in printed.getvalue()


def test_ctrl_c_says_where_the_run_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.cli_simulate as cli_simulate

    def interrupted(
        *args: object, on_progress: Callable[[int, int], None], **kwargs: object
    ) -> None:
        on_progress(3, 40)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_simulate, "simulate", interrupted)
    result = CliRunner().invoke(app, ["simulate", "--contacts", "2", "--days", "20"])
    assert result.exit_code == 130, result.output
    assert "interruptedafter3/" in _flat(result.output), result.output
    assert "temporarydatabasesareremoved" in _flat(result.output), result.output
