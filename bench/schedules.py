"""Cost of a schedule-trigger planning pass: independent of the number of contacts.

``python -m bench.schedules [--contacts 200000] [--zones 40] [--database-url URL] [--smoke]``.
By default a throwaway PostgreSQL database is created next to
``postgresql+psycopg://postgres@127.0.0.1:5432/test`` and dropped afterwards; pass
``--database-url sqlite:///path.db`` for SQLite (the file is overwritten).

Rows:

- ``idle pass``: one ``SchedulePlanner.plan`` (time zones in use, the latest slot per zone,
  nothing new to record) with C contacts over Z time zones; baseline: the same pass with one
  contact per zone. Target: ratio within 1.5 (the pass does not read the contacts).
- ``first pass``: a pass that records a new slot for each of the Z zones; same baseline idea.
- ``per-contact loop``: the design this avoids, reading every contact and computing its own
  latest slot in Python each tick; baseline: the idle pass (the ratio is the saving).
- ``fire``: contacts offered the workflow per second when one zone's slot fires
  (``fire_slot`` batches of 200, a one-email workflow); baseline: the same contacts started
  with ``start_enrollment`` one transaction each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col

from bench.common import Result, add_smoke_flag, print_results, print_targets, run_cli, write_json
from bench.scheduler import throwaway_database
from engine import Workflow, build_registry, lifecycle_journey, on_schedule, send_email
from engine.db import make_engine, transaction
from engine.entry import start_enrollment
from engine.models import Contact, ScheduleSlot
from engine.registry import Registry
from engine.schedules import SchedulePlanner, fire_slot, latest_slot

TEMPLATES = Path(__file__).resolve().parent.parent / "workflows" / "templates"
ZONES = [
    "UTC", "Europe/London", "Europe/Paris", "Europe/Madrid", "Europe/Berlin", "Europe/Rome",
    "Europe/Warsaw", "Europe/Athens", "Europe/Istanbul", "Europe/Moscow", "Africa/Cairo",
    "Africa/Lagos", "Africa/Johannesburg", "Asia/Dubai", "Asia/Karachi", "Asia/Kolkata",
    "Asia/Dhaka", "Asia/Bangkok", "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo",
    "Asia/Seoul", "Australia/Perth", "Australia/Sydney", "Pacific/Auckland", "Pacific/Honolulu",
    "America/Anchorage", "America/Los_Angeles", "America/Denver", "America/Phoenix",
    "America/Chicago", "America/Mexico_City", "America/New_York", "America/Toronto",
    "America/Bogota", "America/Lima", "America/Santiago", "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires", "Atlantic/Reykjavik",
]  # fmt: skip
DEPLOYED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a Sunday
CRON = "0 9 * * MON"
BATCH = 10_000
TARGET_RATIO = 1.5


def registry() -> Registry:
    weekly = Workflow(
        "bench_weekly", trigger=on_schedule(CRON), steps=[send_email("engagement_tips")]
    )
    return build_registry(journey=lifecycle_journey(), workflows=[weekly], templates_dir=TEMPLATES)


def fill(db: Engine, *, contacts: int, zones: list[str]) -> None:
    SQLModel.metadata.create_all(db)
    rows = [
        {
            "email": f"c{i}@bench.example",
            "timezone": zones[i % len(zones)],
            "attributes": {},
            "external_ids": {},
            "stage": "awareness",
            "score": 0,
            "subscription_status": "subscribed",
            "version": 1,
            "stage_entered_at": DEPLOYED - timedelta(days=30),
            "created_at": DEPLOYED - timedelta(days=30),
            "updated_at": DEPLOYED - timedelta(days=30),
        }
        for i in range(contacts)
    ]
    with db.begin() as conn:
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(Contact), rows[start : start + BATCH])


def timed_passes(db: Engine, reg: Registry, *, now: datetime, repeat: int) -> tuple[float, float]:
    """Seconds of the first pass (records a slot per zone) and median of idle passes."""
    planner = SchedulePlanner()
    with transaction(db) as session:  # the workflow version is first seen at DEPLOYED
        planner.plan(session, reg, now=DEPLOYED)
    started = time.perf_counter()
    with transaction(db) as session:
        checked = planner.plan(session, reg, now=now)
    first = time.perf_counter() - started
    planner.remember(checked)
    idle = []
    for _ in range(repeat):
        started = time.perf_counter()
        with transaction(db) as session:
            planner.plan(session, reg, now=now)
        idle.append(time.perf_counter() - started)
    return first, statistics.median(idle)


def per_contact_loop(db: Engine, *, now: datetime) -> float:
    started = time.perf_counter()
    with Session(db) as session:
        for (tz_name,) in session.execute(select(col(Contact.timezone))):
            latest_slot(CRON, tz_name, now)
    return time.perf_counter() - started


def fire_zone(db: Engine, reg: Registry, *, now: datetime, zone: str) -> tuple[int, float]:
    with Session(db) as session:
        (slot_id,) = session.execute(
            select(col(ScheduleSlot.id)).where(col(ScheduleSlot.timezone) == zone)
        ).scalars()
    offered, started, more = 0, time.perf_counter(), True
    while more:
        with transaction(db) as session:
            fired = fire_slot(session, reg, slot_id, now=now, lease=timedelta(minutes=5))
        offered, more = offered + fired.contacts, fired.more
    return offered, time.perf_counter() - started


def one_by_one(db: Engine, reg: Registry, *, now: datetime, zone: str, limit: int) -> float:
    workflow = reg.workflows["bench_weekly"]
    with Session(db) as session:
        ids = list(
            session.execute(
                select(col(Contact.id))
                .where(col(Contact.timezone) == zone)
                .order_by(col(Contact.id))
                .limit(limit)
            ).scalars()
        )
    started = time.perf_counter()
    for contact_id in ids:
        with transaction(db) as session:
            contact = session.get(Contact, contact_id)
            assert contact is not None
            start_enrollment(
                session, reg, contact, workflow, now=now, cause_event_id=None, why="bench"
            )
    return time.perf_counter() - started


def run(url: str | None, *, contacts: int, zones: list[str], repeat: int) -> list[Result]:
    reg = registry()
    monday = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)  # every zone's Monday 09:00 has passed
    results: list[Result] = []
    with throwaway_database(url) as small, throwaway_database(_other(url)) as big:
        small_db, big_db = make_engine(small), make_engine(big)
        try:
            fill(small_db, contacts=len(zones), zones=zones)
            fill(big_db, contacts=contacts, zones=zones)
            first_small, idle_small = timed_passes(small_db, reg, now=monday, repeat=repeat)
            first_big, idle_big = timed_passes(big_db, reg, now=monday, repeat=repeat)
            naive = per_contact_loop(big_db, now=monday)
            offered, fire_s = fire_zone(big_db, reg, now=monday, zone=zones[0])
            singles = min(offered, 500)
            single_s = one_by_one(big_db, reg, now=monday, zone=zones[1], limit=singles)
        finally:
            small_db.dispose()
            big_db.dispose()
    n = f"{contacts:,} contacts, {len(zones)} zones"
    results.append(Result.of(f"idle pass, {n} (baseline: 1 per zone)", idle_big * 1e3, "ms",
                             idle_small * 1e3))  # fmt: skip
    results.append(Result.of(f"first pass, {n} (baseline: 1 per zone)", first_big * 1e3, "ms",
                             first_small * 1e3))  # fmt: skip
    results.append(Result.of(f"per-contact loop, {n} (baseline: idle pass)", naive * 1e3, "ms",
                             idle_big * 1e3))  # fmt: skip
    results.append(Result.of(f"fire one zone, {offered:,} contacts (baseline: one by one)",
                             offered / fire_s, "contacts/s", singles / single_s))  # fmt: skip
    return results


def _other(url: str | None) -> str | None:
    """A second throwaway database beside ``url`` (SQLite: another file)."""
    if url is not None and url.startswith("sqlite"):
        return url.replace(".db", "-big.db") if url.endswith(".db") else url + "-big"
    return url


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--zones", type=int, default=len(ZONES), choices=range(1, len(ZONES) + 1))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    contacts, repeat = (2_000, 3) if args.smoke else (args.contacts, args.repeat)
    zones = ZONES[: args.zones]
    rows = run(args.database_url, contacts=contacts, zones=zones, repeat=repeat)
    print_results("Schedule triggers: planning per time zone", rows)
    targets = {f"idle pass within {TARGET_RATIO}x of the baseline": rows[0].ratio <= TARGET_RATIO}
    print_targets(targets)
    path = write_json(
        "schedules", rows, contacts=contacts, zones=len(zones), smoke=args.smoke, targets=targets
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.schedules")
