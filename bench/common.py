"""Helpers shared by the benchmarks: a result table, JSON output, the ``--smoke`` flag.

Benchmarks are never pass/fail: every figure is printed next to a baseline measured in the
same run, with the ratio value / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float  # value / baseline

    @classmethod
    def of(cls, name: str, value: float, unit: str, baseline: float) -> Result:
        return cls(name, value, unit, baseline, value / baseline if baseline else float("nan"))


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    """The convention: ``--smoke`` runs tiny sizes in seconds (used by the test suite)."""
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; for tests")


def machine_info() -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def print_results(title: str, rows: list[Result], console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("name", "value", "unit", "baseline", "ratio"):
        table.add_column(column, justify="left" if column in ("name", "unit") else "right")
    for r in rows:
        table.add_row(r.name, f"{r.value:,.3f}", r.unit, f"{r.baseline:,.3f}", f"{r.ratio:.3f}")
    (console or Console()).print(table)


def write_json(name: str, rows: list[Result], **extra: object) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **extra}
    payload["results"] = [asdict(r) for r in rows]
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB. Not ``ru_maxrss``: Linux carries it over ``fork`` +
    ``exec``, so a child started from a big parent reports the parent's size; ``VmHWM``
    belongs to the process's own address space."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best we have
