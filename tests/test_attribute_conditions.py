"""Conditions on a contact's attributes (``attribute``, ``has_tag``, segments of them) as
triggers, goals and exits turn true at the input that changes them: a tracked event's
``attributes``, or an update without an event (``upsert_contact``, a contact import).

An event's attributes are merged into its contact when it is recorded, before the pipeline
applies it; the event keeps what they replaced (``attributes_before``), so "before this
event" is read as it was, and "after it" without the changes of the events behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import (
    Segment,
    Workflow,
    all_of,
    attribute,
    build_registry,
    did_event,
    has_tag,
    lifecycle_journey,
    on_condition,
    on_event,
    on_segment_joined,
    send_email,
    set_attribute,
    wait,
)
from engine import pipeline as pipeline_module
from engine.models import EventStatus
from engine.testing import Simulation
from tests.language_support import TEMPLATES, running, sent
from tests.support import enrollments, events
from workflows.rules import RULES

EVENTS = ("plan.changed", "demo.booked")
PRO = Segment("pro plan", attribute("plan", "pro"))
ENTERPRISE = Segment("enterprise plan", attribute("plan", "enterprise"))


def pro_welcome() -> Workflow:
    return Workflow(
        "pro_welcome", trigger=on_segment_joined(PRO), steps=[send_email("welcome", id="hi_pro")]
    )


def enterprise_welcome() -> Workflow:
    return Workflow(
        "enterprise_welcome",
        trigger=on_segment_joined(ENTERPRISE),
        steps=[send_email("welcome", id="hi_enterprise")],
    )


def simulation(*workflows: Workflow) -> Simulation:
    registry = build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        events=EVENTS,
    )
    return Simulation(registry)


def test_an_attribute_changed_by_an_event_joins_the_segment() -> None:
    # Given a contact on the free plan
    with simulation(pro_welcome()) as sim:
        sim.track("a@x.com", "page.viewed", attributes={"plan": "free"})
        sim.advance(hours=1)
        sim.expect_email("a@x.com", "hi_pro", times=0)
        # When an event moves her to the pro plan
        sim.track("a@x.com", "plan.changed", attributes={"plan": "pro"})
        sim.advance(hours=1)
        # Then she joined the segment at that event, once
        sim.expect_email("a@x.com", "hi_pro")
        # And an event that changes nothing (pro again) does not make her join again
        sim.track("a@x.com", "plan.changed", attributes={"plan": "pro"})
        sim.advance(hours=1)
        sim.expect_email("a@x.com", "hi_pro")


def test_a_key_the_contact_did_not_have_joins_the_segment() -> None:
    # Given a contact with no plan at all
    with simulation(pro_welcome()) as sim:
        sim.track("a@x.com", "page.viewed")
        # When an event gives her one
        sim.track("a@x.com", "plan.changed", attributes={"plan": "pro"})
        sim.advance(hours=1)
        # Then she joined the segment
        sim.expect_email("a@x.com", "hi_pro")


def test_a_new_contact_created_in_the_segment_joins_it_once() -> None:
    """As in a CRM's workflows: a contact created with the segment's attributes enters it
    (she was in no segment before she existed); one created outside does not."""
    with simulation(pro_welcome()) as sim:
        sim.track("new@x.com", "page.viewed", attributes={"plan": "pro"})
        sim.track("free@x.com", "page.viewed", attributes={"plan": "free"})
        sim.track("new@x.com", "plan.changed", attributes={"plan": "pro"})
        sim.advance(hours=1)
        sim.expect_email("new@x.com", "hi_pro")  # once, not again at her later event
        sim.expect_email("free@x.com", "hi_pro", times=0)
        sim.contact_import("imported@x.com", attributes={"plan": "pro"})
        sim.advance(hours=1)
        sim.expect_email("imported@x.com", "hi_pro", times=0)  # an import starts nothing


def test_a_condition_goal_on_an_attribute_converts(tmp_path: Path) -> None:
    # Given a contact in a drip whose goal is the pro plan
    drip = Workflow(
        "drip",
        trigger=on_event("demo.booked"),
        goals=[on_condition(attribute("plan", "pro"))],
        steps=[send_email("welcome", id="a"), wait(days=2), send_email("guide", id="b")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, clock, email):
        rt.track("ana@example.com", "demo.booked", attributes={"plan": "free"})
        rt.run_until_idle()
        assert sent(email) == ["drip:a"]
        # When she moves to the pro plan the next day
        clock.advance(days=1)
        rt.track("ana@example.com", "plan.changed", attributes={"plan": "pro"})
        rt.run_until_idle()
        # Then the drip converted at that event, and its second email never goes
        (enrollment,) = enrollments(rt)
        assert enrollment.status == "converted"
        assert enrollment.context["end_reason"] == "goal reached: plan = 'pro'"
        clock.advance(days=3)
        rt.tick()
        rt.run_until_idle()
        assert sent(email) == ["drip:a"]


def test_a_tag_exit_exits(tmp_path: Path) -> None:
    # Given a contact in a drip that exits when she is tagged "vip"
    drip = Workflow(
        "drip",
        trigger=on_event("demo.booked"),
        exit_when=[on_condition(has_tag("vip"))],
        steps=[send_email("welcome", id="a"), wait(days=2), send_email("guide", id="b")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, _clock, _email):
        rt.track("ana@example.com", "demo.booked", attributes={"tags": ["new"]})
        rt.run_until_idle()
        # When an event tags her
        rt.track("ana@example.com", "plan.changed", attributes={"tags": ["new", "vip"]})
        rt.run_until_idle()
        # Then the drip exited
        (enrollment,) = enrollments(rt)
        assert enrollment.status == "exited"
        assert enrollment.context["end_reason"] == "exit: tagged 'vip'"


def test_two_pending_events_each_turn_their_own_condition(tmp_path: Path) -> None:
    """free -> pro, then pro -> enterprise, both pending when one job applies them: the
    first turns "pro" true and not "enterprise" (its "after" does not see the second), the
    second turns "enterprise" true, and "pro" is joined though the stored plan is never pro
    when the job runs."""
    workflows = [pro_welcome(), enterprise_welcome()]
    with running(tmp_path, workflows, events=EVENTS) as (rt, _clock, email):
        # Given a contact on the free plan
        rt.track("ana@example.com", "page.viewed", attributes={"plan": "free"})
        rt.run_until_idle()
        # When two plan changes wait for one job
        to_pro = rt.track("ana@example.com", "plan.changed", attributes={"plan": "pro"})
        to_enterprise = rt.track(
            "ana@example.com", "plan.changed", attributes={"plan": "enterprise"}
        )
        rt.run_until_idle()
        # Then each segment was joined once, at its own event
        assert sorted(sent(email)) == ["enterprise_welcome:hi_enterprise", "pro_welcome:hi_pro"]
        causes = {e.workflow: e.cause_event_id for e in enrollments(rt)}
        assert causes == {
            "pro_welcome": to_pro.event_id,
            "enterprise_welcome": to_enterprise.event_id,
        }
        # And the events keep what they replaced
        before = {e.id: e.attributes_before for e in events(rt)}
        assert before[to_pro.event_id] == {"was": {"plan": "free"}}
        assert before[to_enterprise.event_id] == {"was": {"plan": "pro"}}


def test_a_later_pending_change_is_not_seen_early(tmp_path: Path) -> None:
    """A condition on an event and an attribute: the event comes first, the attribute a
    moment later, both pending. It turns true at the attribute's event, not at the first."""
    both = Workflow(
        "both",
        trigger=on_condition(all_of(did_event("demo.booked"), attribute("plan", "pro"))),
        steps=[send_email("welcome", id="x")],
    )
    with running(tmp_path, [both], events=EVENTS) as (rt, _clock, email):
        rt.track("ana@example.com", "page.viewed", attributes={"plan": "free"})
        rt.run_until_idle()
        rt.track("ana@example.com", "demo.booked")
        rt.track("ana@example.com", "page.viewed")
        to_pro = rt.track("ana@example.com", "plan.changed", attributes={"plan": "pro"})
        rt.run_until_idle()
        assert sent(email) == ["both:x"]
        (enrollment,) = enrollments(rt)
        assert enrollment.cause_event_id == to_pro.event_id


