"""Local times across daylight-saving changes, as a marketer in Madrid or New York reads
them (semantics probe): a time of day that the autumn change repeats comes round again in
the repeated hour, so quiet hours ending then end that night, not a day later."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine import Workflow, build_registry, lifecycle_journey, on_event, quiet_hours, send_email
from engine.localtime import next_time_of_day
from engine.registry import Registry
from engine.testing import Simulation
from engine.workflow import Guardrails
from workflows.rules import RULES

TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


def registry(workflows: Sequence[Workflow], *, guardrails: Guardrails | None = None) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        guardrails=guardrails,
    )


def test_the_next_time_of_day_in_the_repeated_hour_is_the_second_one() -> None:
    # Given New York on 1 November 2026, at 01:10 the second time (EST: 06:10 UTC)
    now = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)
    # Then the next 01:30 is 20 minutes later (01:30 EST), not the next night
    assert next_time_of_day(now, "America/New_York", "01:30") == datetime(
        2026, 11, 1, 6, 30, tzinfo=UTC
    )
    # And at 01:10 the first time (EDT: 05:10 UTC), it is the first 01:30 (EDT)
    first = datetime(2026, 11, 1, 5, 10, tzinfo=UTC)
    assert next_time_of_day(first, "America/New_York", "01:30") == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )
    # And at 01:40 the first time, 01:30 has passed on the wall clock: the next night
    later = datetime(2026, 11, 1, 5, 40, tzinfo=UTC)
    assert next_time_of_day(later, "America/New_York", "01:30") == datetime(
        2026, 11, 2, 6, 30, tzinfo=UTC
    )


def test_a_time_the_spring_change_skips_is_just_after_it() -> None:
    # Given Madrid on 29 March 2026 at 01:30 CET, when 02:00-03:00 does not exist
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    # Then 02:30 that night is 03:30 CEST (01:30 UTC), and 03:30 is the same instant
    assert next_time_of_day(now, "Europe/Madrid", "02:30") == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_quiet_hours_ending_in_the_repeated_hour_release_the_email_that_night() -> None:
    # Given quiet hours 21:00-01:30 and a New Yorker whose trigger comes at 01:10 the
    # second time on the night clocks go back
    welcome = Workflow(
        "night_owl", trigger=on_event("demo.requested"), steps=[send_email("welcome", id="hi")]
    )
    guardrails = Guardrails(quiet_hours=quiet_hours("21:00", "01:30"))
    start = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)
    with Simulation(registry([welcome], guardrails=guardrails), start=start) as sim:
        sim.track("ny@example.com", "demo.requested", timezone="America/New_York")
        # When two hours go by
        sim.advance(hours=2)
        # Then the email went at 01:30 local, twenty minutes later, not a day later
        (sent,) = sim.expect_email("ny@example.com", "hi", at_local="01:30")
        assert sent.sent_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
