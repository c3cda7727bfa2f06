"""The period a report covers, and reading its bounds as people write them.

A period runs from ``since`` (included) to ``until`` (excluded), both UTC, either one open:
no ``since`` is the beginning of the database, no ``until`` is now. ``parse_moment`` reads
``30d``, ``6h`` or ``90m`` (that long before now) and ISO dates or times (UTC unless they say
otherwise); a date alone given as ``until`` means the end of that day, so ``--since
2026-06-01 --until 2026-06-30`` is the whole of June.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement

from engine.errors import ValidationError

_AGE = re.compile(r"(\d+)\s*([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
# A time whose "+02:00" lost its plus in a URL's query string, where "+" means a space.
_SPACED_OFFSET = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}:?\d{2}$")
_PLUS_HINT = " (in a URL, write the + of a UTC offset as %2B)"


def _date_alone(text: str) -> date | None:
    """``text`` as a date without a time (``2026-06-01``, ``20260601``), else None: every
    form of a date alone means its whole day, so ``--until 20260630`` ends where
    ``--until 2026-06-30`` does."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_moment(text: str, *, now: datetime, field: str, end_of_day: bool = False) -> datetime:
    """``text`` as a UTC time: an age before ``now`` (``30d``, ``6h``, ``90m``) or an ISO
    date or time. A date alone is its midnight, or with ``end_of_day`` the next midnight.
    Raises ``ValidationError`` naming ``field``."""
    cleaned = text.strip()
    age = _AGE.fullmatch(cleaned)
    try:
        if age:
            return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        day = _date_alone(cleaned)
        if day is not None:
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return midnight + timedelta(days=1) if end_of_day else midnight
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValidationError(
            f"{text!r} is neither an ISO date or time (2026-06-01, 2026-06-01T09:00) nor an "
            "age like 30d, 6h or 90m" + _PLUS_HINT * bool(_SPACED_OFFSET.search(cleaned)),
            field=field,
        ) from None
    except OverflowError:  # an age of centuries, the day after 9999-12-31
        raise ValidationError(_OUT_OF_RANGE.format(text=text), field=field) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00: before the calendar's first day in UTC
        raise ValidationError(_OUT_OF_RANGE.format(text=text), field=field) from None


_OUT_OF_RANGE = "{text!r} is a date outside the calendar this can count in (years 1 to 9999)"


@dataclass(frozen=True)
class Period:
    """``since`` (included) to ``until`` (excluded), UTC; None leaves that end open."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValidationError(f"{name} must be a UTC time, not a naive one", field=name)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValidationError(
                f"until ({self.until:%Y-%m-%d %H:%M} UTC) must be after since "
                f"({self.since:%Y-%m-%d %H:%M} UTC)",
                field="until",
            )

    @classmethod
    def parse(cls, since: str | None, until: str | None, *, now: datetime) -> Period:
        """A period from text as the CLI and the API take it (see ``parse_moment``)."""
        start = None if since is None else parse_moment(since, now=now, field="since")
        end = (
            None if until is None else parse_moment(until, now=now, field="until", end_of_day=True)
        )
        if start is not None and start > now:  # nothing has happened in it yet: every rate
            # would read 0% (no churn, no conversion) rather than "no data"
            raise ValidationError(
                f"since ({start:%Y-%m-%d %H:%M} UTC) is in the future: nothing has happened "
                "in that period yet",
                field="since",
            )
        return cls(start, end)

    def holds(self, column: Any) -> list[ColumnElement[bool]]:
        """SQL conditions: ``column`` (a time) falls in the period."""
        found: list[ColumnElement[bool]] = []
        if self.since is not None:
            found.append(column >= self.since)
        if self.until is not None:
            found.append(column < self.until)
        return found

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def bounds(self) -> str:
        """Which ends the period holds, in words: an event at exactly ``until`` is in the
        next period, not this one (empty when neither end is set)."""
        said = ["the start included"] if self.since else []
        return ", ".join([*said, *(["the end excluded"] if self.until else [])])

    def describe(self) -> str:
        """``2026-06-01 00:00 to 2026-07-01 00:00 UTC``, ``everything up to now``..."""
        start = _moment(self.since) if self.since else None
        end = _moment(self.until) if self.until else None
        if start and end:
            return f"{start} to {end} UTC"
        if start:
            return f"since {start} UTC"
        if end:
            return f"everything before {end} UTC"
        return "everything recorded"


def _moment(value: datetime) -> str:
    """To the minute, or to the second when the bound has seconds: a period from ``90m``
    ago starts at 10:29:47, and saying 10:29 would claim 47 seconds it leaves out (the
    report's ``since`` and ``until`` give the exact bounds)."""
    if value.second or value.microsecond:
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return f"{value:%Y-%m-%d %H:%M}"
