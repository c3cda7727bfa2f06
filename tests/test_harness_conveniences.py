"""Harness conveniences: broadcasts, deploying and migrating new versions mid-test, and
local send times in the zone the contact had when the email went out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import (
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    on_stage_entered,
    send_email,
    wait,
    wait_until,
)
from engine.testing import JourneyAssertionError, Simulation
from tests.language_support import TEMPLATES
from workflows.rules import RULES


def _registry(*workflows: Workflow):  # type: ignore[no-untyped-def]
    return build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )


def _drip(second_template: str) -> Workflow:
    return Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email(second_template, id="second"),
        ],
    )


OTHER = Workflow("other", trigger=on_event("webinar.attended"), steps=[send_email("guide")])


def test_deploy_then_migrate_moves_enrollments_to_the_new_version() -> None:
    v1, v2 = _drip("guide"), _drip("comparison_guide")
    with Simulation(_registry(v1, OTHER)) as sim:
        # Given Ann on version 1, waiting before its second email
        sim.track("ann@example.com", "demo.requested")
        # When version 2 is deployed: Ann stays on version 1, a newcomer starts on version 2
        registry = sim.deploy(v2)
        assert set(registry.workflows) == {"drip", "other"}  # the others stay
        assert sim.runtime.registry is registry
        sim.track("bo@example.com", "demo.requested")
        assert sim.expect_enrollment("ann@example.com", "drip", "waiting").version == v1.version
        assert sim.expect_enrollment("bo@example.com", "drip", "waiting").version == v2.version
        # And a preview moves nobody
        preview = sim.migrate("drip", apply=False)
        assert dict(preview.landing) == {"second": 1}
        assert sim.expect_enrollment("ann@example.com", "drip", "waiting").version == v1.version
        # When she is migrated
        plan = sim.migrate("drip")
        assert dict(plan.landing) == {"second": 1} and not plan.refused
        sim.advance(days=3)
        # Then she gets version 2's second email, and the welcome only once
        templates = [
            s.message.headers["X-Journeyline-Template"] for s in sim.emails("ann@example.com")
        ]
        assert templates == ["welcome", "comparison_guide"]
        sim.expect_enrollment("ann@example.com", "drip", "completed")


def test_use_workflows_replaces_the_whole_set_and_stores_the_new_versions() -> None:
    v1, v2 = _drip("guide"), _drip("comparison_guide")
    with Simulation(_registry(v1, OTHER)) as sim:
        sim.track("ann@example.com", "demo.requested")
        sim.use_workflows(_registry(v2))
        assert set(sim.runtime.registry.workflows) == {"drip"}
        # and a later release can migrate from version 2
        sim.track("bo@example.com", "demo.requested")
        sim.deploy(_drip("trial_offer"))
        plan = sim.migrate("drip")
        assert plan.movable == 2 and not plan.refused


def test_broadcast_starts_the_workflow_for_its_audience_and_settles() -> None:
    newsletter = Workflow(
        "newsletter", trigger=on_stage_entered("awareness"), steps=[send_email("guide", id="nl")]
    )
    with Simulation(_registry(newsletter)) as sim:
        # Given two imported contacts in the audience (an import starts no workflow)
        sim.contact_import("ann@example.com", stage="awareness")
        sim.contact_import("bo@example.com", stage="awareness")
        sim.expect_no_email("ann@example.com")
        # When the workflow is broadcast
        result = sim.broadcast("newsletter")
        # Then both are enrolled and their emails went out, with no further call
        assert result.enrolled == 2
        sim.expect_email("ann@example.com", "nl")
        sim.expect_email("bo@example.com", "nl")


def test_at_local_is_the_zone_the_contact_had_when_the_email_went_out() -> None:
    mornings = Workflow(
        "mornings",
        trigger=on_event("demo.requested"),
        steps=[
            wait_until("10:00", id="first_morning"),
            send_email("guide", id="tip"),
            wait(days=2),
            wait_until("10:00", id="later_morning"),
            send_email("demo_invitation", id="tip2"),
        ],
    )
    with Simulation(_registry(mornings)) as sim:  # Monday 09:00 UTC: 18:00 in Tokyo
        # Given Kai in Tokyo gets the tip at 10:00 Tokyo time
        sim.track("kai@example.com", "demo.requested", timezone="Asia/Tokyo")
        sim.advance(days=1)
        # When he moves to New York before the second one
        sim.track("kai@example.com", "webinar.attended", timezone="America/New_York")
        sim.advance(days=4)
        # Then each email went out at 10:00 in the zone he had then
        (tip,) = sim.expect_email("kai@example.com", "tip", at_local="10:00")
        assert tip.sent_at == datetime(2026, 1, 6, 1, 0, tzinfo=UTC)
        assert tip.timezone == "Asia/Tokyo"
        (tip2,) = sim.expect_email("kai@example.com", "tip2", at_local="10:00")
        assert tip2.timezone == "America/New_York"
        # And a wrong expectation names the zone it compared in
        with pytest.raises(JourneyAssertionError, match=r"at 10:00 local \(Asia/Tokyo\)"):
            sim.expect_email("kai@example.com", "tip", at_local="09:00")
