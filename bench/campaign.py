"""Benchmark 4, a million-contact campaign: from trigger to the last first-step email
accepted by the fake SendGrid.

``python -m bench.campaign [--contacts 1000000] [--small 100000] [--unbatched 10000]
[--processes 2] [--threads 4] [--smoke]``.

For each run, a throwaway PostgreSQL database (created next to ``--database-url``, dropped
afterwards) gets N contacts in ``consideration`` (written in bulk beforehand, not timed), and
a dedicated Redis database (``--redis-url``) is flushed. ``--processes`` worker processes
(``engine.worker``'s runtime under a Dramatiq ``Worker`` with ``--threads`` threads) start,
then ``journeyline broadcast campaign`` runs in its own process: the ``campaign`` workflow
(``WORKFLOWS`` below: triggered by the segment "in consideration", first step a
``send_email``) is started for all N contacts, set-based, a page of 1,000 at a time, and each
page's 1,000 email actions go to the workers as one ``perform_email_batch`` job, sent through
the SendGrid connector to ``FakeSendGrid`` in another process (``bench.services``).

Measured: wall time from the broadcast's start to the last email's arrival at the fake;
HTTP requests made (distinct ``X-Message-Id`` on the sent actions: every request the fake
accepted; target N/1,000); peak RSS of the broadcaster and of each worker (``ru_maxrss``) at
N and at ``--small``, whose ratio shows whether memory is flat in N. Baseline in the same run:
the same campaign with batching off (``JOURNEYLINE_SENDGRID_BATCH_SIZE=1``: one request and
one ``perform_action`` job per email) on ``--unbatched`` contacts, compared per email.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from bench.common import (
    Result,
    add_smoke_flag,
    peak_rss_kib,
    print_results,
    print_targets,
    run_cli,
    write_json,
)
from bench.scheduler import DEFAULT_ADMIN_URL, throwaway_database
from bench.services import (
    API_KEY,
    REPO,
    FakeSendGridProcess,
    bench_env,
    contact_row,
    queue_backlog,
    redis_for,
    spawn_workers,
    stop,
    workdir,
)
from engine import (
    Segment,
    Workflow,
    lifecycle_journey,
    on_segment_joined,
    send_email,
    stage_in,
)
from engine.db import make_engine
from engine.models import Contact
from engine.runtime import QUEUE, TRANSACTIONAL_QUEUE

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
SEED_BATCH = 10_000
TARGET_SECONDS = 300.0
TARGET_RSS_RATIO = 1.10  # peak memory flat in contacts: within 10%
TEMPLATE = (
    "{% block subject %}Spring sale: 20% off{% endblock %}"
    "{% block text %}Everything is 20% off this week. Reply to this email with questions."
    "{% endblock %}"
)

# --- the workflows module the workers and the broadcaster load (JOURNEYLINE_WORKFLOWS) ----

JOURNEY = lifecycle_journey()
WORKFLOWS = [
    Workflow(
        "campaign",
        description="A spring sale to every contact in consideration.",
        trigger=on_segment_joined(Segment("considering", stage_in("consideration"))),
        steps=[send_email("spring_sale", id="sale")],
    )
]


def seed(db_url: str, count: int) -> float:
    """``count`` contacts in consideration, written in bulk; the seconds it took."""
    start = time.perf_counter()
    now = datetime.now(UTC)
    db = make_engine(db_url)
    contacts: Any = Contact.__table__  # type: ignore[attr-defined]
    try:
        for lo in range(0, count, SEED_BATCH):
            rows = [
                contact_row(f"campaign-{i}@example.com", now=now, stage="consideration")
                for i in range(lo, min(lo + SEED_BATCH, count))
            ]
            with db.begin() as conn:
                conn.execute(insert(contacts), rows)
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        db.dispose()
    return time.perf_counter() - start


def sent_stats(db_url: str) -> tuple[int, int]:
    """(emails sent, distinct provider message ids = requests accepted)."""
    db = make_engine(db_url)
    try:
        with db.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT provider_id) FROM actions "
                    "WHERE kind = 'email' AND status = 'sent'"
                )
            ).one()
    finally:
        db.dispose()
    return int(row[0]), int(row[1])


def action_statuses(db_url: str) -> dict[str, int]:
    """Actions by (status, error), to say what went wrong when emails are missing."""
    db = make_engine(db_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                text("SELECT status, error, count(*) FROM actions GROUP BY 1, 2 LIMIT 20")
            )
            return {f"{status}: {error}": int(n) for status, error, n in rows}
    finally:
        db.dispose()


def run(
    args: Any, count: int, *, batch_size: int, fake: FakeSendGridProcess, tmp: Path
) -> dict[str, Any]:
    """One campaign of ``count`` contacts; its figures."""
    label = f"{count}-{batch_size}"
    with throwaway_database(args.database_url) as db_url, redis_for(args.redis_url) as redis:
        from engine import migrations

        migrations.upgrade(db_url)
        seed_s = seed(db_url, count)
        templates = tmp / "templates"
        templates.mkdir(exist_ok=True)
        (templates / "spring_sale.j2").write_text(TEMPLATE)
        done = tmp / f"broadcast-{label}.done"
        env = bench_env(
            JOURNEYLINE_DATABASE_URL=db_url,
            JOURNEYLINE_BROKER_URL=redis,
            JOURNEYLINE_WORKFLOWS="bench.campaign",
            JOURNEYLINE_TEMPLATES_DIR=str(templates),
            JOURNEYLINE_EMAIL_CONNECTOR="sendgrid",
            JOURNEYLINE_SENDGRID_API_KEY=API_KEY,
            JOURNEYLINE_SENDGRID_HOST=fake.url,
            JOURNEYLINE_SENDGRID_TIMEOUT_SECONDS="60",
            JOURNEYLINE_SENDGRID_BATCH_SIZE=str(batch_size),
            JOURNEYLINE_OUTBOX_DIR=str(tmp / "outbox"),
            JOURNEYLINE_LOG_LEVEL="WARNING",
            BENCH_THREADS=str(args.threads),
            BENCH_DONE=str(done),
        )
        before = fake.count()
        logs = [(tmp / f"worker-{label}-{n}.log").open("w") for n in range(args.processes)]
        workers = spawn_workers("bench.campaign", env, logs)
        broadcast_log = (tmp / f"broadcast-{label}.log").open("w")
        try:
            broadcaster = subprocess.run(
                [sys.executable, "-m", "bench.campaign", "--broadcast"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=broadcast_log,
                text=True,
                timeout=7200,
                check=False,
            )
            done.touch()
            outputs = [w.communicate(timeout=7200)[0] for w in workers]
        finally:
            for w in workers:
                stop(w)
            for log in [*logs, broadcast_log]:
                log.close()
        if broadcaster.returncode != 0:
            tail = (tmp / f"broadcast-{label}.log").read_text()[-3000:]
            raise RuntimeError(f"broadcast exited with {broadcaster.returncode}:\n{tail}")
        for n, w in enumerate(workers):
            if w.returncode != 0:
                tail = (tmp / f"worker-{label}-{n}.log").read_text()[-3000:]
                raise RuntimeError(f"worker {n} exited with {w.returncode}:\n{tail}")
        report = json.loads(broadcaster.stdout)
        arrivals = fake.sent(before)
        sent, requests = sent_stats(db_url)
        if len(arrivals) != count or sent != count:
            logs_tail = "".join(
                (tmp / f"worker-{label}-{n}.log").read_text()[-2000:] for n in range(args.processes)
            )
            raise RuntimeError(
                f"{len(arrivals)} emails arrived, {sent} sent, for {count} contacts; "
                f"statuses {action_statuses(db_url)}; worker logs:\n{logs_tail}"
            )
    seconds = arrivals[-1][0] - report["started_at"]
    workers_peak = max(json.loads(out)["maxrss_kib"] for out in outputs) / 1024
    return {
        "contacts": count,
        "batch_size": batch_size,
        "seconds": seconds,
        "broadcast_seconds": report["seconds"],
        "per_email_us": seconds / count * 1e6,
        "requests": requests,
        "broadcaster_peak_rss_mib": report["maxrss_kib"] / 1024,
        "worker_peak_rss_mib": workers_peak,
        "seed_seconds": seed_s,
    }


def broadcast_main() -> None:
    """In a child: broadcast the campaign; print when it started, how long the broadcast
    itself took, and this process's peak RSS."""
    from engine.runtime import Runtime
    from engine.settings import Settings

    with Runtime(Settings()) as runtime:
        started_at = time.time()
        start = time.perf_counter()
        result = runtime.broadcast("campaign")
        seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    print(
        json.dumps(
            {
                "started_at": started_at,
                "seconds": seconds,
                "enrolled": result.enrolled,
                "maxrss_kib": peak,
            }
        )
    )


