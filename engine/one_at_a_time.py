"""A call run in a thread of its own and waited for a while at most, one at a time.

For the checks that must answer within seconds whatever the database does (``/readyz``,
``/metrics``): its drivers have no timeout of their own for an answer that never comes (a
paused network, a server stuck on a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class OneAtATime(Generic[T]):
    """Runs a call in a daemon thread of its own and waits for it ``timeout_seconds`` at
    most (``TimeoutError`` then). While a call is still running (hung), no other starts: a
    caller waits for that one instead, so a database that never answers holds one thread
    and one connection, however many requests ask."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: Future[T] | None = None

    def run(self, call: Callable[[], T], *, timeout_seconds: float) -> T:
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = Future()
                threading.Thread(
                    target=_settle, args=(running, call), name=self.name, daemon=True
                ).start()
        return running.result(timeout=timeout_seconds)


def _settle(future: Future[T], call: Callable[[], T]) -> None:
    try:
        future.set_result(call())
    except BaseException as exc:  # handed to the waiting caller, who logs it
        future.set_exception(exc)
