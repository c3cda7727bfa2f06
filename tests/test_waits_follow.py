"""A wait counted from a date or a local time follows what it was counted from.

- A ``set_attribute`` step that changes a date moves a ``wait_until_date`` waiting on it, as
  a tracked event or an import changing it does (tests/test_date_waits.py): the step of
  another workflow, or of the same pass, not only an input.
- A change of the contact's time zone moves the waits that are local-time instants
  (``wait_until("10:00")``, ``wait_until_date(..., time="09:00")``), wherever the zone is
  changed: a tracked event's ``timezone``, an import or the contacts API, a batch of events.
  Relative waits (``wait(days=1)``) stay where they are.
- A date attribute holding something that is not a date goes straight on, saying so.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from engine import (
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    send_email,
    set_attribute,
    wait,
    wait_until,
    wait_until_date,
)
from engine.api.events import EventIn
from engine.db import transaction
from engine.models import Contact, Enrollment
from engine.recording import record_event
from engine.recording_batch import record_batch
from engine.registry import Registry
from engine.testing import Simulation
from tests.language_support import TEMPLATES, running, sent
from tests.support import enrollments
from workflows.rules import RULES

EVENTS = ("x.happened", "y.happened")
MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the harness's start: 18:00 in Tokyo


def _registry(*workflows: Workflow) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        events=EVENTS,
    )


def _enrollment(sim: Simulation, email: str, workflow: str) -> Enrollment:
    contact = sim.contact(email)
    with Session(sim.runtime.db) as session:
        return session.exec(
            select(Enrollment).where(
                Enrollment.contact_id == contact.id, Enrollment.workflow == workflow
            )
        ).one()


def _notes(enrollment: Enrollment) -> list[str]:
    return [note["note"] for note in enrollment.context.get("trail", [])]


def _sent_at(sim: Simulation, email: str, step: str) -> datetime:
    (email_sent,) = sim.expect_email(email, step)
    return email_sent.sent_at


# --- 1. a set_attribute step moves a date wait -----------------------------------------

REMINDER = Workflow(
    "rem",
    trigger=on_event("x.happened"),
    steps=[
        wait_until_date("trial_ends_at", days_before=3, time="09:00", id="3d"),
        send_email("trial_reminder", id="reminder"),
    ],
)
EXTENDER = Workflow(
    "extend",
    trigger=on_event("y.happened"),
    steps=[set_attribute("trial_ends_at", "2026-02-20")],
)
OLD_REMINDER = datetime(2026, 1, 17, 9, 0, tzinfo=UTC)
NEW_REMINDER = datetime(2026, 2, 17, 9, 0, tzinfo=UTC)


def test_a_set_attribute_step_of_another_workflow_moves_the_reminder() -> None:
    with Simulation(_registry(REMINDER, EXTENDER)) as sim:
        # Given a contact waiting for 3 days before her trial ends on 20 January
        sim.track("ana@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        assert _enrollment(sim, "ana@example.com", "rem").wake_at == OLD_REMINDER
        # When, two days later, another workflow extends her trial to 20 February
        sim.advance(days=2)
        sim.track("ana@example.com", "y.happened")
        sim.advance(days=45)
        # Then the reminder goes 3 days before the new end, not the old one
        assert _sent_at(sim, "ana@example.com", "reminder") == NEW_REMINDER
        assert "trial_ends_at changed: wakes at 2026-02-17T09:00:00+00:00" in _notes(
            _enrollment(sim, "ana@example.com", "rem")
        )


def test_a_set_attribute_step_in_the_same_pass_moves_the_reminder() -> None:
    extend_at_once = Workflow(
        "extend_at_once",
        trigger=on_event("x.happened"),  # the same event, run after rem has parked
        steps=[set_attribute("trial_ends_at", "2026-02-20")],
    )
    with Simulation(_registry(REMINDER, extend_at_once)) as sim:
        sim.track("ana@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        sim.advance(days=45)
        assert _sent_at(sim, "ana@example.com", "reminder") == NEW_REMINDER


def test_a_set_attribute_step_after_a_wait_moves_the_reminder() -> None:
    # The step runs when its own wait wakes (the scheduler's wake job), not at an event
    extend_later = Workflow(
        "extend_later",
        trigger=on_event("y.happened"),
        steps=[wait(days=1), set_attribute("trial_ends_at", "2026-02-20")],
    )
    with Simulation(_registry(REMINDER, extend_later)) as sim:
        sim.track("ana@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        sim.track("ana@example.com", "y.happened")
        sim.advance(days=45)
        assert _sent_at(sim, "ana@example.com", "reminder") == NEW_REMINDER


def test_the_workflow_setting_the_date_is_not_moved_by_its_own_step() -> None:
    # Given a workflow that extends the trial and then waits on the new date itself
    extend_and_wait = Workflow(
        "extend_and_wait",
        trigger=on_event("y.happened"),
        steps=[
            set_attribute("trial_ends_at", "2026-02-20", id="extend"),
            wait_until_date("trial_ends_at", days_before=3, time="09:00", id="own_wait"),
            send_email("guide", id="own_email"),
        ],
    )
    with Simulation(_registry(REMINDER, extend_and_wait)) as sim:
        sim.track("ana@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        sim.advance(days=2)
        sim.track("ana@example.com", "y.happened")
        # Then the running enrollment parked at its own wait, on the new date, untouched
        own = _enrollment(sim, "ana@example.com", "extend_and_wait")
        assert own.status == "waiting"
        assert own.wake_at == NEW_REMINDER
        assert not any("changed" in note for note in _notes(own))
        # And the other workflow's wait moved
        assert _enrollment(sim, "ana@example.com", "rem").wake_at == NEW_REMINDER
        sim.advance(days=45)
        assert _sent_at(sim, "ana@example.com", "reminder") == NEW_REMINDER
        assert _sent_at(sim, "ana@example.com", "own_email") == NEW_REMINDER
        sim.expect_enrollment("ana@example.com", "extend_and_wait", "completed")


def test_a_set_attribute_step_clearing_the_date_wakes_the_wait_now() -> None:
    clear = Workflow(
        "clear",
        trigger=on_event("y.happened"),
        steps=[set_attribute("trial_ends_at", None)],
    )
    with Simulation(_registry(REMINDER, clear)) as sim:
        sim.track("ana@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        sim.advance(days=2)
        sim.track("ana@example.com", "y.happened")
        # As a wait whose date is gone goes straight on
        assert _sent_at(sim, "ana@example.com", "reminder") == MONDAY_9 + timedelta(days=2)


# --- 2. a change of time zone moves local-time waits -----------------------------------

AT_TEN = Workflow(
    "at_ten",
    trigger=on_event("x.happened"),
    steps=[wait_until("10:00", id="ten"), send_email("welcome", id="hello")],
)
IN_TOKYO = datetime(2026, 1, 6, 1, 0, tzinfo=UTC)  # Tuesday 10:00 in Tokyo
IN_NEW_YORK = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York


def _waiting_in_tokyo(sim: Simulation) -> None:
    # Monday 09:00 UTC is 18:00 in Tokyo: she waits for Tuesday 10:00 there
    sim.track("ken@example.com", "x.happened", timezone="Asia/Tokyo")
    assert _enrollment(sim, "ken@example.com", "at_ten").wake_at == IN_TOKYO
    sim.advance(hours=3)  # 12:00 UTC, 07:00 in New York


def test_a_tracked_event_changing_the_zone_moves_a_wait_until() -> None:
    with Simulation(_registry(AT_TEN)) as sim:
        _waiting_in_tokyo(sim)
        # When she is next seen in New York, before the wait ends
        sim.track("ken@example.com", "y.happened", timezone="America/New_York")
        sim.advance(days=2)
        # Then the email goes at 10:00 her new time, not 20:00 (10:00 in Tokyo)
        (hello,) = sim.expect_email("ken@example.com", "hello", at_local="10:00")
        assert hello.sent_at == IN_NEW_YORK
        assert (
            "time zone changed to America/New_York: wakes at 2026-01-05T15:00:00+00:00"
            in _notes(_enrollment(sim, "ken@example.com", "at_ten"))
        )


def test_a_zone_change_can_bring_the_wake_up_forward() -> None:
    with Simulation(_registry(AT_TEN)) as sim:
        # Given a New Yorker at 04:00 her time, waiting for 10:00 (15:00 UTC)
        sim.track("ned@example.com", "x.happened", timezone="America/New_York")
        assert _enrollment(sim, "ned@example.com", "at_ten").wake_at == IN_NEW_YORK
        # When she is seen in London at 09:30 there
        sim.advance(minutes=30)
        sim.track("ned@example.com", "y.happened", timezone="Europe/London")
        sim.advance(days=1)
        # Then the email goes at 10:00 in London, five hours before the old wake-up
        (hello,) = sim.expect_email("ned@example.com", "hello", at_local="10:00")
        assert hello.sent_at == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def test_an_import_changing_only_the_zone_moves_a_wait_until() -> None:
    with Simulation(_registry(AT_TEN)) as sim:
        _waiting_in_tokyo(sim)
        # When an import (or PUT /v1/contacts) changes her time zone and nothing else
        sim.contact_import("ken@example.com", timezone="America/New_York")
        sim.advance(days=2)
        (hello,) = sim.expect_email("ken@example.com", "hello", at_local="10:00")
        assert hello.sent_at == IN_NEW_YORK
        # And the timeline says what the import changed
        assert "time zone 'Asia/Tokyo' -> 'America/New_York'" in sim.explain("ken@example.com")


def test_a_batch_of_events_changing_the_zone_moves_a_wait_until(tmp_path: Path) -> None:
    with running(tmp_path, [AT_TEN], events=EVENTS, start=MONDAY_9) as (rt, clock, email):
        rt.track("ken@example.com", "x.happened", timezone="Asia/Tokyo")
        rt.run_until_idle()
        clock.set(MONDAY_9 + timedelta(hours=3))
        # When a batch POST /v1/events brings her new zone
        batch = [EventIn(email="ken@example.com", type="y.happened", timezone="America/New_York")]
        with transaction(rt.db) as session:
            (recorded,) = record_batch(session, rt.registry, batch, now=clock.now(), source="api")
        rt.enqueue_contacts([recorded.contact_id])
        rt.run_until_idle()
        (waiting,) = enrollments(rt)
        assert waiting.wake_at == IN_NEW_YORK
        clock.set(IN_NEW_YORK)
        rt.run_until_idle()
        assert sent(email) == ["at_ten:hello"]


def test_a_date_wait_at_a_local_time_follows_the_zone() -> None:
    with Simulation(_registry(REMINDER)) as sim:
        # Given a Tokyo contact whose trial ends 20 January: 17 January 09:00 in Tokyo
        sim.track(
            "ken@example.com",
            "x.happened",
            timezone="Asia/Tokyo",
            attributes={"trial_ends_at": "2026-01-20"},
        )
        assert _enrollment(sim, "ken@example.com", "rem").wake_at == datetime(
            2026, 1, 17, 0, 0, tzinfo=UTC
        )
        # When she moves to New York two days later
        sim.advance(days=2)
        sim.track("ken@example.com", "y.happened", timezone="America/New_York")
        sim.advance(days=30)
        # Then the reminder goes at 09:00 on 17 January in New York
        (reminder,) = sim.expect_email("ken@example.com", "reminder", at_local="09:00")
        assert reminder.sent_at == datetime(2026, 1, 17, 14, 0, tzinfo=UTC)


def test_a_relative_wait_does_not_follow_the_zone() -> None:
    a_day = Workflow(
        "a_day",
        trigger=on_event("x.happened"),
        steps=[wait(days=1, id="day"), send_email("welcome", id="hello")],
    )
    with Simulation(_registry(a_day)) as sim:
        sim.track("ken@example.com", "x.happened", timezone="Asia/Tokyo")
        sim.advance(hours=3)
        sim.track("ken@example.com", "y.happened", timezone="America/New_York")
        waiting = _enrollment(sim, "ken@example.com", "a_day")
        assert waiting.wake_at == MONDAY_9 + timedelta(days=1)
        assert not any("time zone" in note for note in _notes(waiting))


def test_a_wake_that_comes_before_the_zone_change_is_applied_follows_it(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [AT_TEN], events=EVENTS, start=MONDAY_9) as (rt, clock, email):
        rt.track("ken@example.com", "x.happened", timezone="Asia/Tokyo")
        rt.run_until_idle()
        (waiting,) = enrollments(rt)
        # Given her new zone is recorded (merged into the contact) but not yet applied
        clock.set(MONDAY_9 + timedelta(hours=3))
        rt.track("ken@example.com", "y.happened", timezone="America/New_York")
        # When the wake-up computed in Tokyo comes first (a busy queue)
        clock.set(IN_TOKYO)
        rt.wake(waiting.id)  # type: ignore[arg-type]
        # Then she is not woken at 20:00 New York time, but at the next 10:00 there
        (waiting,) = enrollments(rt)
        assert waiting.status == "waiting"
        assert waiting.wake_at == IN_NEW_YORK + timedelta(days=1)
        rt.run_until_idle()
        assert sent(email) == []
        clock.set(IN_NEW_YORK + timedelta(days=1))
        rt.run_until_idle()
        assert sent(email) == ["at_ten:hello"]


# --- 4. a date attribute holding something else ---------------------------------------


def _store_attributes(sim: Simulation, email: str, attributes: dict[str, Any]) -> None:
    """Attributes written without the validation the track and contacts APIs apply (data
    from before it existed)."""
    with Session(sim.runtime.db) as session:
        contact = session.exec(select(Contact).where(Contact.email == email)).one()
        contact.attributes = {**contact.attributes, **attributes}
        session.add(contact)
        session.commit()


def test_a_date_that_is_not_one_goes_on_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with Simulation(_registry(REMINDER)) as sim:
        # Given a contact whose trial end was stored as '20/01/2026'
        contact = sim.contact_import("bo@example.com")
        _store_attributes(sim, "bo@example.com", {"trial_ends_at": "20/01/2026"})
        # When she enters the workflow
        with caplog.at_level(logging.WARNING, logger="engine.executor"):
            sim.track("bo@example.com", "x.happened")
        # Then the reminder goes now (there is no date to wait for) and the trail says why
        assert _sent_at(sim, "bo@example.com", "reminder") == MONDAY_9
        assert "trial_ends_at holds '20/01/2026', not a date: went on" in _notes(
            _enrollment(sim, "bo@example.com", "rem")
        )
        # And a warning names the contact, the workflow, the attribute and the value
        (record,) = [r for r in caplog.records if "not a date" in r.getMessage()]
        message = record.getMessage()
        assert record.levelno == logging.WARNING
        assert f"contact {contact.id}" in message
        for part in ("rem", "trial_ends_at", "'20/01/2026'"):
            assert part in message


def test_a_missing_date_goes_on_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with Simulation(_registry(REMINDER)) as sim:
        with caplog.at_level(logging.WARNING, logger="engine.executor"):
            sim.track("bo@example.com", "x.happened")
        assert _sent_at(sim, "bo@example.com", "reminder") == MONDAY_9
        assert not [r for r in caplog.records if "not a date" in r.getMessage()]


def test_a_date_changed_to_one_that_is_not_wakes_the_wait_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(tmp_path, [REMINDER], events=EVENTS, start=MONDAY_9) as (rt, clock, email):
        rt.track("bo@example.com", "x.happened", attributes={"trial_ends_at": "2026-01-20"})
        rt.run_until_idle()
        # When a provider's webhook (not refused) sets it to text that is not a date
        with transaction(rt.db) as session:
            recorded = record_event(
                session,
                rt.registry,
                now=clock.now(),
                email="bo@example.com",
                event_type="y.happened",
                source="webhook",
                attributes={"trial_ends_at": "soon"},
            )
        with caplog.at_level(logging.WARNING, logger="engine.executor"):
            rt.enqueue_contacts([recorded.contact_id])
            rt.run_until_idle()
        assert sent(email) == ["rem:reminder"]
        (enrollment,) = enrollments(rt)
        assert any("trial_ends_at holds 'soon', not a date" in n for n in _notes(enrollment))
        assert [r for r in caplog.records if "'soon'" in r.getMessage()]
