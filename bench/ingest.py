"""Ingest: ``POST /v1/events`` in batches of 100, from a load generator in another process.

``python -m bench.ingest [--events 20000] [--batch 100] [--connections 4] [--smoke]``.

``journeyline serve`` (one uvicorn process) runs on a throwaway PostgreSQL database (created
next to ``--database-url`` and dropped afterwards) with a dedicated Redis database as the
broker; no worker runs, so the figure is what the API accepts: every 202 means the batch's
events are committed and their processing enqueued. Each event is about a new contact (the
dearest case: a contact row, a ``contact.created`` event and the event). After the run the
events are counted in the database.

Baseline in the same run: a bare FastAPI app (``bench.baselines_http``) under uvicorn that
only parses the same body with the same models. Target: at least 5,000 events/s accepted.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from bench import loadgen
from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from bench.scheduler import DEFAULT_ADMIN_URL, throwaway_database
from bench.services import (
    ApiServer,
    UvicornApp,
    bench_env,
    percentile,
    redis_for,
    workdir,
)
from engine import migrations
from engine.api_keys import create_key
from engine.db import make_engine, transaction
from engine.models import Event

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
TARGET_EVENTS_PER_S = 5_000
EVENT_TYPE = "page.viewed"


def make_api_key(db_url: str) -> str:
    db = make_engine(db_url)
    try:
        with transaction(db) as session:
            _, key = create_key(session, "bench", ["events:write"], datetime.now(UTC))
        return key
    finally:
        db.dispose()


def summarize(result: dict[str, Any]) -> dict[str, float]:
    """Events/s over the whole run and request latency quantiles (ms) of a closed load."""
    requests = result["requests"]
    failed = [r for r in requests if r[4] != 202]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(requests)} requests failed, e.g. {failed[0]}")
    events = sum(r[3] for r in requests)
    span = max(r[1] for r in requests) - min(r[0] for r in requests)
    latencies = [(r[1] - r[0]) * 1000 for r in requests]
    return {
        "events": events,
        "seconds": span,
        "events_per_s": events / span,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def load(url: str, key: str | None, *, prefix: str, start: int, count: int, args: Any) -> dict:
    spec = {
        "mode": "closed",
        "url": url,
        "key": key,
        "path": "/v1/events",
        "prefix": prefix,
        "type": EVENT_TYPE,
        "start": start,
        "count": count,
        "batch": args.batch,
        "connections": args.connections,
    }
    return summarize(loadgen.run(spec))


def measure_journeyline(args: Any, events: int, warmup: int, tmp: Path) -> dict[str, float]:
    with throwaway_database(args.database_url) as db_url, redis_for(args.redis_url) as broker:
        migrations.upgrade(db_url)
        key = make_api_key(db_url)
        env = bench_env(
            JOURNEYLINE_DATABASE_URL=db_url,
            JOURNEYLINE_BROKER_URL=broker,
            JOURNEYLINE_LOG_LEVEL="WARNING",
        )
        server = ApiServer(env, log=tmp / "serve.log")
        try:
            load(server.url, key, prefix="warm", start=0, count=warmup, args=args)
            figures = load(server.url, key, prefix="lead", start=0, count=events, args=args)
        finally:
            server.close()
        db = make_engine(db_url)
        try:
            with db.connect() as conn:
                stored = conn.execute(
                    select(func.count()).select_from(Event).where(col(Event.source) == "api")
                ).scalar_one()
        finally:
            db.dispose()
        if stored != events + warmup:
            raise RuntimeError(f"{stored} events stored, expected {events + warmup}")
        figures["stored"] = stored
        return figures


def measure_baseline(args: Any, events: int, warmup: int, tmp: Path) -> dict[str, float]:
    app = UvicornApp(
        "bench.baselines_http:app", bench_env(), log=tmp / "baseline.log", health="/healthz"
    )
    try:
        load(app.url, None, prefix="warm", start=0, count=warmup, args=args)
        return load(app.url, None, prefix="lead", start=0, count=events, args=args)
    finally:
        app.close()


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--database-url", default=None, help=f"default {DEFAULT_ADMIN_URL}")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed before and after")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    events, warmup = (600, 200) if args.smoke else (args.events, min(2_000, args.events))
    with workdir() as tmp:
        ours = measure_journeyline(args, events, warmup, tmp)
        base = measure_baseline(args, events, warmup, tmp)
    rows = [
        Result.of(
            f"events/s accepted, batches of {args.batch} (baseline: parse only)",
            ours["events_per_s"],
            "events/s",
            base["events_per_s"],
        ),
        Result.of("p50 latency of a batch", ours["p50_ms"], "ms", base["p50_ms"]),
        Result.of("p99 latency of a batch", ours["p99_ms"], "ms", base["p99_ms"]),
    ]
    print_results(f"bench.ingest ({events:,} events, {args.connections} connections)", rows)
    met = ours["events_per_s"] >= TARGET_EVENTS_PER_S
    verdict = "met" if met else "NOT met"
    print(
        f"target >= {TARGET_EVENTS_PER_S:,} events/s: {verdict} "
        f"({ours['events_per_s']:,.0f} events/s; {ours['stored']:,} events stored)"
    )
    path = write_json(
        "ingest",
        rows,
        events=events,
        batch=args.batch,
        connections=args.connections,
        smoke=args.smoke,
        journeyline=ours,
        baseline=base,
        target_events_per_s=TARGET_EVENTS_PER_S,
        target_met=met,
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.ingest")
