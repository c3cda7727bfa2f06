"""The benchmarks' own conduct: a service that is down said in one line, no files left behind,
peak memory that is the run's own, targets said plainly. No timing is asserted."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.exc import OperationalError

from bench import common, pipeline, scheduler, simulator
from bench.common import Result
from bench.scheduler import throwaway_database

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    return tmp_path / "results"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: refused


def test_a_benchmark_with_postgresql_down_says_so_in_one_line() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scheduler", "--smoke", "--database-url", url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.scheduler: PostgreSQL is not reachable")


def test_only_a_failure_to_reach_a_service_loses_its_traceback() -> None:
    refused = psycopg.OperationalError("connection failed: Connection refused")
    wrapped = OperationalError("SELECT 1", {}, refused)
    assert common.service_down(wrapped) == (
        "PostgreSQL is not reachable: connection failed: Connection refused"
    )
    redis_down = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.")
    assert common.service_down(redis_down) == (
        "Redis is not reachable: Error 111 connecting to 127.0.0.1:1."
    )
    # A deadlock is an answer from a running server: a failure to report in full.
    deadlock = OperationalError("UPDATE", {}, psycopg.errors.DeadlockDetected("deadlock"))
    assert common.service_down(deadlock) is None
    assert common.service_down(RuntimeError("3 of 5 emails")) is None


def test_a_simulation_reports_its_own_peak_not_the_process_that_started_it() -> None:
    # ru_maxrss survives fork + exec: a child of a 400 MiB process reported 400 MiB.
    ballast = bytearray(400 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    report = simulator.measure(10, 1, 1)
    del ballast
    assert report["events"] > 0
    assert report["peak_rss_kib"] < 300 * 1024, report


def test_the_sqlite_pipeline_run_leaves_no_database_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rows = pipeline.main(["--smoke", "--database", "sqlite"])
    assert rows
    assert list(cwd.iterdir()) == []


def test_a_throwaway_sqlite_database_is_removed_afterwards(tmp_path: Path) -> None:
    path = tmp_path / "bench.db"
    with throwaway_database(f"sqlite:///{path}") as url:
        assert url.endswith("bench.db")
        path.write_bytes(b"x")
        Path(f"{path}-wal").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_the_scheduler_benchmark_says_whether_its_target_was_met(
    results_in_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = scheduler.main(
        ["--smoke", "--database-url", f"sqlite:///{tmp_path}/bench.db", "--broker-url", "stub://"]
    )
    met = rows[0].ratio <= scheduler.TARGET_RATIO
    out = capsys.readouterr().out
    assert (
        f"target claim and enqueue time within 1.5x of the baseline: {'met' if met else 'NOT met'}"
        in out
    )
    targets = json.loads((results_in_tmp / "scheduler.json").read_text())["targets"]
    assert targets == {"claim and enqueue time within 1.5x of the baseline": met}


def _simulator_rows(seconds: float, rss_ratio: float) -> list[Result]:
    return [
        Result.of("wall time", seconds, "s", 10.0),
        Result.of("cost", 1.0, "µs", 1.0),
        Result.of("events/s", 1.0, "events/s", 1.0),
        Result.of("peak RSS", 100.0 * rss_ratio, "MiB", 100.0),
    ]


def test_the_simulator_judges_wall_time_at_the_issue_sizes_and_memory_always() -> None:
    assert simulator.targets_of(_simulator_rows(112.3, 1.003), 10_000, 90) == {
        "10,000 x 90 days under 30 s": False,
        "peak RSS flat in days (within 10%)": True,
    }
    assert simulator.targets_of(_simulator_rows(290.0, 1.2), 100_000, 90) == {
        "100,000 x 90 days under 300 s": True,
        "peak RSS flat in days (within 10%)": False,
    }
    # smoke sizes: no wall-time target to judge
    assert list(simulator.targets_of(_simulator_rows(1.0, 1.0), 30, 2)) == [
        "peak RSS flat in days (within 10%)"
    ]
