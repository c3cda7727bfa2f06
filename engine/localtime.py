"""Times of day in a contact's time zone, computed in local time and stored as UTC.

Arithmetic is done on local wall-clock dates, then converted, so "the next weekday at 9:00"
stays 9:00 across a daylight-saving change.
"""

from __future__ import annotations

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
    """The first instant strictly after ``now`` that is ``hhmm`` local (on a weekday)."""
    tz = zone(tz_name)
    at = parse_hhmm(hhmm)
    day = now.astimezone(tz).date()
    for offset in range(0, 9):
        candidate_day = day + timedelta(days=offset)
        if weekdays_only and candidate_day.weekday() >= 5:
            continue
        candidate = at_local(candidate_day, at, tz)
        if candidate > now:
            return candidate
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


def parse_instant(value: object, tz_name: str) -> datetime | None:
    """An attribute holding a date or datetime (ISO text), as aware UTC; None if not one."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(0))
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(tz_name))
    return parsed.astimezone(UTC)
