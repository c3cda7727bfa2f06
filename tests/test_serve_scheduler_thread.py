"""``serve`` on ``stub://`` runs the scheduler in a thread: a database that is down (or not
migrated) is said once, with its traceback, and once more when passes work again, not a
traceback every few seconds."""

from __future__ import annotations

import logging
import threading

import pytest

from engine.cli_api import SchedulerThread


class _Runtime:
    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = outcomes
        self.done = threading.Event()

    def tick(self) -> None:
        if not self.outcomes:
            self.done.set()
            return
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def test_failing_passes_are_said_once_and_their_end_once(caplog: pytest.LogCaptureFixture) -> None:
    down = RuntimeError("no such table: enrollments")
    runtime = _Runtime([down, down, down, RuntimeError("other"), None, None])
    thread = SchedulerThread(runtime, interval_s=0)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="engine.cli"):
        thread.start()
        assert runtime.done.wait(30)
        thread.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.cli"]
    assert messages == [
        "scheduler passes failing (retried every 0 s)",
        "scheduler passes failing now with RuntimeError: other",
        "scheduler passes work again",
    ]
    assert caplog.records[0].exc_info is not None  # the first one with its traceback
