"""midday_zone: a zone where it is noon, for tests on the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.testing import midday_zone


@pytest.mark.parametrize("hour", range(24))
def test_the_zone_it_names_is_at_noon_whatever_the_utc_hour(hour: int) -> None:
    now = datetime(2026, 11, 23, hour, 40, tzinfo=UTC)
    zone = midday_zone(now)
    assert now.astimezone(ZoneInfo(zone)).hour == 12, zone


def test_a_time_in_another_zone_is_the_same_instant() -> None:
    # 00:30 in Madrid is 23:30 UTC, eleven hours behind which it is noon
    madrid = datetime(2026, 11, 24, 0, 30, tzinfo=ZoneInfo("Europe/Madrid"))
    assert midday_zone(madrid) == "Etc/GMT+11"
