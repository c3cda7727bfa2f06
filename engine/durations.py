"""Durations as people write them ("2 days", "1 hour 30 minutes"), for every text a user
reads: diagrams, condition descriptions, the reasons recorded with held emails."""

from __future__ import annotations

from datetime import timedelta

_UNITS = (
    ("day", timedelta(days=1)),
    ("hour", timedelta(hours=1)),
    ("minute", timedelta(minutes=1)),
)


def describe_duration(duration: timedelta) -> str:
    """A duration as people write it: "2 days", "1 hour 30 minutes", "1 day 12 hours".
    The sign is dropped: say "before" or "after" around it."""
    left = abs(duration)
    words = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            words.append(f"{count} {unit}" + ("s" if count != 1 else ""))
    if left or not words:
        seconds = left.total_seconds()
        words.append(f"{seconds:g} second" + ("s" if seconds != 1 else ""))
    return " ".join(words)
