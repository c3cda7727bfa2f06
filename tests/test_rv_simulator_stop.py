"""Review of session 17: ``simulate`` with worker processes stops every shard at the end of
its day when one shard fails (as it does on Ctrl-C).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import pytest

from engine import simulator
from engine.registry import registry_from_module

pytestmark = pytest.mark.skipif(
    "fork" not in mp.get_all_start_methods(), reason="worker processes are forked"
)


def test_a_failed_shard_stops_the_others_at_the_end_of_their_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = tmp_path / "failed"
    ran_on = tmp_path / "ran-on"

    def fake_run_shard(
        registry: Any, profile: Any, seed: int, shard: int, first: int, count: int,
        days: int, day_done: Any, folder: Path,
    ) -> Any:  # fmt: skip
        if shard == 1:
            failed.touch()
            raise RuntimeError("a bug in a workflow")
        for _wait in range(3_000):  # until shard 1 has failed (30 s at most)
            if failed.exists():
                break
            time.sleep(0.01)
        for _day in range(1_000):  # ten seconds of days at most, each told as done
            day_done()  # raises once the run says stop
            time.sleep(0.01)
        ran_on.touch()  # no one said stop
        raise RuntimeError("not stopped")

    import workflows

    registry = registry_from_module(workflows)
    monkeypatch.setattr(simulator, "_run_shard", fake_run_shard)
    with pytest.raises(RuntimeError, match="a bug in a workflow"):
        simulator.simulate(registry, contacts=2, days=1_000, processes=2, shard_contacts=1)
    assert not ran_on.exists()
