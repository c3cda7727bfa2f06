"""A held email pauses its workflow on the batched send path too (``perform_email_batch``,
SendGrid), and on PostgreSQL, where the claim locks the held emails' enrollments after
their contacts (the pipeline's order) in the claim's own transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from connectors.fakes import FakeSendGrid
from engine import (
    Guardrails,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    on_stage_entered,
    quiet_hours,
    send_email,
    send_window,
    wait,
)
from engine.models import Action, Contact, Enrollment
from engine.runtime import Runtime
from engine.scheduler import claim_due
from tests.language_support import TEMPLATES
from tests.support import make_runtime, statements
from tests.test_batch_guardrails import _world
from tests.test_broadcast import KEY, add_contacts
from tests.test_held_pauses import pause_reads
from workflows.rules import RULES

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday: 10:00 in London, 19:00 in Tokyo
TOKYO_9 = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # Tuesday 09:00 in Tokyo
SALE = Workflow(
    "spring_sale",
    trigger=on_stage_entered("consideration"),
    steps=[
        send_email("spring_sale", id="sale"),
        wait(days=1),
        send_email("sale_reminder", id="reminder"),
    ],
)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jl.db"
    return str(request.getfixturevalue("pg_db_url"))


def _wakes(runtime: Runtime) -> dict[str, set[datetime | None]]:
    """Each time zone's enrollments' wake-ups."""
    with Session(runtime.db) as session:
        rows = session.exec(
            select(Contact.timezone, Enrollment.wake_at).join(
                Enrollment, col(Enrollment.contact_id) == col(Contact.id)
            )
        ).all()
    found: dict[str, set[datetime | None]] = {}
    for zone, wake in rows:
        found.setdefault(zone, set()).add(wake)
    return found


def test_a_batch_pauses_the_workflows_of_the_emails_it_holds_with_one_read(
    tmp_path: Path, fake: FakeSendGrid, database_url: str
) -> None:
    rails = Guardrails(quiet_hours=quiet_hours("18:00", "09:00"))
    worlds = _world(tmp_path, fake, [SALE], rails, url=database_url)
    runtime, clock = next(worlds)
    try:
        # Given 3 Londoners (10:00) and 3 Tokyoites (19:00, quiet) broadcast the sale
        add_contacts(runtime, 3, prefix="london", timezone="Europe/London")
        add_contacts(runtime, 3, prefix="tokyo", timezone="Asia/Tokyo")
        runtime.broadcast("spring_sale")
        with statements(runtime.db) as seen:
            runtime.drain()  # one perform_email_batch: London sent, Tokyo held
        assert [len(r.body["personalizations"]) for r in fake.requests] == [3]
        # Then Tokyo's wait counts from 09:00 there; London's from now
        assert _wakes(runtime) == {
            "Europe/London": {START + timedelta(days=1)},
            "Asia/Tokyo": {TOKYO_9 + timedelta(days=1)},
        }
        assert len(pause_reads(seen)) == 1  # one read for the batch's 3 holds, not one each

        # When the days go by, Tokyo's reminder comes a day after its sale, batched again
        clock.set(TOKYO_9)
        runtime.run_until_idle()
        clock.set(START + timedelta(days=1))
        runtime.run_until_idle()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [3, 3, 3]
        assert {r.body["subject"] for r in fake.requests[2:]} == {"Last day of the sale"}
        clock.set(TOKYO_9 + timedelta(days=1))
        runtime.run_until_idle()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [3, 3, 3, 3]
        with Session(runtime.db) as session:
            tokyo = session.exec(
                select(Action.completed_at)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(
                    Contact.timezone == "Asia/Tokyo",
                    col(Action.idempotency_key).endswith(":reminder"),
                )
            ).all()
        assert set(tokyo) == {TOKYO_9 + timedelta(days=1)}
    finally:
        next(worlds, None)


def test_a_wake_up_already_handed_to_a_job_is_moved_and_the_job_does_nothing(
    tmp_path: Path, fake: FakeSendGrid, database_url: str
) -> None:
    """The emails' job was lost, so the scheduler hands out the wake-up of the wait after
    them before the sweeper hands out the emails, which the window then holds: the wake-up
    moves, the job already handed it finds the enrollment not due and does nothing, and a
    later pass hands out the new wake-up."""
    windowed = Workflow(
        "b2b_sale",
        trigger=on_stage_entered("consideration"),
        send_window=send_window("09:00", "17:00"),
        steps=[
            send_email("spring_sale", id="sale"),
            wait(timedelta(minutes=1)),
            send_email("sale_reminder", id="reminder"),
        ],
    )
    written = datetime(2026, 3, 2, 16, 59, 30, tzinfo=UTC)
    morning = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    worlds = _world(tmp_path, fake, [windowed], Guardrails(), url=database_url)
    runtime, clock = next(worlds)
    try:
        # Given two contacts' sale written at 16:59:30, its batch job lost
        clock.set(written)
        add_contacts(runtime, 2, timezone="UTC")
        runtime.broadcast("b2b_sale")
        runtime.broker.pending.clear()  # type: ignore[attr-defined]
        # And at 17:00:30 a pass hands their wake-ups to a job not run yet
        clock.set(written + timedelta(minutes=1))
        due = claim_due(runtime.db, now=clock.now(), lease=runtime.lease, batch_size=100)
        assert len(due.enrollments) == 2 and due.actions == []
        # When the sweeper hands out the emails at 17:05 (their dispatch lease ran out)
        clock.set(datetime(2026, 3, 2, 17, 5, tzinfo=UTC))
        runtime.run_until_idle()
        # Then the window holds them until 09:00, and the wait after them with them
        assert fake.requests == []
        assert _wakes(runtime) == {"UTC": {morning + timedelta(minutes=1)}}
        # And the wake job handed out before finds nothing due
        for enrollment_id in due.enrollments:
            runtime.wake(enrollment_id)
        with Session(runtime.db) as session:
            assert set(session.exec(select(Enrollment.status)).all()) == {"waiting"}
            assert len(session.exec(select(Action)).all()) == 2  # no reminder written
        clock.set(morning)
        runtime.run_until_idle()
        clock.set(morning + timedelta(minutes=1))
        runtime.run_until_idle()
        sent = [(r.body["subject"], len(r.body["personalizations"])) for r in fake.requests]
        assert sent == [("Spring sale: 20% off", 2), ("Last day of the sale", 2)]
    finally:
        next(worlds, None)


# --- the single path on both databases, and its locks on PostgreSQL ----------------------

B2B = Workflow(
    "b2b",
    trigger=on_event("demo.requested"),
    send_window=send_window("09:00", "17:00", weekdays_only=True),
    steps=[send_email("demo_invitation", id="a"), wait(days=1), send_email("guide", id="b")],
)
SATURDAY_10 = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)


@contextmanager
def _single(
    url: str, tmp_path: Path, workflows: tuple[Workflow, ...] = (B2B,)
) -> Iterator[tuple[Runtime, VirtualClock, Any]]:
    """A runtime sending one by one (the recording connector) on ``url``, in virtual time."""
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )
    runtime, clock, email = make_runtime(
        url, broker_url="inline://", clock=VirtualClock(SATURDAY_10), outbox_dir=tmp_path / "out"
    )
    runtime.registry = registry
    try:
        yield runtime, clock, email
    finally:
        runtime.close()


def _process_without_sending(runtime: Runtime) -> None:
    """Run the queued jobs except the sends: the emails stay pending, not yet claimed."""
    broker = runtime.broker
    while broker.pending:  # type: ignore[attr-defined]
        message = broker.pending.popleft()  # type: ignore[attr-defined]
        if not message.actor_name.startswith("perform"):
            broker.actors[message.actor_name](*message.args, **message.kwargs)


def test_the_single_path_pauses_the_wait(tmp_path: Path, database_url: str) -> None:
    with _single(database_url, tmp_path) as (runtime, clock, email):
        runtime.track("ana@example.com", "demo.requested")
        runtime.run_until_idle()
        assert _wakes(runtime) == {"UTC": {MONDAY_9 + timedelta(days=1)}}
        for day in (MONDAY_9, MONDAY_9 + timedelta(days=1)):
            clock.set(day)
            runtime.run_until_idle()
        assert [(m.categories[1], m.sent_at) for m in email.sent] == [
            ("b2b:a", MONDAY_9),
            ("b2b:b", MONDAY_9 + timedelta(days=1)),
        ]


def test_a_claim_waits_for_the_contacts_lock_then_pauses_what_is_still_waiting(
    tmp_path: Path, pg_db_url: str
) -> None:
    """PostgreSQL: a pipeline transaction holds the contact and, after it, writes one of her
    enrollments (ends it), as every pipeline transaction does, contact first. The claim that
    holds her two emails waits for the contact before it reads the enrollments, so the two
    never wait on each other in opposite orders; it then sees them as that transaction left
    them: the ended one is left alone, the waiting one paused."""
    other = Workflow(
        "b2b_other",
        trigger=on_event("demo.requested"),
        send_window=B2B.send_window,
        steps=[send_email("welcome", id="c"), wait(days=2), send_email("guide", id="d")],
    )
    with _single(pg_db_url, tmp_path, (B2B, other)) as (runtime, _clock, _email):
        runtime.track("ana@example.com", "demo.requested")
        _process_without_sending(runtime)
        with Session(runtime.db) as session:
            action_ids = [a for a in session.exec(select(Action.id)).all() if a is not None]
            (contact_id,) = set(session.exec(select(Enrollment.contact_id)).all())
        outcome: list[object] = []
        with runtime.db.connect() as pipeline:
            transaction = pipeline.begin()
            pipeline.execute(
                text("SELECT id FROM contacts WHERE id = :id FOR UPDATE"), {"id": contact_id}
            )
            claim = threading.Thread(
                target=lambda: outcome.append(runtime.perform_many(action_ids))
            )
            claim.start()
            claim.join(timeout=0.5)
            assert claim.is_alive(), "the claim did not wait for the contact's lock"
            pipeline.execute(
                text("UPDATE enrollments SET status = 'exited' WHERE workflow = 'b2b_other'")
            )
            transaction.commit()
        claim.join(timeout=10)
        assert not claim.is_alive()
        assert outcome == [{"pending": 2}]  # both held by the window until Monday 09:00
        with Session(runtime.db) as session:
            found = {e.workflow: e for e in session.exec(select(Enrollment)).all()}
        assert found["b2b"].wake_at == MONDAY_9 + timedelta(days=1)  # paused
        assert found["b2b_other"].wake_at == SATURDAY_10 + timedelta(days=2)  # untouched
        assert "paused" not in found["b2b_other"].context
