"""A condition goal (or exit) that already holds when a contact enters ends the enrollment
at once, before any step runs, as HubSpot unenrolls a contact who meets the goal criteria
when enrolled: a contact imported on the pro plan does not get the upgrade nurture.

The condition is read as of the event being applied (a later event of the same job does not
count yet) and for the new enrollment (``opened(...)`` names its own emails: none yet)."""

from __future__ import annotations

from pathlib import Path

from engine import (
    Workflow,
    build_registry,
    has_tag,
    lifecycle_journey,
    on_condition,
    on_event,
    opened,
    reenter_always,
    send_email,
    wait,
)
from engine.conditions import attribute, not_
from engine.models import Enrollment
from engine.registry import Registry
from engine.testing import Simulation
from tests.language_support import TEMPLATES, running, sent
from tests.support import enrollments
from workflows.rules import RULES

EVENTS = ("plan.changed",)
PRO = attribute("plan", "pro")


def _registry(*workflows: Workflow) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        events=EVENTS,
    )


def _nurture(**rules: object) -> Workflow:
    return Workflow(
        "upgrade_nurture",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=1),
            send_email("guide", id="guide"),
        ],
        **rules,  # type: ignore[arg-type]
    )


UNTIL_PRO = _nurture(goals=[on_condition(PRO)])


def _end_reason(enrollment: Enrollment) -> str:
    return str(enrollment.context.get("end_reason"))


def test_a_goal_already_met_when_she_enters_converts_her_at_once() -> None:
    with Simulation(_registry(UNTIL_PRO)) as sim:
        # Given a contact imported on the pro plan
        sim.contact_import("pia@example.com", attributes={"plan": "pro"})
        # When she starts a trial, and days go by
        sim.track("pia@example.com", "trial.started")
        sim.advance(days=3)
        # Then she converted at entry: nothing was sent
        sim.expect_no_email("pia@example.com")
        enrollment = sim.expect_enrollment("pia@example.com", "upgrade_nurture", "converted")
        assert _end_reason(enrollment) == "goal already met at entry: plan = 'pro'"
        assert enrollment.ended_at == enrollment.started_at
        assert (
            "workflow upgrade_nurture converted: goal already met at entry: plan = 'pro'"
            in sim.explain("pia@example.com")
        )


def test_a_goal_the_triggering_event_makes_true_converts_her_before_any_step() -> None:
    with Simulation(_registry(UNTIL_PRO)) as sim:
        # The trial starts on the pro plan: the event that enrolls her also meets the goal
        sim.track("pia@example.com", "trial.started", attributes={"plan": "pro"})
        sim.advance(days=3)
        sim.expect_no_email("pia@example.com")
        enrollment = sim.expect_enrollment("pia@example.com", "upgrade_nurture", "converted")
        assert _end_reason(enrollment) == "goal already met at entry: plan = 'pro'"


def test_a_goal_not_met_at_entry_runs_the_workflow_until_it_turns_true() -> None:
    with Simulation(_registry(UNTIL_PRO)) as sim:
        sim.track("pia@example.com", "trial.started", attributes={"plan": "free"})
        sim.track("pia@example.com", "plan.changed", attributes={"plan": "pro"})
        sim.advance(days=3)
        sim.expect_email("pia@example.com", "hello")
        sim.expect_no_email("pia@example.com", "guide")
        enrollment = sim.expect_enrollment("pia@example.com", "upgrade_nurture", "converted")
        assert _end_reason(enrollment) == "goal reached: plan = 'pro'"


def test_a_goal_is_read_as_of_the_event_not_a_later_one_of_the_same_job(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [UNTIL_PRO], events=EVENTS) as (rt, _clock, email):
        # Given the trial and the upgrade that follows it, applied by one job
        rt.track("pia@example.com", "trial.started")
        rt.track("pia@example.com", "plan.changed", attributes={"plan": "pro"})
        rt.run_until_idle()
        # Then she was not on pro when she entered: the welcome went, then she converted
        assert sent(email) == ["upgrade_nurture:hello"]
        (enrollment,) = enrollments(rt)
        assert enrollment.status == "converted"
        assert _end_reason(enrollment) == "goal reached: plan = 'pro'"


def test_an_engagement_goal_is_false_for_a_new_enrollment() -> None:
    # opened("hello") names this enrollment's own email: an earlier entry's does not count
    again = _nurture(goals=[on_condition(opened("hello"))], reentry=reenter_always())
    with Simulation(_registry(again)) as sim:
        sim.track("pia@example.com", "trial.started")
        sim.open_email("pia@example.com", "hello")
        sim.advance(days=3)
        sim.track("pia@example.com", "trial.started")
        sim.advance(days=3)
        sim.expect_email("pia@example.com", "hello", times=2)
        sim.expect_email("pia@example.com", "guide", times=1)


def test_an_exit_already_met_at_entry_exits_her_at_once() -> None:
    until_opted_out = _nurture(exit_when=[on_condition(has_tag("no_nurture"))])
    with Simulation(_registry(until_opted_out)) as sim:
        sim.contact_import("pia@example.com", attributes={"tags": ["no_nurture"]})
        sim.track("pia@example.com", "trial.started")
        sim.advance(days=3)
        sim.expect_no_email("pia@example.com")
        enrollment = sim.expect_enrollment("pia@example.com", "upgrade_nurture", "exited")
        assert _end_reason(enrollment) == "exit condition already met at entry: tagged 'no_nurture'"


def test_a_goal_wins_over_an_exit_both_met_at_entry() -> None:
    both = _nurture(goals=[on_condition(PRO)], exit_when=[on_condition(has_tag("no_nurture"))])
    with Simulation(_registry(both)) as sim:
        sim.contact_import("pia@example.com", attributes={"plan": "pro", "tags": ["no_nurture"]})
        sim.track("pia@example.com", "trial.started")
        enrollment = sim.expect_enrollment("pia@example.com", "upgrade_nurture", "converted")
        assert _end_reason(enrollment) == "goal already met at entry: plan = 'pro'"


def test_an_entry_rule_refuses_before_the_goal_is_looked_at() -> None:
    # An entry rule keeps her out altogether: no enrollment is written
    for_free_plans = _nurture(goals=[on_condition(PRO)], entry_if=not_(PRO))
    with Simulation(_registry(for_free_plans)) as sim:
        sim.contact_import("pia@example.com", attributes={"plan": "pro"})
        sim.track("pia@example.com", "trial.started")
        timeline = sim.timeline("pia@example.com")
        assert timeline is not None
        assert not [e for e in timeline.entries if "upgrade_nurture" in e.summary]
        # the harness names the refusal, written nowhere
        assert "refused    upgrade_nurture: entry rule not met: not (plan = 'pro')" in sim.explain(
            "pia@example.com"
        )
