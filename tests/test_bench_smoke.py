"""The benchmarks run in smoke mode and produce figures; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import (
    common,
    end_to_end,
    hubspot_lookup,
    ingest,
    machine,
    memory,
    pipeline,
    scheduler,
    schedules,
    simulator,
)
from bench.services import redis_db_url


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    return tmp_path / "results"


def _check(rows: list[common.Result], json_path: Path) -> None:
    assert rows
    for r in rows:
        assert r.value > 0 and r.baseline > 0 and r.ratio > 0, r
    data = json.loads(json_path.read_text())
    assert len(data["results"]) == len(rows)
    assert data["machine"]["python"]


def test_bench_machine_smoke(results_in_tmp: Path) -> None:
    rows = machine.main(["--smoke"])
    _check(rows, results_in_tmp / "machine.json")


def test_bench_scheduler_smoke_on_sqlite(results_in_tmp: Path, tmp_path: Path) -> None:
    rows = scheduler.main(
        ["--smoke", "--database-url", f"sqlite:///{tmp_path}/bench.db", "--broker-url", "stub://"]
    )
    _check(rows, results_in_tmp / "scheduler.json")
    assert json.loads((results_in_tmp / "scheduler.json").read_text())["due"] == 200


@pytest.mark.redis
def test_bench_scheduler_smoke_enqueues_on_redis(
    results_in_tmp: Path, postgres_url: str, redis_url: str
) -> None:
    """The timed passes send their wake-up messages to Redis, and the benchmark counts them
    there (it raises if the count differs from what the passes sent)."""
    smoke_redis = redis_db_url(redis_url, SMOKE_REDIS_DB)
    rows = scheduler.main(["--smoke", "--database-url", postgres_url, "--broker-url", smoke_redis])
    _check(rows, results_in_tmp / "scheduler.json")
    data = json.loads((results_in_tmp / "scheduler.json").read_text())
    assert data["broker"] == "redis" and data["database"] == "postgresql"


def test_bench_schedules_smoke_on_sqlite(results_in_tmp: Path, tmp_path: Path) -> None:
    rows = schedules.main(["--smoke", "--database-url", f"sqlite:///{tmp_path}/bench.db"])
    _check(rows, results_in_tmp / "schedules.json")
    data = json.loads((results_in_tmp / "schedules.json").read_text())
    assert (data["contacts"], data["zones"]) == (2_000, 40)


def test_bench_pipeline_smoke_on_sqlite(results_in_tmp: Path, tmp_path: Path) -> None:
    rows = pipeline.main(["--smoke", "--database", "sqlite", "--work-dir", str(tmp_path)])
    _check(rows, results_in_tmp / "pipeline.json")
    assert json.loads((results_in_tmp / "pipeline.json").read_text())["contacts"] == 30


# The benchmarks on real services use their own Redis database, never the test suite's.
SMOKE_REDIS_DB = 14


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_bench_ingest_smoke(results_in_tmp: Path, postgres_url: str, redis_url: str) -> None:
    rows = ingest.main(
        [
            "--smoke",
            "--database-url",
            postgres_url,
            "--redis-url",
            redis_db_url(redis_url, SMOKE_REDIS_DB),
        ]
    )
    _check(rows, results_in_tmp / "ingest.json")
    data = json.loads((results_in_tmp / "ingest.json").read_text())
    assert data["journeyline"]["stored"] == data["events"] + 200


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_bench_end_to_end_smoke(results_in_tmp: Path, postgres_url: str, redis_url: str) -> None:
    smoke_redis = redis_db_url(redis_url, SMOKE_REDIS_DB)
    rows = end_to_end.main(["--smoke", "--database-url", postgres_url, "--redis-url", smoke_redis])
    _check(rows, results_in_tmp / "end_to_end.json")
    data = json.loads((results_in_tmp / "end_to_end.json").read_text())
    assert set(data["targets"]) == {
        "sustained >= 2x (b)",
        "sustained >= 1/4 (a)",
        "p99 < 1 s at 50%",
    }


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_bench_memory_smoke(results_in_tmp: Path, postgres_url: str, redis_url: str) -> None:
    smoke_redis = redis_db_url(redis_url, SMOKE_REDIS_DB)
    rows = memory.main(["--smoke", "--database-url", postgres_url, "--redis-url", smoke_redis])
    _check(rows, results_in_tmp / "memory.json")
    assert json.loads((results_in_tmp / "memory.json").read_text())["large"] == 200


def test_bench_simulator_smoke(results_in_tmp: Path) -> None:
    rows = simulator.main(["--smoke"])
    _check(rows, results_in_tmp / "simulator.json")
    runs = json.loads((results_in_tmp / "simulator.json").read_text())["runs"]
    assert runs["large"]["events"] > 0 and runs["large"]["peak_rss_kib"] > 0


def test_bench_sendgrid_client_smoke(results_in_tmp: Path) -> None:
    from bench import sendgrid_client

    rows = sendgrid_client.main(["--smoke"])
    _check(rows, results_in_tmp / "sendgrid_client.json")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_bench_campaign_smoke(results_in_tmp: Path, postgres_url: str, redis_url: str) -> None:
    from bench import campaign

    # Its own Redis database: its workers must not take another benchmark's jobs.
    smoke_redis = redis_db_url(redis_url, 10)
    rows = campaign.main(["--smoke", "--database-url", postgres_url, "--redis-url", smoke_redis])
    _check(rows, results_in_tmp / "campaign.json")
    data = json.loads((results_in_tmp / "campaign.json").read_text())
    assert data["runs"]["large"]["requests"] == 3  # 2,100 emails in requests of 1,000
    assert data["runs"]["baseline"]["requests"] == 50  # batching off: one per email


def test_bench_crm_batch_smoke(results_in_tmp: Path) -> None:
    from bench import crm_batch

    rows = crm_batch.main(["--smoke"])
    _check(rows, results_in_tmp / "crm_batch.json")
    requests = json.loads((results_in_tmp / "crm_batch.json").read_text())["requests"]
    # 30 contacts: a read and an upsert (and, for existing ones, an update) in all, against
    # 3 requests per contact one by one
    assert requests == {
        "new contacts: batched": 2,
        "new contacts: one per action": 90,
        "existing contacts: batched": 3,
        "existing contacts: one per action": 90,
    }


def test_a_drain_is_timed_from_every_worker_ready_or_for_a_tiny_one_from_their_start() -> None:
    arrived = {"a@x": 10.5, "b@x": 11.0}
    # the usual case: both emails after every worker process was ready (at 10.0)
    assert end_to_end.drain_rate(arrived, 10.0, 9.0) == 2 / 1.0
    # one process did all of it before the other was ready (at 12.0): timed from the start
    assert end_to_end.drain_rate(arrived, 12.0, 9.0) == 2 / 2.0


def test_bench_hubspot_lookup_smoke_on_sqlite(results_in_tmp: Path, tmp_path: Path) -> None:
    rows = hubspot_lookup.main(["--smoke", "--database-url", f"sqlite:///{tmp_path}/bench.db"])
    assert len(rows) == 2 and all(r.value > 0 and r.baseline > 0 for r in rows)
    assert (results_in_tmp / "hubspot_lookup.json").exists()
