"""An event stream wired to Journeyline (a Segment/RudderStack-style relay, a backfill):
event times, attributes merged by concurrent requests, late events and the stage machine.

Tests marked ``xfail(strict=True)`` show defects outside this helper's files, reported for
the lead: each fails today and will pass (failing the strict mark) once fixed."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from engine import Workflow, on_event, send_email, wait_for_event
from engine.contacts import validate_timezone
from engine.db import transaction
from engine.errors import ValidationError, WorkflowDefinitionError
from engine.models import Contact, Event, EventStatus
from engine.recording import record_event
from engine.recording_batch import record_batch
from engine.registry import build_registry, registry_from_module
from engine.testing import Simulation
from tests.language_support import TEMPLATES
from tests.support import make_runtime
from workflows.rules import RULES


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=UTC),  # a placeholder, or a typo
        datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2099, 1, 1, tzinfo=UTC),  # would sit in every within= window for decades
    ],
)
def test_runtime_track_refuses_an_implausible_event_time_as_the_track_api_does(
    when: datetime,
) -> None:
    with Simulation("workflows") as sim:
        # When a program tracks an event said to have happened at that time
        with pytest.raises(ValidationError) as refused:
            sim.track("ana@example.com", "page.viewed", occurred_at=when)
        # Then it is refused, naming the field, and nothing is recorded
        assert refused.value.field == "occurred_at"
        assert "occurred_at" in str(refused.value)
        with Session(sim.runtime.db) as session:
            assert session.exec(select(Event)).all() == []


def test_runtime_track_keeps_a_late_or_slightly_early_event_time() -> None:
    with Simulation("workflows") as sim:
        now = sim.now()
        # A backfill of last month's order, and a client clock an hour fast
        sim.track("ana@example.com", "page.viewed", occurred_at=now - timedelta(days=30))
        sim.track("ana@example.com", "page.viewed", occurred_at=now + timedelta(hours=1))
        with Session(sim.runtime.db) as session:
            times = [
                e.occurred_at
                for e in session.exec(select(Event).where(Event.type == "page.viewed"))
            ]
        assert times == [now - timedelta(days=30), now + timedelta(hours=1)]


def test_attributes_merged_by_two_concurrent_events_are_both_kept(pg_db_url: str) -> None:
    runtime, clock, _email = make_runtime(pg_db_url)
    with transaction(runtime.db) as session:
        record_event(
            session, runtime.registry, now=clock.now(), email="ana@example.com", event_type="a.b"
        )

    def record(attributes: dict[str, int]) -> None:
        with transaction(runtime.db) as session:
            record_event(
                session,
                runtime.registry,
                now=clock.now(),
                email="ana@example.com",
                event_type="page.viewed",
                attributes=attributes,
            )

    try:
        # Given one request has merged {"plan_seats": 5} and not committed yet
        with transaction(runtime.db) as first:
            record_event(
                first,
                runtime.registry,
                now=clock.now(),
                email="ana@example.com",
                event_type="page.viewed",
                attributes={"plan_seats": 5},
            )
            first.flush()
            # When a second request merges {"company": "Acme"} meanwhile (with the row lock
            # it waits for the first; without, it commits first)
            other = threading.Thread(target=record, args=({"company": "Acme"},))
            other.start()
            other.join(timeout=2)
        other.join(timeout=30)
        assert not other.is_alive()
        # Then the contact holds both
        with Session(runtime.db) as session:
            attributes = session.exec(select(Contact)).one().attributes
        assert attributes == {"plan_seats": 5, "company": "Acme"}
    finally:
        runtime.db.dispose()


def test_a_backfilled_order_from_before_the_churn_does_not_reactivate() -> None:
    with Simulation("workflows") as sim:
        # Given a customer who bought, then cancelled ten days later
        sim.track("cy@example.com", "order.completed", idempotency_key="o1")
        sim.advance(days=10)
        sim.track("cy@example.com", "subscription.cancelled")
        sim.advance(days=1)
        # When a backfill of last month's orders brings one from before the cancellation
        before_churn = sim.now() - timedelta(days=5)
        sim.track(
            "cy@example.com", "order.completed", idempotency_key="o0", occurred_at=before_churn
        )
        # Then she is still churned: an old order is no comeback
        sim.expect_stage("cy@example.com", "churned")
        # and the order is kept, as history
        with Session(sim.runtime.db) as session:
            late = session.exec(select(Event).where(Event.idempotency_key == "api:o0")).one()
        assert late.status == EventStatus.LATE


def test_an_event_a_day_late_is_still_applied() -> None:
    with Simulation("workflows") as sim:
        sim.track("dee@example.com", "page.viewed")
        # When a trial started yesterday arrives today (a device offline for a day)
        sim.track("dee@example.com", "trial.started", occurred_at=sim.now() - timedelta(days=1))
        # Then it moves her as if it had come at once
        sim.expect_stage("dee@example.com", "decision")


def test_late_events_apply_live_when_the_playbook_says_so() -> None:
    import workflows

    registry = registry_from_module(workflows)
    registry.late_after = None  # LATE_EVENTS_AFTER = None in the workflows module
    with Simulation(registry) as sim:
        sim.track("eve@example.com", "page.viewed")
        sim.track("eve@example.com", "trial.started", occurred_at=sim.now() - timedelta(days=30))
        sim.expect_stage("eve@example.com", "decision")


@pytest.mark.parametrize("value", [timedelta(0), timedelta(hours=-1), 72, "72h"])
def test_a_late_events_setting_that_is_not_a_positive_timedelta_is_refused(value: object) -> None:
    with pytest.raises(WorkflowDefinitionError, match="LATE_EVENTS_AFTER is"):
        build_registry(templates_dir=Path("workflows/templates"), late_after=value)


@dataclass(frozen=True)
class _In:
    email: str
    type: str
    properties: dict[str, Any]
    idempotency_key: str | None
    attributes: dict[str, Any] | None = None
    timezone: str | None = None
    occurred_at: datetime | None = None


def test_attributes_merged_by_two_concurrent_batches_are_both_kept(pg_db_url: str) -> None:
    runtime, clock, _email = make_runtime(pg_db_url)
    ana = "ana@example.com"
    with transaction(runtime.db) as session:
        record_batch(
            session, runtime.registry, [_In(ana, "a.b", {}, "k0")], now=clock.now(), source="api"
        )

    def record(key: str, attributes: dict[str, Any]) -> None:
        with transaction(runtime.db) as session:
            item = _In(ana, "page.viewed", {}, key, attributes=attributes)
            record_batch(session, runtime.registry, [item], now=clock.now(), source="api")

    try:
        # Given one batch (the track API's path) has merged {"plan_seats": 5}, uncommitted
        with transaction(runtime.db) as first:
            item = _In(ana, "page.viewed", {}, "k1", attributes={"plan_seats": 5})
            record_batch(first, runtime.registry, [item], now=clock.now(), source="api")
            first.flush()
            # When a second batch merges {"company": "Acme"} meanwhile
            other = threading.Thread(target=record, args=("k2", {"company": "Acme"}))
            other.start()
            other.join(timeout=2)
        other.join(timeout=30)
        assert not other.is_alive()
        # Then the contact holds both
        with Session(runtime.db) as session:
            attributes = session.exec(select(Contact)).one().attributes
        assert attributes == {"plan_seats": 5, "company": "Acme"}
    finally:
        runtime.db.dispose()


def test_a_batch_bringing_attributes_she_already_has_takes_no_row_lock(
    pg_db_url: str,
) -> None:
    # A batch takes the contact's row lock only when it changes her. (Its event row's
    # foreign key takes a KEY SHARE lock on her row, which waits for a FOR UPDATE holder,
    # as the pipeline is, but not for a NO KEY UPDATE one: that is the holder here, so the
    # batch waits only if it asks for her row lock itself.)
    runtime, clock, _email = make_runtime(pg_db_url)
    ana = "ana@example.com"
    with transaction(runtime.db) as session:
        item = _In(ana, "a.b", {}, "k0", attributes={"plan": "team"})
        record_batch(session, runtime.registry, [item], now=clock.now(), source="api")
    try:
        with transaction(runtime.db) as holder:  # the pipeline holding her row
            holder.exec(select(Contact).with_for_update(key_share=True)).one()
            done = threading.Event()

            def record() -> None:
                with transaction(runtime.db) as session:
                    same = _In(ana, "page.viewed", {}, "k1", attributes={"plan": "team"})
                    record_batch(session, runtime.registry, [same], now=clock.now(), source="api")
                done.set()

            other = threading.Thread(target=record)
            other.start()
            assert done.wait(30), "a batch changing nothing asked for the contact's row lock"
        other.join(timeout=30)
    finally:
        runtime.db.dispose()


def test_an_event_that_occurred_after_the_timeout_takes_the_timeout_path() -> None:
    flow = Workflow(
        "bought?",
        trigger=on_event("demo.requested"),
        steps=[
            wait_for_event(
                "order.completed",
                timeout=timedelta(days=2),
                on_event=[send_email("thank_you", id="thanks")],
                on_timeout=[send_email("trial_nudge", id="nudge")],
            ),
        ],
    )
    registry = build_registry(workflows=[flow], templates_dir=TEMPLATES, rules=RULES)
    with Simulation(registry) as sim:
        sim.track("hal@example.com", "demo.requested")
        sim.track("ivy@example.com", "demo.requested")
        sim.advance(days=1, hours=23)
        # When an order stamped after the two days arrives before the timeout is taken (a
        # client clock ahead), and another stamped within them
        late = sim.now() + timedelta(hours=2)
        sim.track("hal@example.com", "order.completed", occurred_at=late)
        sim.track("ivy@example.com", "order.completed", occurred_at=sim.now())
        sim.advance(days=1)
        # Then the first takes the timeout's path, as an event at the timeout itself does
        sim.expect_email("hal@example.com", "nudge")
        sim.expect_no_email("hal@example.com", "thanks")
        sim.expect_email("ivy@example.com", "thanks")
        sim.expect_no_email("ivy@example.com", "nudge")


@pytest.mark.parametrize(
    ("score", "advocate", "scored_down"),
    [
        (10, True, False),
        ("10", True, False),
        ("3", False, True),
        (3, False, True),
        (True, False, False),
    ],
)
def test_an_nps_answer_is_read_alike_by_the_rules_and_the_nps_workflow(
    score: object, advocate: bool, scored_down: bool
) -> None:
    with Simulation("workflows") as sim:
        sim.contact_import("nia@example.com", stage="loyalty")
        sim.track("nia@example.com", "nps.answered", {"score": score})
        contact = sim.contact("nia@example.com")
        assert (contact.stage == "advocacy") is advocate
        assert (contact.score == -10) is scored_down


@pytest.mark.parametrize(
    "zone", ["localtime", "posixrules", "Factory", "right/UTC", "posix/Europe/Madrid"]
)
def test_zone_files_that_name_no_place_are_refused(zone: str) -> None:
    with pytest.raises(ValidationError, match="not an IANA time zone name"):
        validate_timezone(zone)
    assert validate_timezone("Europe/Madrid") == "Europe/Madrid"


def test_the_timeline_notes_an_event_dated_ahead_of_its_arrival() -> None:
    with Simulation("workflows") as sim:
        ahead = sim.now() + timedelta(hours=3)
        sim.track("oz@example.com", "page.viewed", occurred_at=ahead)
        assert f"occurred {ahead:%Y-%m-%d %H:%M} UTC" in sim.explain("oz@example.com")


def test_a_late_event_about_a_new_address_starts_nothing_for_her() -> None:
    with Simulation("workflows") as sim:
        # When a backfill brings an order from five days ago by an address never seen
        five_days_ago = sim.now() - timedelta(days=5)
        sim.track("old@example.com", "order.completed", occurred_at=five_days_ago)
        sim.advance(days=3)
        # Then she is placed in the first stage, as an import places her, and nothing starts
        sim.expect_stage("old@example.com", "awareness")
        sim.expect_no_email("old@example.com")
        with Session(sim.runtime.db) as session:
            statuses = set(session.exec(select(Event.status)).all())
        assert statuses == {EventStatus.LATE}


def test_a_late_event_about_a_new_address_starts_nothing_on_the_batch_path(
    sqlite_url: str,
) -> None:
    runtime, clock, email = make_runtime(sqlite_url, broker_url="inline://")
    try:
        with transaction(runtime.db) as session:
            item = _In(
                "old@example.com",
                "order.completed",
                {},
                "o1",
                occurred_at=clock.now() - timedelta(days=5),
            )
            recorded = record_batch(
                session, runtime.registry, [item], now=clock.now(), source="api"
            )
        runtime.enqueue_contacts(r.contact_id for r in recorded)
        runtime.run_until_idle()
        with Session(runtime.db) as session:
            contact = session.exec(select(Contact)).one()
            statuses = set(session.exec(select(Event.status)).all())
        assert contact.stage == "awareness" and statuses == {EventStatus.LATE}
        assert email.sent == []
    finally:
        runtime.close()
