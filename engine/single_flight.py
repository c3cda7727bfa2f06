"""An answer asked for by one caller at a time and shared while it is fresh.

For checks that cost a connection (is the database at the right revision, does the broker
answer): however many requests or scrapes come at once, at most one asks, and the others
get the last answer. ``/readyz`` waits for the very first answer; ``/metrics`` does not
wait at all (a scrape then reports nothing of the part being asked).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``ask()``'s last answer while younger than ``max_age`` seconds, else asked again by
    this caller unless another is asking. ``now`` gives seconds (a clock set back counts as
    stale: asked again)."""

    def __init__(
        self,
        ask: Callable[[], T],
        *,
        now: Callable[[], float] = time.monotonic,
        wait_for_first: bool = True,
    ) -> None:
        self._ask = ask
        self._now = now
        self._wait_for_first = wait_for_first
        self._last: tuple[float, T] | None = None  # (when asked, the answer)
        self._asking = threading.Lock()

    def get(self, max_age: float) -> T | None:
        """The answer; None only before the first one, to a caller that does not wait."""
        last = self._last
        if last is not None and self._fresh(last[0], max_age):
            return last[1]
        if not self._asking.acquire(blocking=self._wait_for_first and last is None):
            return None if last is None else last[1]  # another caller is asking now
        try:
            last = self._last
            if last is not None and self._fresh(last[0], max_age):
                return last[1]  # answered while this one waited for the lock
            answer = self._ask()
            self._last = (self._now(), answer)
            return answer
        finally:
            self._asking.release()

    def _fresh(self, asked_at: float, max_age: float) -> bool:
        return 0 <= self._now() - asked_at < max_age
