"""Memory: a worker's peak RSS after processing events for N distinct contacts, small vs large.

``python -m bench.memory [--small 10000] [--contacts 50000] [--smoke]``.

For each size, a throwaway PostgreSQL database (created next to ``--database-url``, dropped
afterwards) gets N contacts in ``awareness`` with one pending ``trial.started`` event each
(written in bulk), and a ``process_contacts`` message per 10 contacts (as the track API
enqueues a batch) goes to a dedicated Redis database (``--redis-url``, flushed before and
after). Then ``--processes`` worker processes
(each ``engine.worker``'s runtime under a Dramatiq ``Worker`` with ``--threads`` threads,
what ``dramatiq engine.worker`` runs per process) process them all: stage change, enrollment,
the ``trial_offer`` email through the SendGrid connector to ``FakeSendGrid`` in another
process. Each worker reports its peak RSS (``VmHWM``) once the queues are
empty; the figure is the largest. The baseline is the same with ``--small`` contacts.
Target: the large run's peak within 10% of the small one's (no per-contact state in memory).

The issue asks for 1,000,000 contacts; at the pipeline's rate today (about 200 contacts/s on
this 2-core machine) that takes well over an hour, so the default large size is 50,000;
pass ``--contacts 1000000`` to run it.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import insert, text

from bench import loadgen
from bench.common import Result, add_smoke_flag, peak_rss_kib, print_results, run_cli, write_json
from bench.scheduler import DEFAULT_ADMIN_URL, throwaway_database
from bench.services import (
    API_KEY,
    FakeSendGridProcess,
    Scheduler,
    bench_env,
    contact_row,
    queue_backlog,
    redis_for,
    spawn_workers,
    stop,
    workdir,
)
from engine import migrations
from engine.db import make_engine
from engine.models import Contact, Event
from engine.runtime import QUEUE, TRANSACTIONAL_QUEUE
from engine.settings import CONTACTS_PER_JOB
from engine.testing import midday_zone

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
TARGET_RATIO = 1.10
SEED_BATCH = 10_000
PREFIX = "mem"


def seed(db_url: str, count: int) -> list[int]:
    """``count`` contacts in awareness with a pending trial.started each; their ids."""
    now = datetime.now(UTC)
    zone = midday_zone(now)  # quiet hours must not hold the emails of a night-time run
    db = make_engine(db_url)
    contacts: Any = Contact.__table__  # type: ignore[attr-defined]
    events: Any = Event.__table__  # type: ignore[attr-defined]
    ids: list[int] = []
    try:
        for lo in range(0, count, SEED_BATCH):
            rows = [
                contact_row(
                    loadgen.email(PREFIX, i),
                    now=now,
                    attributes={"first_name": f"Contact {i}"},
                    timezone=zone,
                )
                for i in range(lo, min(lo + SEED_BATCH, count))
            ]
            with db.begin() as conn:
                batch = list(
                    conn.execute(
                        insert(contacts).returning(contacts.c.id, sort_by_parameter_order=True),
                        rows,
                    ).scalars()
                )
                conn.execute(
                    insert(events),
                    [
                        {
                            "contact_id": contact_id,
                            "type": "trial.started",
                            "properties": {},
                            "source": "api",
                            "idempotency_key": f"api:bench-{contact_id}",
                            "status": "pending",
                            "lease_until": now + timedelta(hours=1),
                            "occurred_at": now,
                            "received_at": now,
                        }
                        for contact_id in batch
                    ],
                )
            ids += batch
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        db.dispose()
    return ids


def enqueue_all(redis_url: str, ids: list[int], per_job: int = CONTACTS_PER_JOB) -> None:
    broker = RedisBroker(url=redis_url)
    try:
        broker.declare_queue(QUEUE)
        # As the track API enqueues a batch: a process_contacts job per ``per_job`` contacts.
        for start in range(0, len(ids), per_job):
            broker.enqueue(
                Message(
                    queue_name=QUEUE,
                    actor_name="process_contacts",
                    args=(ids[start : start + per_job],),
                    kwargs={},
                    options={},
                )
            )
    finally:
        broker.close()


def measure(args: Any, count: int, fake: FakeSendGridProcess, tmp: Path) -> dict[str, float]:
    with throwaway_database(args.database_url) as db_url, redis_for(args.redis_url) as redis:
        migrations.upgrade(db_url)
        ids = seed(db_url, count)
        enqueue_all(redis, ids, args.contacts_per_job)
        env = bench_env(
            JOURNEYLINE_DATABASE_URL=db_url,
            JOURNEYLINE_BROKER_URL=redis,
            JOURNEYLINE_EMAIL_CONNECTOR="sendgrid",
            JOURNEYLINE_SENDGRID_API_KEY=API_KEY,
            JOURNEYLINE_SENDGRID_HOST=fake.url,
            JOURNEYLINE_OUTBOX_DIR=str(tmp / "outbox"),
            JOURNEYLINE_LOG_LEVEL="WARNING",
            BENCH_THREADS=str(args.threads),
        )
        # Retries and expired leases are re-dispatched by the scheduler, as in production.
        scheduler = Scheduler(env, log=tmp / f"scheduler-{count}.log")
        before = fake.count()
        start = time.perf_counter()
        logs = [(tmp / f"worker-{count}-{n}.log").open("w") for n in range(args.processes)]
        procs = spawn_workers("bench.memory", env, logs)
        try:
            # Generous: five times the slowest rate seen here (about 100 contacts/s).
            outputs = [p.communicate(timeout=600 + count / 20)[0] for p in procs]
        finally:
            for p in procs:
                stop(p)
            for log in logs:
                log.close()
            scheduler.close()
        seconds = time.perf_counter() - start
        for n, p in enumerate(procs):
            if p.returncode != 0:
                tail = (tmp / f"worker-{count}-{n}.log").read_text()[-3000:]
                raise RuntimeError(f"worker {n} exited with {p.returncode}:\n{tail}")
        sent = fake.count() - before
        if sent != count:
            raise RuntimeError(f"{sent} emails sent for {count} contacts")
        peaks = [json.loads(out)["maxrss_kib"] for out in outputs]
        return {"peak_rss_mib": max(peaks) / 1024, "seconds": seconds, "per_s": count / seconds}


def worker_main() -> None:
    """In a child: run the runtime's jobs until both queues are empty; print the peak RSS."""
    from dramatiq import Worker

    from engine import worker

    threads = int(os.environ.get("BENCH_THREADS", "8"))
    redis_url = os.environ["JOURNEYLINE_BROKER_URL"]
    consumer = Worker(worker.broker, worker_threads=threads, worker_timeout=100)
    consumer.start()
    try:
        idle = 0
        while idle < 3:  # empty three times in a row, 0.3 s apart: done
            time.sleep(0.3)
            queues = (QUEUE, TRANSACTIONAL_QUEUE, f"{QUEUE}.DQ", f"{TRANSACTIONAL_QUEUE}.DQ")
            empty = queue_backlog(redis_url, queues) == 0
            idle = idle + 1 if empty else 0
    finally:
        consumer.stop()
        worker.runtime.close()
    peak = peak_rss_kib()  # VmHWM: this worker's own peak, not its parent's
    print(json.dumps({"maxrss_kib": peak, "threads": threading.active_count()}))


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--small", type=int, default=10_000, help="baseline size")
    parser.add_argument("--contacts", type=int, default=50_000, help="large size")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--contacts-per-job",
        type=int,
        default=CONTACTS_PER_JOB,
        help=f"contacts per process_contacts message (default {CONTACTS_PER_JOB}, the track "
        "API's); the same for both sizes, so it does not move the ratio",
    )
    parser.add_argument("--database-url", default=None, help=f"default {DEFAULT_ADMIN_URL}")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed before and after")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return []
    small, large = (50, 200) if args.smoke else (args.small, args.contacts)
    with workdir() as tmp, FakeSendGridProcess() as fake:
        base = measure(args, small, fake, tmp)
        ours = measure(args, large, fake, tmp)
    rows = [
        Result.of(
            f"worker peak RSS, {large:,} contacts (baseline: {small:,})",
            ours["peak_rss_mib"],
            "MiB",
            base["peak_rss_mib"],
        ),
        Result.of(
            f"contacts/s incl. worker start, {large:,} (baseline: {small:,})",
            ours["per_s"],
            "contacts/s",
            base["per_s"],
        ),
    ]
    print_results(
        f"bench.memory (PostgreSQL + Redis, {args.processes} workers x {args.threads} threads)",
        rows,
    )
    met = rows[0].ratio <= TARGET_RATIO
    print(f"target peak RSS within 10%: {'met' if met else 'NOT met'} (ratio {rows[0].ratio:.3f})")
    if large < 1_000_000:
        print(f"note: {large:,} contacts, not the 1,000,000 the issue asks for (time)")
    path = write_json(
        "memory",
        rows,
        small=small,
        large=large,
        smoke=args.smoke,
        processes=args.processes,
        threads=args.threads,
        contacts_per_job=args.contacts_per_job,
        baseline_run=base,
        large_run=ours,
        target_met=met,
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.memory")
