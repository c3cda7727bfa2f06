"""A workflow edited while contacts are in flight (semantics probe): DESIGN.md principle 5
promises they finish on the version they started with, so the guard rails of that version
(its send window, its own frequency cap) go on holding their emails after a release that
drops them, until the enrollments are migrated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine import (
    Workflow,
    at_most,
    attribute,
    branch,
    build_registry,
    lifecycle_journey,
    on_event,
    send_email,
    send_window,
    wait,
)
from engine.registry import Registry
from engine.testing import Simulation
from workflows.rules import RULES

TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


def registry(workflows: Sequence[Workflow]) -> Registry:
    return build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )


def test_an_in_flight_enrollment_keeps_its_versions_send_window() -> None:
    # Given version 1 sends only 09:00-17:00, 13 hours after the trigger
    v1 = Workflow(
        "office_hours",
        trigger=on_event("demo.requested"),
        send_window=send_window("09:00", "17:00"),
        steps=[wait(hours=13, id="pause"), send_email("welcome", id="hello")],
    )
    # And version 2, released an hour later, has no window
    v2 = Workflow(
        "office_hours",
        trigger=on_event("demo.requested"),
        steps=[wait(hours=14, id="pause"), send_email("welcome", id="hello")],
    )
    with Simulation(registry([v1])) as sim:
        sim.track("ana@example.com", "demo.requested")  # Monday 09:00 UTC
        sim.advance(hours=1)
        sim.deploy(v2)
        # When her wait ends at 22:00, still on version 1
        sim.advance(days=2)
        # Then version 1's window holds the email until 09:00
        (sent,) = sim.expect_email("ana@example.com", "hello", at_local="09:00")
        assert sent.sent_at == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


def test_an_in_flight_enrollment_keeps_its_versions_own_cap() -> None:
    # Given version 1 sends at most one email a week, two a day apart
    v1 = Workflow(
        "weekly",
        trigger=on_event("demo.requested"),
        cap=at_most(1, per_days=7),
        steps=[
            send_email("welcome", id="first"),
            wait(days=1, id="pause"),
            send_email("guide", id="second"),
        ],
    )
    # And version 2, released in between, drops the cap
    v2 = Workflow(
        "weekly",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="first"),
            wait(days=2, id="pause"),
            send_email("guide", id="second"),
        ],
    )
    with Simulation(registry([v1])) as sim:
        sim.track("bo@example.com", "demo.requested")
        sim.advance(hours=1)
        sim.deploy(v2)
        sim.advance(days=10)
        # Then her second email waited for version 1's cap: a week after the first
        (sent,) = sim.expect_email("bo@example.com", "second")
        assert sent.sent_at == datetime(2026, 1, 12, 9, 0, tzinfo=UTC)


def test_an_in_flight_version_compares_a_list_attribute_as_written() -> None:
    # Given version 1 branches on a list attribute, a day after the trigger
    v1 = Workflow(
        "bilingual",
        trigger=on_event("demo.requested"),
        steps=[
            wait(days=1, id="pause"),
            branch(
                attribute("languages", ["en", "es"]),
                then=[send_email("welcome", id="both")],
                otherwise=[send_email("guide", id="other")],
            ),
        ],
    )
    # And version 2, released while she waits, waits two days
    v2 = Workflow(
        "bilingual",
        trigger=on_event("demo.requested"),
        steps=[wait(days=2, id="pause"), send_email("welcome", id="both")],
    )
    with Simulation(registry([v1])) as sim:
        sim.track("eva@example.com", "demo.requested", attributes={"languages": ["en", "es"]})
        sim.advance(hours=1)
        sim.deploy(v2)
        sim.advance(days=2)
        # Then version 1, read back from its stored spec, still takes the "then" path
        sim.expect_email("eva@example.com", "both")
        sim.expect_no_email("eva@example.com", "other")
