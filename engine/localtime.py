"""Times of day in a contact's time zone, computed in local time and stored as UTC.

Arithmetic is done on local wall-clock dates, then converted, so "the next weekday at 9:00"
stays 9:00 across a daylight-saving change.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # a bad stored zone must not stop a send: fall back to UTC
        return ZoneInfo("UTC")


def parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """``day`` at ``at`` in ``tz``, as UTC (a time skipped by DST moves forward by the gap)."""
    local = datetime.combine(day, at, tzinfo=tz)
    # Round-trip through UTC normalises a wall time that DST skipped.
    return local.astimezone(UTC)


def next_time_of_day(
    now: datetime,
    tz_name: str,
    hhmm: str,
    *,
    weekdays_only: bool = False,
) -> datetime:
    """The first instant strictly after ``now`` that is ``hhmm`` local (on a weekday).

    A time the autumn change repeats comes twice: at 01:10 the second time (EST), the
    next 01:30 is twenty minutes later (the second 01:30), not the next night; at 01:40
    the first time it has passed on the wall clock, so it is the next night."""
    tz = zone(tz_name)
    at = parse_hhmm(hhmm)
    local_now = now.astimezone(tz)
    day = local_now.date()
    for offset in range(0, 9):
        candidate_day = day + timedelta(days=offset)
        if weekdays_only and candidate_day.weekday() >= 5:
            continue
        candidate = at_local(candidate_day, at, tz)
        if candidate > now:
            return candidate
        if offset == 0 and at > local_now.time().replace(fold=0):
            # Earlier on the wall clock than ``at``, yet past its first occurrence: now is
            # in the repeated hour, and ``at`` comes again in it.
            repeated = at_local(candidate_day, at.replace(fold=1), tz)
            if repeated > now:
                return repeated
    raise AssertionError("unreachable: a weekday comes within 9 days")


def in_window(
    now: datetime, tz_name: str, start: str, end: str, *, weekdays_only: bool = False
) -> bool:
    """Whether ``now`` falls in the daily local window [start, end) (wrapping midnight)."""
    local = now.astimezone(zone(tz_name))
    begin, finish, t = parse_hhmm(start), parse_hhmm(end), local.time()
    if weekdays_only and local.weekday() >= 5:
        return False
    if begin <= finish:
        return begin <= t < finish
    return t >= begin or t < finish


UNIX_MILLISECONDS_FROM = 100_000_000_000
"""A Unix time this large or larger is in milliseconds (as HubSpot and JavaScript write
them): in seconds it would be after the year 5000."""

EARLIEST_DATE = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(2200, 1, 1, tzinfo=UTC)
"""Dates a wait counts from lie in [``EARLIEST_DATE``, ``LATEST_DATE``): outside them a value
is a placeholder (``0001-01-01``, ``9999-12-31`` in CRM exports) or a mistake, and date
arithmetic near the ends of Python's calendar overflows."""

DATE_FORMS = (
    "an ISO 8601 date or time (2026-01-20, 20260120, 2026-01-20T15:00:00+01:00) or a Unix "
    "time in seconds or milliseconds, from 1900 to 2199"
)


def parse_instant(value: object, tz_name: str) -> datetime | None:
    """An attribute holding a date or a time, as aware UTC; None if it holds none (missing,
    empty, or not a date: ``date_problem`` tells which). ISO 8601 text without an offset
    (``2026-01-20``, ``20260120``, ``2026-01-20T15:00``) is in the contact's zone
    ``tz_name``; a Unix time (a number, or digits in a string that ISO 8601 does not read)
    is in seconds, or milliseconds from ``UNIX_MILLISECONDS_FROM``. Only instants from
    ``EARLIEST_DATE`` to ``LATEST_DATE`` count."""
    parsed: datetime | None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(0))
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int | float):
        parsed = _from_unix(value)
    elif isinstance(value, str):
        text = value.strip()
        try:  # ISO first: 20260316 is the basic form of 2026-03-16, not a Unix time
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = _from_unix(float(text)) if _UNIX.fullmatch(text) else None
    else:
        return None
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone(tz_name))
        instant = parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # the ends of the calendar, moved by an offset
        return None
    return instant if EARLIEST_DATE <= instant < LATEST_DATE else None


_UNIX = re.compile(r"-?\d+(\.\d+)?")


def _from_unix(seconds: float) -> datetime | None:
    if seconds != seconds or abs(seconds) == float("inf"):  # NaN, infinity
        return None
    if abs(seconds) >= UNIX_MILLISECONDS_FROM:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def date_problem(value: object) -> str | None:
    """Why ``value``, given for an attribute a workflow waits on, is not a date; None when it
    is one, or holds nothing (null, empty text: no date, which a wait goes straight past)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if parse_instant(value, "UTC") is not None:
        return None
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{shown} is not a date: give {DATE_FORMS}"
