"""Time for ``claim_due`` to claim D due enrollments among W waiting vs among D waiting.

``python -m bench.scheduler [--waiting 1000000] [--due 10000] [--database-url URL] [--smoke]``.
By default a throwaway PostgreSQL database is created next to
``postgresql+psycopg://postgres@127.0.0.1:5432/test`` and dropped afterwards; pass
``--database-url sqlite:///path.db`` for SQLite (the file is overwritten). The baseline is the
same claim with only the D due enrollments in the table. Target: ratio within 1.5.
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

from bench.common import Result, add_smoke_flag, print_results, write_json
from bench.services import contact_row
from engine.db import make_engine
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.scheduler import claim_due

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 10_000
CLAIM_BATCH = 500
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@contextmanager
def throwaway_database(url: str | None) -> Iterator[str]:
    """Yield a database URL: a SQLite file made empty, or a fresh PostgreSQL database."""
    if url is not None and url.startswith("sqlite"):
        path = make_url(url).database
        if path:
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
        yield url
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


def claim_all(db: Engine) -> tuple[float, int]:
    """Loop ``claim_due`` until nothing is due; return (seconds, enrollments claimed)."""
    claimed = 0
    start = time.perf_counter()
    while True:
        due = claim_due(db, now=NOW, lease=timedelta(minutes=10), batch_size=CLAIM_BATCH)
        if not due.enrollments:
            break
        claimed += len(due.enrollments)
    return time.perf_counter() - start, claimed


def measure(url: str | None, *, waiting: int, due: int) -> tuple[float, float]:
    """(fill seconds, claim seconds) for ``waiting`` waiting enrollments, ``due`` due."""
    with throwaway_database(url) as db_url:
        db = make_engine(db_url)
        try:
            SQLModel.metadata.create_all(db)
            claim_all(db)  # warm up: connection pool and statement compilation, not timed
            filled = fill(db, waiting=waiting, due=due)
            seconds, claimed = claim_all(db)
            if claimed != due:
                raise RuntimeError(f"claimed {claimed} enrollments, expected {due}")
        finally:
            db.dispose()
    return filled, seconds


def run(url: str | None, *, waiting: int, due: int) -> tuple[list[Result], dict[str, float]]:
    fill_large, large = measure(url, waiting=waiting, due=due)
    fill_small, small = measure(url, waiting=due, due=due)
    rows = [
        Result.of(
            f"claim {due:,} due among {waiting:,} waiting (baseline: among {due:,})",
            large,
            "s",
            small,
        ),
        Result.of(
            f"claim rate among {waiting:,} waiting (baseline: among {due:,})",
            due / large,
            "enrollments/s",
            due / small,
        ),
    ]
    return rows, {"fill_seconds_large": fill_large, "fill_seconds_small": fill_small}


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"sqlite:///file.db, or a PostgreSQL admin URL (default {DEFAULT_ADMIN_URL})",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    waiting, due = (2_000, 200) if args.smoke else (args.waiting, args.due)
    if due > waiting:
        parser.error("--due cannot exceed --waiting")
    rows, fills = run(args.database_url, waiting=waiting, due=due)
    dialect = "sqlite" if (args.database_url or "").startswith("sqlite") else "postgresql"
    print_results(f"bench.scheduler ({dialect}, batch_size={CLAIM_BATCH})", rows)
    large, small = fills["fill_seconds_large"], fills["fill_seconds_small"]
    print(f"fill: {large:.1f} s for {waiting:,} rows, {small:.1f} s for {due:,}")
    path = write_json(
        "scheduler", rows, waiting=waiting, due=due, database=dialect, smoke=args.smoke, **fills
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
