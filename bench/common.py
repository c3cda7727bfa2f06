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
from collections.abc import Callable
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


def print_targets(targets: dict[str, bool]) -> None:
    """Each target and whether this run met it, plainly; the same dict goes in the JSON."""
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")


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


def service_down(exc: BaseException) -> str | None:
    """One line saying which service a benchmark could not reach, or None when ``exc`` is
    something else (a bug, a failed check: those keep their traceback).

    Only failures to connect count: PostgreSQL refusing or dropping the connection (not a
    deadlock or another ``OperationalError`` subclass the server answered with), Redis
    refusing or timing out."""
    orig = getattr(exc, "orig", None) or exc
    kind = type(orig)
    if kind.__module__.startswith("psycopg") and kind.__name__ == "OperationalError":
        detail = str(orig).strip().splitlines()[0] if str(orig).strip() else kind.__name__
        return f"PostgreSQL is not reachable: {detail}"
    if kind.__module__.startswith("redis") and kind.__name__ in ("ConnectionError", "TimeoutError"):
        return f"Redis is not reachable: {str(orig).strip() or kind.__name__}"
    return None


def run_cli(main: Callable[[list[str] | None], object], prog: str) -> None:
    """``if __name__ == "__main__"`` of a benchmark: a service that is down, or Ctrl-C, ends
    it with one line on stderr (exit 2 / 130) instead of a traceback. Each benchmark's
    ``finally`` blocks have run by then: throwaway databases dropped, processes stopped."""
    try:
        main(None)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        message = service_down(exc)
        if message is None:
            raise
        print(f"{prog}: {message}", file=sys.stderr)
        raise SystemExit(2) from None