def worker_main() -> None:
    """In a child: run the runtime's jobs until the broadcast is done and the queues are
    empty; print the peak RSS."""
    from dramatiq import Worker

    from engine import worker

    threads = int(os.environ.get("BENCH_THREADS", "4"))
    redis_url = os.environ["JOURNEYLINE_BROKER_URL"]
    done = Path(os.environ["BENCH_DONE"])
    consumer = Worker(worker.broker, worker_threads=threads, worker_timeout=100)
    consumer.start()
    # The delay queues too: a send retried after a 429 waits there, and the run is not over.
    queues = (QUEUE, TRANSACTIONAL_QUEUE, f"{QUEUE}.DQ", f"{TRANSACTIONAL_QUEUE}.DQ")
    try:
        idle = 0
        while idle < 3:  # broadcast over and queues empty three times, 0.3 s apart: done
            time.sleep(0.3)
            empty = queue_backlog(redis_url, queues) == 0
            idle = idle + 1 if empty and done.exists() else 0
        consumer.join()
    finally:
        consumer.stop()
        worker.runtime.close()
    print(json.dumps({"maxrss_kib": peak_rss_kib()}))


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="campaign size")
    parser.add_argument("--small", type=int, default=100_000, help="size for the memory check")
    parser.add_argument("--unbatched", type=int, default=10_000, help="baseline size, batching off")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broadcast", action="store_true", help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return []
    if args.broadcast:
        broadcast_main()
        return []
    if args.smoke:
        args.contacts, args.small, args.unbatched = 2_100, 1_100, 50
    with FakeSendGridProcess() as fake, workdir() as tmp:
        baseline = run(args, args.unbatched, batch_size=1, fake=fake, tmp=tmp)
        small = run(args, args.small, batch_size=1000, fake=fake, tmp=tmp)
        large = run(args, args.contacts, batch_size=1000, fake=fake, tmp=tmp)
    n = args.contacts
    rows = [
        Result.of(
            f"per email, batched ({n:,}) vs one request each ({args.unbatched:,})",
            large["per_email_us"],
            "us",
            baseline["per_email_us"],
        ),
        Result.of(
            f"wall time, trigger to last email accepted ({n:,}) vs 5 min target",
            large["seconds"],
            "s",
            TARGET_SECONDS,
        ),
        Result.of(
            f"HTTP requests ({n:,}) vs N/1,000", large["requests"], "requests", -(-n // 1000)
        ),
        Result.of(
            f"worker peak RSS at {n:,} vs at {args.small:,}",
            large["worker_peak_rss_mib"],
            "MiB",
            small["worker_peak_rss_mib"],
        ),
        Result.of(
            f"broadcaster peak RSS at {n:,} vs at {args.small:,}",
            large["broadcaster_peak_rss_mib"],
            "MiB",
            small["broadcaster_peak_rss_mib"],
        ),
    ]
    print_results(f"A {n:,}-contact campaign (benchmark 4)", rows)
    for name, figures in (("baseline", baseline), ("small", small), ("large", large)):
        print(name, json.dumps(figures))
    targets = {
        "under 5 minutes": large["seconds"] < TARGET_SECONDS,
        "requests = N/1000": large["requests"] == -(-n // 1000),
        "worker peak RSS within 10% of the small run's": rows[3].ratio <= TARGET_RSS_RATIO,
        "broadcaster peak RSS within 10% of the small run's": rows[4].ratio <= TARGET_RSS_RATIO,
    }
    print_targets(targets)
    path = write_json(
        "campaign",
        rows,
        contacts=n,
        processes=args.processes,
        threads=args.threads,
        smoke=args.smoke,
        runs={"baseline": baseline, "small": small, "large": large},
        targets=targets,
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.campaign")