def test_a_change_left_for_the_next_pass_is_not_seen_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same, with the attribute's event beyond the job's pass (two events a pass here)."""
    monkeypatch.setattr(pipeline_module, "EVENTS_PER_PASS", 2)
    both = Workflow(
        "both",
        trigger=on_condition(all_of(did_event("demo.booked"), attribute("plan", "pro"))),
        steps=[send_email("welcome", id="x")],
    )
    with running(tmp_path, [both], events=EVENTS) as (rt, _clock, email):
        rt.track("ana@example.com", "page.viewed", attributes={"plan": "free"})
        rt.run_until_idle()
        rt.track("ana@example.com", "demo.booked")
        rt.track("ana@example.com", "page.viewed")
        to_pro = rt.track("ana@example.com", "plan.changed", attributes={"plan": "pro"})
        rt.run_until_idle()
        assert sent(email) == ["both:x"]
        (enrollment,) = enrollments(rt)
        assert enrollment.cause_event_id == to_pro.event_id


def test_a_workflow_write_is_newer_than_a_pending_change(tmp_path: Path) -> None:
    """A step that sets an attribute runs after every pending event was recorded: what it
    wrote is what holds from then on, not undone by the older changes still pending."""
    upgrade = Workflow(
        "upgrade", trigger=on_event("demo.booked"), steps=[set_attribute("plan", "trial")]
    )
    on_trial = Workflow(
        "on_trial",
        trigger=on_condition(attribute("plan", "trial")),
        steps=[send_email("welcome", id="t")],
    )
    workflows = [upgrade, on_trial, enterprise_welcome()]
    with running(tmp_path, workflows, events=EVENTS) as (rt, _clock, email):
        rt.track("ana@example.com", "page.viewed", attributes={"plan": "free"})
        rt.run_until_idle()
        booked = rt.track("ana@example.com", "demo.booked")
        rt.track("ana@example.com", "plan.changed", attributes={"plan": "enterprise"})
        rt.run_until_idle()
        # The trial plan the step wrote at the first event holds from that event on
        assert sent(email) == ["on_trial:t"]
        causes = {e.workflow: e.cause_event_id for e in enrollments(rt)}
        assert causes["on_trial"] == booked.event_id


def test_upsert_and_import_of_an_existing_contact_fire_the_segment() -> None:
    # Given a contact on the free plan
    with simulation(pro_welcome()) as sim:
        sim.contact_import("a@x.com", attributes={"plan": "free"})
        # (an import of a new contact records no event and starts nothing)
        assert [e.type for e in _events_of(sim)] == []
        # When an import (an upsert without an event) moves her to pro
        sim.contact_import("a@x.com", attributes={"plan": "pro", "seats": 3})
        sim.advance(hours=1)
        # Then she joined the segment, and her timeline says what changed
        sim.expect_email("a@x.com", "hi_pro")
        (updated,) = _events_of(sim)
        assert updated.type == "contact.updated" and updated.source == "journeyline"
        assert updated.status == EventStatus.PROCESSED
        assert updated.properties == {"plan": "pro", "seats": 3}
        assert updated.attributes_before == {"was": {"plan": "free"}, "absent": ["seats"]}
        assert "contact.updated attributes changed: plan 'free' -> 'pro', seats (unset) -> 3" in (
            sim.explain("a@x.com")
        )
        # And an update that changes nothing records nothing
        sim.contact_import("a@x.com", attributes={"plan": "pro"})
        assert len(_events_of(sim)) == 1
        # But a time zone changed is a change (waits for a local time follow it), once
        sim.contact_import("a@x.com", timezone="Europe/Paris")
        sim.contact_import("a@x.com", timezone="Europe/Paris")
        (_, zone_changed) = _events_of(sim)
        assert zone_changed.type == "contact.updated" and zone_changed.properties == {}
        assert zone_changed.attributes_before == {"timezone": ["UTC", "Europe/Paris"]}
        assert "attributes changed: time zone 'UTC' -> 'Europe/Paris'" in sim.explain("a@x.com")


def _events_of(sim: Simulation) -> list:  # type: ignore[type-arg]
    return events(sim.runtime)
