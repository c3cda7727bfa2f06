"""The lifecycle simulator: wall time of N contacts x 90 virtual days, and memory by days.

``python -m bench.simulator [--contacts 10000] [--days 90] [--processes 2]
[--small-contacts 1000] [--shard-contacts N] [--smoke]``

Each run is a fresh child process (``--child``), so its peak RSS (``VmHWM`` of the
process, ``ru_maxrss`` of the worker processes it forked) is its own. Three runs, default playbook,
default profile, seed 7:

- large: ``--contacts`` x ``--days`` on ``--processes`` worker processes;
- small: ``--small-contacts`` x ``--days`` in one process (one shard): the baseline cost
  per contact-day, and the peak RSS after ``--days`` simulated days;
- short: ``--small-contacts`` x ``--short-days`` (30) in one process: the memory baseline.

Figures: the large run's wall time against the small run's cost per contact-day scaled to
the large size (ratio < 1: the parallel shards paid off; > 1: cost grows faster than the
population), and the small run's peak RSS at ``--days`` against ``--short-days`` (ratio
~1: memory does not grow with simulated days).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from bench.common import (
    Result,
    add_smoke_flag,
    peak_rss_kib,
    print_results,
    print_targets,
    run_cli,
    write_json,
)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one simulation in this process and report its size, time and peak memory."""
    from engine.simulator import SHARD_CONTACTS, load_workflows, simulate

    registry = load_workflows("workflows")
    started = time.perf_counter()
    result = simulate(
        registry,
        contacts=spec["contacts"],
        days=spec["days"],
        seed=spec.get("seed", 7),
        processes=spec.get("processes", 1),
        shard_contacts=spec.get("shard_contacts", SHARD_CONTACTS),
    )
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so this child would
    # report the size of whatever started it (a test run's pytest) when that is larger, and
    # every run would look the same size. The shards forked from here are children of this
    # process: their ru_maxrss starts from this process's size, which is this run's own.
    own = peak_rss_kib()
    forked = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        **spec,
        "seconds": seconds,
        "events": result.events,
        "emails": sum(result.emails.values()),
        "peak_rss_kib": max(own, forked),  # Linux reports KiB
    }


def measure(contacts: int, days: int, processes: int, shard: int | None = None) -> dict[str, Any]:
    options = {"contacts": contacts, "days": days, "processes": processes}
    spec = json.dumps({**options, "shard_contacts": shard} if shard else options)
    done = subprocess.run(
        [sys.executable, "-m", "bench.simulator", "--child", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"simulation {spec} failed:\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


# Issue 6: 10,000 and 100,000 contacts x 90 days, in seconds; memory flat in days.
TARGET_SECONDS = {(10_000, 90): 30.0, (100_000, 90): 300.0}
TARGET_RSS_RATIO = 1.10


def targets_of(rows: list[Result], contacts: int, days: int) -> dict[str, bool]:
    """The targets this run's sizes have: wall time only at the issue's sizes."""
    targets: dict[str, bool] = {}
    limit = TARGET_SECONDS.get((contacts, days))
    if limit is not None:
        targets[f"{contacts:,} x {days} days under {limit:.0f} s"] = rows[0].value < limit
    targets["peak RSS flat in days (within 10%)"] = rows[3].ratio <= TARGET_RSS_RATIO
    return targets


def run(
    contacts: int, days: int, processes: int, small: int, short_days: int, shard: int | None
) -> tuple[list[Result], dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for name, size, length, workers, shards in (
        ("short", small, short_days, 1, None),
        ("small", small, days, 1, None),
        ("large", contacts, days, processes, shard),
    ):
        r = runs[name] = measure(size, length, workers, shards)
        print(
            f"{name}: {r['contacts']:,} contacts x {r['days']} days, {r['processes']} process(es):"
            f" {r['seconds']:.1f} s, {r['events']:,} events, {r['emails']:,} emails,"
            f" peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB",
            flush=True,
        )
    small_cost = runs["small"]["seconds"] / (small * days)  # seconds per contact-day
    large = runs["large"]
    rows = [
        Result.of(
            f"wall time, {contacts:,} contacts x {days} days, {processes} process(es)"
            f" (baseline: {small:,}-contact cost per contact-day, scaled)",
            large["seconds"],
            "s",
            small_cost * contacts * days,
        ),
        Result.of(
            f"cost per contact-day at {contacts:,} (baseline: at {small:,}, one process)",
            large["seconds"] / (contacts * days) * 1e6,
            "µs",
            small_cost * 1e6,
        ),
        Result.of(
            f"events/s at {contacts:,} (baseline: at {small:,}, one process)",
            large["events"] / large["seconds"],
            "events/s",
            runs["small"]["events"] / runs["small"]["seconds"],
        ),
        Result.of(
            f"peak RSS, {small:,} contacts, {days} days (baseline: {short_days} days)",
            runs["small"]["peak_rss_kib"] / 1024,
            "MiB",
            runs["short"]["peak_rss_kib"] / 1024,
        ),
    ]
    return rows, runs


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--small-contacts", type=int, default=1_000)
    parser.add_argument("--short-days", type=int, default=30)
    parser.add_argument(
        "--shard-contacts", type=int, help="contacts per shard of the large run (default 2,000)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    if args.smoke:
        contacts, days, processes, small, short_days = 30, 2, 2, 10, 1
        args.shard_contacts = 15  # two shards: the parallel path runs too
    else:
        contacts, days, processes = args.contacts, args.days, args.processes
        small, short_days = args.small_contacts, args.short_days
    rows, runs = run(contacts, days, processes, small, short_days, args.shard_contacts)
    print_results(f"bench.simulator ({contacts:,} contacts x {days} days)", rows)
    targets = targets_of(rows, contacts, days)
    print_targets(targets)
    if (contacts, days) not in TARGET_SECONDS:
        print(f"note: no wall-time target at {contacts:,} x {days} days (10,000 or 100,000 x 90)")
    path = write_json("simulator", rows, runs=runs, smoke=args.smoke, targets=targets)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.simulator")
