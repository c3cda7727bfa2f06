"""Time for scheduler passes to claim D due enrollments among W waiting and enqueue their
wake-up jobs, vs the same among D waiting.

``python -m bench.scheduler [--waiting 1000000] [--due 10000] [--database-url URL]
[--broker-url URL] [--smoke]``.
By default a throwaway PostgreSQL database is created next to
``postgresql+psycopg://postgres@127.0.0.1:5432/test`` and dropped afterwards; pass
``--database-url sqlite:///path.db`` for SQLite (the file is overwritten and removed). What is
timed is the service's own pass, ``Runtime.tick`` (claim a batch, send its ``wake_enrollments``
messages, plan schedule slots), repeated until a pass finds nothing due; the messages go to
the Redis database of ``--broker-url`` (flushed before and after; ``stub://`` keeps them in
memory) and are counted there afterwards. The baseline is the same passes with only the D due
enrollments in the table. Target: ratio within 1.5.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, make_url, pool, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bench.common import Result, add_smoke_flag, print_results, print_targets, run_cli, write_json
from bench.services import contact_row, queue_backlog, redis_for
from engine.broker import queues_of
from engine.clock import VirtualClock
from engine.db import make_engine
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.runtime import Runtime
from engine.settings import Settings

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/9"
BATCH = 10_000
CLAIM_BATCH = 500
TARGET_RATIO = 1.5
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@contextmanager
def throwaway_database(url: str | None) -> Iterator[str]:
    """Yield a database URL: a SQLite file made empty, or a fresh PostgreSQL database;
    either is removed afterwards (a SQLite file left behind would land in the checkout when
    the path is relative, as in ``--database-url sqlite:///bench.db``)."""
    if url is not None and url.startswith("sqlite"):
        path = make_url(url).database
        files = [Path(path + suffix) for suffix in ("", "-wal", "-shm")] if path else []
        for file in files:
            file.unlink(missing_ok=True)
        try:
            yield url
        finally:
            for file in files:
                file.unlink(missing_ok=True)
        return
    admin_url = url or DEFAULT_ADMIN_URL
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    name = f"jl_bench_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(db: Engine, *, waiting: int, due: int) -> float:
    """Insert one contact and ``waiting`` waiting enrollments, ``due`` of them due at NOW.

    Returns the seconds it took.
    """
    start = time.perf_counter()
    with db.begin() as conn:
        contact_id = conn.execute(
            insert(Contact.__table__)  # type: ignore[attr-defined]
            .values(**contact_row("bench@example.com", now=NOW))
            .returning(Contact.__table__.c.id)  # type: ignore[attr-defined]
        ).scalar_one()
    past, future = NOW - timedelta(minutes=5), NOW + timedelta(days=3)
    table: Any = Enrollment.__table__  # type: ignore[attr-defined]
    for lo in range(0, waiting, BATCH):
        batch = [
            {
                "contact_id": contact_id,
                "workflow": "bench",
                "version": "1",
                "entry": i + 1,
                "status": EnrollmentStatus.WAITING.value,
                "position": 1,
                # Spread the due rows through the table rather than bunching them first.
                "wake_at": past
                if i % max(waiting // due, 1) == 0 and i // max(waiting // due, 1) < due
                else future,
                "context": {},
                "started_at": NOW,
                "updated_at": NOW,
            }
            for i in range(lo, min(lo + BATCH, waiting))
        ]
        with db.begin() as conn:
            conn.execute(insert(table), batch)
    if db.dialect.name == "postgresql":
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE enrollments"))
    else:
        with db.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - start


def pass_all(runtime: Runtime) -> tuple[float, int, int]:
    """Scheduler passes until one finds nothing due: (seconds, enrollments claimed, messages
    sent for them and for any schedule slot the passes claimed)."""
    claimed = messages = 0
    start = time.perf_counter()
    while True:
        tick = runtime.tick()
        if not tick:
            break
        claimed += len(tick.enrollments)
        messages += -(-len(tick.enrollments) // runtime.wakes_per_job)  # chunks, rounded up
        messages += len(tick.contacts) + len(tick.actions) + len(tick.schedule_slots)
    return time.perf_counter() - start, claimed, messages


def _backlog(runtime: Runtime, broker_url: str) -> int:
    """Messages waiting on the broker's queues (Redis), or in the stub broker's."""
    if broker_url.startswith("stub"):
        return sum(q.qsize() for q in runtime.broker.queues.values())  # type: ignore[attr-defined]
    return queue_backlog(broker_url, tuple(queues_of(runtime.broker)))


def measure(url: str | None, broker_url: str, *, waiting: int, due: int) -> tuple[float, float]:
    """(fill seconds, pass seconds) for ``waiting`` waiting enrollments, ``due`` due."""
    with throwaway_database(url) as db_url:
        db = make_engine(db_url)
        settings = Settings(
            database_url=db_url, broker_url=broker_url, scheduler_batch_size=CLAIM_BATCH
        )
        runtime = Runtime(settings, clock=VirtualClock(NOW), db=db)
        try:
            SQLModel.metadata.create_all(db)
            pass_all(runtime)  # warm up: connection pool and statement compilation, not timed
            filled = fill(db, waiting=waiting, due=due)
            before = _backlog(runtime, broker_url)
            seconds, claimed, messages = pass_all(runtime)
            if claimed != due:
                raise RuntimeError(f"claimed {claimed} enrollments, expected {due}")
            enqueued = _backlog(runtime, broker_url) - before
            if enqueued != messages:
                raise RuntimeError(f"{enqueued} messages on the broker, expected {messages}")
        finally:
            runtime.close()
    return filled, seconds


def run(
    url: str | None, broker_url: str, *, waiting: int, due: int
) -> tuple[list[Result], dict[str, float]]:
    with _broker(broker_url):
        fill_large, large = measure(url, broker_url, waiting=waiting, due=due)
    with _broker(broker_url):
        fill_small, small = measure(url, broker_url, waiting=due, due=due)
    rows = [
        Result.of(
            f"claim and enqueue {due:,} due among {waiting:,} waiting (baseline: among {due:,})",
            large,
            "s",
            small,
        ),
        Result.of(
            f"claim and enqueue rate among {waiting:,} waiting (baseline: among {due:,})",
            due / large,
            "enrollments/s",
            due / small,
        ),
    ]
    return rows, {"fill_seconds_large": fill_large, "fill_seconds_small": fill_small}


@contextmanager
def _broker(broker_url: str) -> Iterator[None]:
    """A Redis database flushed before and after; nothing to do for ``stub://``."""
    if broker_url.startswith("stub"):
        yield
        return
    with redis_for(broker_url):
        yield


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"sqlite:///file.db, or a PostgreSQL admin URL (default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--broker-url",
        default=DEFAULT_BROKER_URL,
        help=f"redis://... (flushed before and after) or stub:// (default {DEFAULT_BROKER_URL})",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    waiting, due = (2_000, 200) if args.smoke else (args.waiting, args.due)
    if due > waiting:
        parser.error("--due cannot exceed --waiting")
    rows, fills = run(args.database_url, args.broker_url, waiting=waiting, due=due)
    dialect = "sqlite" if (args.database_url or "").startswith("sqlite") else "postgresql"
    print_results(f"bench.scheduler ({dialect}, batch_size={CLAIM_BATCH})", rows)
    targets = {
        f"claim and enqueue time within {TARGET_RATIO}x of the baseline": rows[0].ratio
        <= TARGET_RATIO
    }
    print_targets(targets)
    large, small = fills["fill_seconds_large"], fills["fill_seconds_small"]
    print(f"fill: {large:.1f} s for {waiting:,} rows, {small:.1f} s for {due:,}")
    path = write_json(
        "scheduler",
        rows,
        waiting=waiting,
        due=due,
        database=dialect,
        broker=args.broker_url.split("://", 1)[0],
        smoke=args.smoke,
        targets=targets,
        **fills,
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.scheduler")
