"""Client-side rate limiting for HubSpot's rolling windows.

HubSpot counts requests per app in a rolling 10-second window (100 for a private app on
Free/Starter, 190 on Pro/Enterprise, 250 with the API add-on, 110 for OAuth apps) and
search requests separately at 5 per second. Answering a 429 costs both sides a round trip,
so we pace ourselves: :class:`RollingWindow` grants at most ``max_requests`` in any
``interval_s``, and :class:`HubSpotRateLimiter` keeps one window for the API and one for
search, and adapts to the ``X-HubSpot-RateLimit-*`` headers when the answers carry them:

- ``-Max`` lowers the limit if the account's is below ours (never raises it: a lower
  configured limit leaves room for other apps sharing the account);
- ``-Interval-Milliseconds`` replaces the window length;
- ``-Remaining`` says how many the server has left: if that means more were used than we
  counted (another process with the same token), the difference is booked now, so we slow
  down instead of running into 429s.

Both are thread-safe and never sleep while holding their lock. Time is injected
(``monotonic`` and ``sleep``) so tests run on a fake clock. One limiter paces one process;
several processes sharing a token each need a share of the limit (or rely on the headers).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

#: HubSpot's default for a private app on Free/Starter: 100 requests per 10 s.
DEFAULT_MAX_PER_INTERVAL = 100
DEFAULT_INTERVAL_S = 10.0
DEFAULT_SEARCH_PER_SECOND = 5

MAX_HEADER = "x-hubspot-ratelimit-max"
REMAINING_HEADER = "x-hubspot-ratelimit-remaining"
INTERVAL_HEADER = "x-hubspot-ratelimit-interval-milliseconds"


class RollingWindow:
    """At most ``max_requests`` grants in any ``interval_s`` seconds (a sliding log)."""

    def __init__(
        self,
        *,
        max_requests: int,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests < 1 or interval_s <= 0:
            raise ValueError("a rate window needs max_requests >= 1 and interval_s > 0")
        self.max_requests = max_requests
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._grants: deque[float] = deque()
        self._server_max: int | None = None
        self._paused_until = -math.inf

    @property
    def limit(self) -> int:
        """The effective limit: ours, or the server's if it is lower."""
        if self._server_max is None:
            return self.max_requests
        return max(1, min(self.max_requests, self._server_max))

    def in_window(self) -> int:
        with self._lock:
            self._expire(self._monotonic())
            return len(self._grants)

    def try_acquire(self) -> float:
        """Take a slot and return 0.0, or return how many seconds to wait before trying again."""
        with self._lock:
            now = self._monotonic()
            if now < self._paused_until:
                return self._paused_until - now
            self._expire(now)
            if len(self._grants) < self.limit:
                self._grants.append(now)
                return 0.0
            # Full: the oldest grant leaving the window frees the next slot.
            return max(self._grants[0] + self.interval_s - now, 1e-3)

    def observe(
        self,
        *,
        max_requests: int | None = None,
        remaining: int | None = None,
        interval_s: float | None = None,
    ) -> None:
        """Adapt to what the server said about this window."""
        with self._lock:
            now = self._monotonic()
            if interval_s is not None and interval_s > 0:
                self.interval_s = interval_s
            if max_requests is not None and max_requests > 0:
                self._server_max = max_requests
            if remaining is None:
                return
            self._expire(now)
            server_used = (self._server_max or self.limit) - max(remaining, 0)
            missing = min(server_used, self.limit) - len(self._grants)
            # Someone else spent part of the window: book it now (conservative: these
            # phantom grants leave the window later than the real ones did).
            self._grants.extend([now] * max(missing, 0))

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (after a 429 that said how long to wait)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    def _expire(self, now: float) -> None:
        horizon = now - self.interval_s
        while self._grants and self._grants[0] <= horizon:
            self._grants.popleft()


class HubSpotRateLimiter:
    """One window for the API (default 100 / 10 s) and one for search (5 / s).

    A search request takes a slot from both (UNCONFIRMED whether HubSpot counts searches in
    the 10-second window too; counting them is the safe side).
    """

    def __init__(
        self,
        *,
        max_per_interval: int = DEFAULT_MAX_PER_INTERVAL,
        interval_s: float = DEFAULT_INTERVAL_S,
        search_per_second: int = DEFAULT_SEARCH_PER_SECOND,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.general = RollingWindow(
            max_requests=max_per_interval, interval_s=interval_s, monotonic=monotonic
        )
        self.search = RollingWindow(
            max_requests=search_per_second, interval_s=1.0, monotonic=monotonic
        )
        self.monotonic = monotonic
        self.sleep = sleep
        self._stats_lock = threading.Lock()
        self.waited_s = 0.0  # total time callers spent waiting here, for operators and benches

    def acquire(self, *, search: bool = False) -> float:
        """Block until a request may go; return the seconds waited."""
        waited = 0.0
        windows = (self.search, self.general) if search else (self.general,)
        for window in windows:
            while (delay := window.try_acquire()) > 0:
                self.sleep(delay)
                waited += delay
        if waited:
            with self._stats_lock:
                self.waited_s += waited
        return waited

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to the ``X-HubSpot-RateLimit-*`` headers of an answer, if it has them."""
        lowered = {k.lower(): v for k, v in headers.items()}
        max_requests = _int(lowered.get(MAX_HEADER))
        remaining = _int(lowered.get(REMAINING_HEADER))
        interval_ms = _int(lowered.get(INTERVAL_HEADER))
        if max_requests is None and remaining is None and interval_ms is None:
            return
        self.general.observe(
            max_requests=max_requests,
            remaining=remaining,
            interval_s=interval_ms / 1000 if interval_ms else None,
        )

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said it is over the limit)."""
        self.general.pause(seconds)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
