"""Where a profile's time goes, by layer, and what removing a layer could buy at most.

``python -m bench.layers PROFILE.raw`` reads a py-spy profile in its ``raw`` (collapsed
stacks) format, for instance of one simulator shard::

    pip install py-spy
    py-spy record -r 200 -f raw -o sim.raw -- .venv/bin/python -c \\
      'from engine.simulator import simulate, load_workflows; \\
       simulate(load_workflows("workflows"), contacts=5000, days=12)'
    .venv/bin/python -m bench.layers sim.raw

Each sample is charged to one layer by its innermost frame: SQLite's C code (the DB-API
calls SQLAlchemy makes: execute, executemany, commit, fetch), SQLAlchemy and SQLModel's
Python, Journeyline's row plumbing (``engine/db.py``'s column types, ``models.py``,
``new_rows``, ``flush_shape``, ``sequence_ids``, ``batch_writer``), JSON of column values,
start-up (module imports), Journeyline's own pipeline code, and other libraries. The
bounds are Amdahl's, on the run's work (start-up excluded, as it is paid once): with the
database layer costing nothing, or a fifth, or a tenth of what it costs now.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

FRAME = re.compile(r"(?P<function>.*?) \((?P<file>.*?):\d+\)$")

SQLITE_CALLS = ("do_execute", "do_executemany", "do_commit", "do_rollback", "fetchall", "fetchone",
                "fetchmany", "_on_begin", "exec_driver_sql")  # fmt: skip
ROW_PLUMBING = ("engine/db.py", "engine/models.py", "engine/new_rows.py", "engine/flush_shape.py",
                "engine/sequence_ids.py", "engine/batch_writer.py")  # fmt: skip

DATABASE_LAYERS = ("SQLite (C)", "SQLAlchemy + SQLModel", "row plumbing", "JSON")
LAYERS = (*DATABASE_LAYERS, "start-up", "pipeline", "other libraries")


def layer_of(stack: list[str]) -> str:
    """The layer one sample (its frames, outermost first) is charged to."""
    innermost = FRAME.match(stack[-1])
    function, path = (innermost["function"], innermost["file"]) if innermost else ("", "")
    if function.rsplit(".", 1)[-1] in SQLITE_CALLS or "sqlite3" in path:
        return "SQLite (C)"
    if path.startswith(("sqlalchemy/", "sqlmodel/")):
        return "SQLAlchemy + SQLModel"
    if path.startswith(ROW_PLUMBING):
        return "row plumbing"
    if path.startswith("json/"):
        return "JSON"
    if any(frame.startswith("<module> ") for frame in stack[:3]) and not any(
        "simulate" in frame or "run_shard" in frame for frame in stack
    ):
        return "start-up"
    if path.startswith(("engine/", "workflows/", "connectors/")):
        return "pipeline"
    return "other libraries"


def shares(lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Samples per layer, and the total, of a py-spy ``raw`` profile's lines."""
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        counts[layer_of(stack.split(";"))] += int(count)
    return counts, total


def report(counts: Counter[str], total: int) -> str:
    if total == 0:
        raise ValueError("no samples: is this a py-spy profile written with -f raw?")
    rows = [f"{'layer':<24} {'share':>7}"]
    rows += [f"{layer:<24} {100 * counts[layer] / total:6.1f}%" for layer in LAYERS]
    database = sum(counts[layer] for layer in DATABASE_LAYERS) / total
    rows.append(f"{'database layer, in all':<24} {100 * database:6.1f}%")
    # The bounds are of the run's work: start-up is paid once, whatever the run's size.
    work = 1 - counts["start-up"] / total
    left = work - database
    rows.append("")
    rows.append(f"at most {work / max(1e-9, left):.2f}x faster if the database layer cost nothing")
    for part in (5, 10):
        rows.append(
            f"at most {work / (left + database / part):.2f}x faster with a store costing "
            f"1/{part} of it"
        )
    sqlite_own = counts["SQLite (C)"] / total
    rows.append(
        f"at most {work / (left + sqlite_own):.2f}x faster if only SQLite's own work "
        "remained (no SQLAlchemy, no row plumbing, no JSON)"
    )
    rows.append(f"{total} samples")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="a py-spy profile written with -f raw")
    args = parser.parse_args(argv)
    try:
        with args.profile.open(encoding="utf-8") as lines:
            counts, total = shares(lines)
        print(report(counts, total))
    except (OSError, ValueError) as exc:
        print(f"bench.layers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
