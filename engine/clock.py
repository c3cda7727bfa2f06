"""The one source of "now" (DESIGN.md section 6).

Production code asks a ``Clock``; tests and the simulator use ``VirtualClock``, which only
moves when told to. Every datetime a clock returns is timezone-aware UTC.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that stands still until ``advance`` or ``set`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**kwargs)`` (e.g. ``days=3``)."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("a virtual clock only moves forward")
        with self._lock:
            self._now += step
            return self._now

    def set(self, instant: datetime) -> datetime:
        instant = ensure_utc(instant)
        with self._lock:
            if instant < self._now:
                raise ValueError("a virtual clock only moves forward")
            self._now = instant
            return self._now


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
