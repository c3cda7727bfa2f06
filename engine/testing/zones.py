"""Time zones for tests that run on the wall clock rather than a virtual one.

Guardrails hold marketing email in a contact's quiet hours, so a test against real services
that tracks a UTC contact and waits for her welcome email passes by day and fails at night.
Such a test gives its contacts ``midday_zone()``: a fixed-offset zone where it is now about
noon, leaving hours of daytime on either side whatever the time the test runs.
"""

from __future__ import annotations

from datetime import UTC, datetime


def midday_zone(now: datetime | None = None) -> str:
    """The ``Etc/GMT±N`` zone whose local hour is 12 at ``now`` (default: the wall clock).

    ``Etc`` names count the other way round: ``Etc/GMT-5`` is five hours ahead of UTC.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    ahead = 12 - moment.hour  # -11 .. +12, all of which exist as Etc zones
    if ahead == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if ahead > 0 else '+'}{abs(ahead)}"
