"""Conditions on a contact's events (``did_event``, ``opened``, ``clicked``) as triggers,
goals and exits turn true at the event that makes them true.

The event being processed is stored before it is applied, so "before this event" must not
count it (nor the contact's later events already stored and waiting in the same job)."""

from __future__ import annotations

from pathlib import Path

from engine import (
    Workflow,
    clicked,
    did_event,
    on_condition,
    on_event,
    opened,
    send_email,
    wait,
)
from tests.language_support import running, sent
from tests.support import actions, enrollments, events

EVENTS = ("demo.booked", "demo.cancelled")


def statuses(rt) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {e.workflow: e.status for e in enrollments(rt)}


def test_a_did_event_trigger_starts_at_that_event(tmp_path: Path) -> None:
    booked = Workflow(
        "booked",
        trigger=on_condition(did_event("demo.booked")),
        steps=[send_email("demo_invitation", id="x")],
    )
    with running(tmp_path, [booked], events=EVENTS) as (rt, clock, email):
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        assert enrollments(rt) == []
        clock.advance(hours=1)
        rt.track("ana@example.com", "demo.booked")
        rt.run_until_idle()
        assert sent(email) == ["booked:x"]


def test_a_did_event_trigger_fires_once_when_the_event_waits_behind_another(
    tmp_path: Path,
) -> None:
    """Both events are pending when one job applies them: the first does not see the
    second, so the condition turns true at the second, once."""
    booked = Workflow(
        "booked",
        trigger=on_condition(did_event("demo.booked")),
        steps=[send_email("demo_invitation", id="x")],
    )
    with running(tmp_path, [booked], events=EVENTS) as (rt, _clock, email):
        rt.track("ana@example.com", "page.viewed")
        rt.track("ana@example.com", "demo.booked")
        rt.track("ana@example.com", "demo.cancelled")
        rt.run_until_idle()
        assert sent(email) == ["booked:x"]
        (enrollment,) = enrollments(rt)
        by_type = {e.type: e.id for e in events(rt)}
        assert enrollment.cause_event_id == by_type["demo.booked"]


def test_a_did_event_goal_converts_at_that_event(tmp_path: Path) -> None:
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        goals=[on_condition(did_event("demo.booked"))],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide", id="y")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, clock, email):
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.track("ana@example.com", "demo.booked")
        rt.run_until_idle()
        assert statuses(rt) == {"drip": "converted"}
        (enrollment,) = enrollments(rt)
        assert enrollment.context["end_reason"] == "goal reached: did demo.booked since entering"
        clock.advance(days=2)
        rt.run_until_idle()
        assert sent(email) == ["drip:x"]


def test_a_did_event_goal_counts_only_since_entering(tmp_path: Path) -> None:
    """Booked before the workflow started: not a conversion of this enrollment."""
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        goals=[on_condition(did_event("demo.booked"))],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide", id="y")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, clock, _email):
        rt.track("ana@example.com", "demo.booked")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        assert statuses(rt) == {"drip": "waiting"}


def test_opened_and_clicked_goals_convert_on_this_enrollments_email(tmp_path: Path) -> None:
    """``opened``/``clicked`` name the enrollment's own emails: as a goal they are evaluated
    for the contact's live enrollment in the workflow (they never could without it)."""
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        goals=[on_condition(opened("x"))],
        exit_when=[on_condition(clicked("x"))],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide", id="y")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, clock, _email):
        rt.track("ana@example.com", "demo.requested")
        rt.track("bob@example.com", "demo.requested")
        rt.run_until_idle()
        by_contact = {a.contact_id: a.id for a in actions(rt)}
        assert len(by_contact) == 2
        ana, bob = sorted(by_contact)
        clock.advance(hours=1)
        rt.track("ana@example.com", "email.opened", {"action_id": by_contact[ana]})
        rt.track("bob@example.com", "email.clicked", {"action_id": by_contact[bob]})
        rt.run_until_idle()
        ended = {e.contact_id: (e.status, e.context["end_reason"]) for e in enrollments(rt)}
        assert ended == {
            ana: ("converted", "goal reached: opened x"),
            bob: ("converted", "goal reached: opened x"),  # a click is an open too
        }


def test_since_entering_counts_events_that_came_in_after_the_cause_while_a_backlog_held_it(
    tmp_path: Path,
) -> None:
    """The booking came in a second after the request, both waited in a backlog: the
    enrollment started later than the booking was received, and the booking still counts
    (it came in after the event that started the enrollment)."""
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        goals=[on_condition(did_event("demo.booked"))],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide", id="y")],
    )
    with running(tmp_path, [drip], events=EVENTS) as (rt, clock, email):
        rt.track("ana@example.com", "demo.requested")
        clock.advance(seconds=1)
        rt.track("ana@example.com", "demo.booked")
        clock.advance(seconds=1)
        rt.run_until_idle()
        assert statuses(rt) == {"drip": "converted"}
        clock.advance(days=2)
        rt.run_until_idle()
        assert "drip:y" not in sent(email)
