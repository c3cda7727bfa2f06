"""``dramatiq engine.worker`` run directly (as a container may) names a bad setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_worker_with_a_bad_setting_names_the_variable_and_exits_2(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": f"sqlite:///{tmp_path}/jl.db",
        "JOURNEYLINE_BROKER_URL": "inline://",
        "JOURNEYLINE_HUBSPOT_MAX_RETRIES": "abc",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import engine.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "error: JOURNEYLINE_HUBSPOT_MAX_RETRIES='abc': must be an integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_starts_while_the_broker_is_down_and_says_the_chain_waits(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": f"sqlite:///{tmp_path}/jl.db",
        "JOURNEYLINE_BROKER_URL": "redis://127.0.0.1:9/0",  # nothing listens there
        "JOURNEYLINE_SCHEDULER_IN_WORKERS": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import engine.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "the broker did not take the scheduler's first tick" in done.stderr
    assert "Traceback" not in done.stderr
