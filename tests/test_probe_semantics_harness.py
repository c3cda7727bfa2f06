"""What the harness prints when an expectation about re-entry or daylight saving fails
(semantics probe): a marketer reading the message should see why."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import (
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    reenter_always,
    send_email,
    wait,
)
from engine.registry import Registry
from engine.testing import JourneyAssertionError, Simulation
from workflows.rules import RULES

TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


def registry(workflows: Sequence[Workflow]) -> Registry:
    return build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )


def test_a_trigger_while_still_in_a_re_enterable_workflow_says_so() -> None:
    # Given a workflow anyone may enter again, three days long
    every_demo = Workflow(
        "every_demo",
        trigger=on_event("demo.requested"),
        reentry=reenter_always(),
        steps=[send_email("welcome", id="hi"), wait(days=3), send_email("guide", id="more")],
    )
    with Simulation(registry([every_demo])) as sim:
        # When she asks for a demo twice, a day apart, while the first run is going on
        sim.track("ana@example.com", "demo.requested")
        sim.advance(days=1)
        sim.track("ana@example.com", "demo.requested")
        sim.advance(days=5)
        # Then expecting two welcomes fails, and the message says why the second trigger
        # did not enter her: she was still in it
        with pytest.raises(JourneyAssertionError) as failure:
            sim.expect_email("ana@example.com", "hi", times=2)
    (line,) = [x for x in str(failure.value).splitlines() if "refused" in x]
    assert "2026-01-06 09:00 UTC" in line
    assert "every_demo: already in it (entry 1, started 2026-01-05 09:00 UTC, waiting)" in line


def test_a_local_time_off_by_a_daylight_saving_change_says_so() -> None:
    # Given "one day later", from Saturday 09:00 in Madrid the day before clocks go forward
    later = Workflow(
        "next_day",
        trigger=on_event("demo.requested"),
        steps=[send_email("welcome", id="hi"), wait(days=1), send_email("guide", id="more")],
    )
    start = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    with Simulation(registry([later]), start=start) as sim:
        sim.track("eva@example.com", "demo.requested", timezone="Europe/Madrid")
        sim.advance(days=2)
        # When the test expects it at 09:00 local the next day
        with pytest.raises(JourneyAssertionError) as failure:
            sim.expect_email("eva@example.com", "more", at_local="09:00")
    # Then the message says the clocks changed on the way, and what a day's wait is
    first = str(failure.value).splitlines()[0]
    assert first.startswith("email 'more' went out at 10:00 local (Europe/Madrid), not 09:00")
    assert "UTC+01:00 to UTC+02:00" in first
    assert "wait_until" in first
