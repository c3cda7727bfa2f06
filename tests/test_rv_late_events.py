"""Review of session 17: late events (``LATE_EVENTS_AFTER``) and ``wait_for_event``'s timeout."""

from __future__ import annotations

from datetime import timedelta

from engine import (
    Workflow,
    build_registry,
    did_event,
    lifecycle_journey,
    on_condition,
    on_event,
    send_email,
    wait,
)
from engine.testing import Simulation
from tests.language_support import TEMPLATES
from workflows.rules import RULES


def _registry(*workflows: Workflow):
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        events=("plan.changed",),
    )


def test_a_late_event_starts_no_condition_triggered_workflow() -> None:
    first_order = Workflow(
        "first_order_thanks",
        trigger=on_condition(did_event("order.completed")),
        steps=[send_email("welcome", id="thanks")],
    )
    with Simulation(_registry(first_order)) as sim:
        sim.track("ana@example.com", "page.viewed")
        # When a backfill brings an order from last month
        sim.track("ana@example.com", "order.completed", occurred_at=sim.now() - timedelta(days=30))
        sim.advance(hours=1)
        # Then no workflow starts from it: it is history
        sim.expect_no_email("ana@example.com")


def test_a_late_event_ends_no_workflow_by_a_condition_goal() -> None:
    nurture = Workflow(
        "nurture",
        trigger=on_event("trial.started"),
        steps=[send_email("welcome", id="hello"), wait(days=1), send_email("guide", id="guide")],
        goals=[on_condition(did_event("order.completed"))],
    )
    with Simulation(_registry(nurture)) as sim:
        sim.track("bo@example.com", "trial.started")
        sim.track("bo@example.com", "order.completed", occurred_at=sim.now() - timedelta(days=30))
        sim.advance(days=2)
        sim.expect_enrollment("bo@example.com", "nurture", "completed")
        sim.expect_email("bo@example.com", "guide")
