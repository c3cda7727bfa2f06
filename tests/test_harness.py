"""The time-travel test harness that users test their own workflows with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import (
    Workflow,
    branch,
    build_registry,
    lifecycle_journey,
    on_event,
    on_schedule,
    opened,
    reenter_always,
    send_email,
    wait,
    wait_until,
)
from engine.testing import JourneyAssertionError, Simulation, check_golden
from tests.language_support import TEMPLATES
from workflows.rules import RULES


def _registry(*workflows: Workflow):  # type: ignore[no-untyped-def]
    return build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )


MORNING = Workflow(
    "morning",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("demo_invitation", id="invite"),
        wait(days=3),
        wait_until("09:00", weekdays_only=True),
        send_email("guide", id="follow_up"),
    ],
)


def test_the_fixture_runs_the_shipped_playbook(journeyline_sim: Simulation) -> None:
    journeyline_sim.track("ana@example.com", "trial.started", attributes={"first_name": "Ana"})
    journeyline_sim.expect_stage("ana@example.com", "decision")
    journeyline_sim.expect_email("ana@example.com", "offer", workflow="decision_trial")


def test_advance_lands_each_wake_up_at_its_own_local_time() -> None:
    with Simulation(_registry(MORNING), start=datetime(2026, 1, 7, 15, 0, tzinfo=UTC)) as sim:
        sim.track("kai@example.com", "demo.requested", timezone="Asia/Tokyo")
        sim.advance(days=10)
        # three days after Wednesday 15:00 UTC is Sunday 00:00 in Tokyo: Monday 09:00 local
        (follow_up,) = sim.expect_email("kai@example.com", "follow_up", at_local="09:00")
        assert follow_up.sent_at == datetime(2026, 1, 12, 0, 0, tzinfo=UTC)
        assert sim.now() == datetime(2026, 1, 17, 15, 0, tzinfo=UTC)


WEEKLY = Workflow(
    "weekly_digest",
    trigger=on_schedule("0 10 * * TUE"),  # Tuesdays, 10:00 in each contact's time zone
    reentry=reenter_always(),
    steps=[send_email("guide", id="digest")],
)


def test_advance_fires_every_schedule_slot_at_its_own_local_time() -> None:
    with Simulation(_registry(WEEKLY)) as sim:  # from Monday 5 January, 09:00 UTC
        sim.contact_import("kai@example.com", timezone="Asia/Tokyo")
        sim.contact_import("ned@example.com", timezone="America/New_York")
        sim.advance(days=10)
        tokyo = sim.expect_email("kai@example.com", "digest", times=2, at_local="10:00")
        new_york = sim.expect_email("ned@example.com", "digest", times=2, at_local="10:00")
        assert [s.sent_at for s in tokyo] == [
            datetime(2026, 1, 6, 1, 0, tzinfo=UTC),
            datetime(2026, 1, 13, 1, 0, tzinfo=UTC),
        ]
        assert [s.sent_at for s in new_york] == [
            datetime(2026, 1, 6, 15, 0, tzinfo=UTC),
            datetime(2026, 1, 13, 15, 0, tzinfo=UTC),
        ]


def test_a_failed_expectation_prints_the_timeline() -> None:
    with Simulation(_registry(MORNING)) as sim:
        sim.track("lea@example.com", "demo.requested", timezone="Europe/Paris")
        with pytest.raises(JourneyAssertionError) as info:
            sim.expect_email("lea@example.com", "follow_up")
        message = str(info.value)
        assert "expected 1 email(s) 'follow_up' to lea@example.com, found 0" in message
        assert "Timeline of lea@example.com" in message
        assert "entered workflow morning" in message
        assert "local)" in message
        with pytest.raises(JourneyAssertionError, match=r"expected lea@example\.com in stage"):
            sim.expect_stage("lea@example.com", "purchase")
        with pytest.raises(JourneyAssertionError, match="waiting"):
            sim.expect_enrollment("lea@example.com", "morning", "completed")


def test_golden_journeys_catch_a_change_in_behaviour(tmp_path: Path) -> None:
    golden = tmp_path / "golden" / "morning.json"
    with Simulation(_registry(MORNING)) as sim:
        sim.track("max@example.com", "demo.requested")
        sim.advance(days=5)
        check_golden(sim.journey("max@example.com"), golden, update=False)  # writes it
        check_golden(sim.journey("max@example.com"), golden, update=False)  # matches
    changed = Workflow(
        "morning",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("demo_invitation", id="invite"),
            wait(days=2),
            send_email("guide", id="follow_up"),
        ],
    )
    with Simulation(_registry(changed)) as sim:
        sim.track("max@example.com", "demo.requested")
        sim.advance(days=5)
        with pytest.raises(JourneyAssertionError, match="differs from") as failure:
            check_golden(sim.journey("max@example.com"), golden, update=False)
    # The diff reads as the timeline does, a line per entry, not as the file's JSON
    changed_lines = [
        line
        for line in str(failure.value).splitlines()
        if line[:1] in "+-" and line[:3] not in ("---", "+++")
    ]
    assert changed_lines and all("T" in line[1:21] and "  " in line for line in changed_lines)
    assert any(line.startswith("+") and "morning/follow_up" in line for line in changed_lines)
    assert not any('"summary"' in line for line in changed_lines)


def test_open_and_click_email_act_on_the_email_a_step_sent() -> None:
    """``opened(step)`` conditions can be tested without reaching into the message."""
    engaged = Workflow(
        "engaged",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("demo_invitation", id="invite"),
            wait(days=2),
            branch(opened("invite"), then=[send_email("guide", id="thanks_for_reading")]),
        ],
    )
    with Simulation(_registry(engaged)) as sim:
        for who in ("ana@example.com", "bo@example.com", "cy@example.com"):
            sim.track(who, "demo.requested")
        sim.open_email("ana@example.com", "invite")
        sim.click_email("bo@example.com", "invite")  # a click is an open too
        sim.advance(days=3)
        sim.expect_email("ana@example.com", "thanks_for_reading")
        sim.expect_email("bo@example.com", "thanks_for_reading")
        sim.expect_no_email("cy@example.com", "thanks_for_reading")
        with pytest.raises(JourneyAssertionError, match="got no 'nope' email to act on"):
            sim.open_email("cy@example.com", "nope")
