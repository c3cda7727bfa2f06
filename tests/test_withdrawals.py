"""A workflow that reaches its goal or an exit withdraws the marketing emails it has waiting
(held by quiet hours, a cap or a send window, or waiting to retry), and only those."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from connectors.fakes import FakeSendGrid
from engine import (
    EventRule,
    Guardrails,
    Workflow,
    did_event,
    exit_workflow,
    on_condition,
    on_event,
    on_stage_entered,
    quiet_hours,
    send_email,
    wait,
    wait_until,
)
from engine.db import make_engine
from engine.models import Action, ActionStatus, Contact, Enrollment
from engine.timeline import contact_timeline
from engine.withdrawals import withdraw_waiting_emails
from tests.language_support import running, sent
from tests.support import actions, new_contact
from tests.test_batch_guardrails import _world, add
from tests.test_broadcast import KEY

NIGHT = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
# 10:00 UTC on 2 March is 05:00 in New York: inside quiet hours there; 08:00 is 13:00 UTC.
MORNING_IN_NEW_YORK = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
EVENTS = ("demo.booked", "demo.cancelled")


def invitation(**options: object) -> Workflow:
    return Workflow(
        "invite",
        trigger=on_event("demo.requested"),
        steps=[send_email("demo_invitation", id="x")],
        **options,  # type: ignore[arg-type]
    )


def _held_at_night(rt, email) -> None:  # type: ignore[no-untyped-def]
    rt.track("ny@example.com", "demo.requested", timezone="America/New_York")
    rt.track("ldn@example.com", "demo.requested", timezone="Europe/London")
    rt.run_until_idle()
    assert [m.to for m in email.sent] == ["ldn@example.com"]
    (held,) = [a for a in actions(rt) if a.status == ActionStatus.PENDING]
    assert held.reason["held"], "the New York invitation is held by quiet hours"


@pytest.mark.parametrize(
    ("options", "ended", "rule"),
    [
        ({"goals": [on_event("demo.booked")]}, "converted", "goal reached: demo.booked"),
        ({"exit_when": [on_event("demo.cancelled")]}, "exited", "exit on demo.cancelled"),
    ],
)
def test_a_held_email_is_withdrawn_when_its_workflow_converts_or_exits(
    tmp_path: Path, options: dict[str, object], ended: str, rule: str
) -> None:
    event = "demo.booked" if ended == "converted" else "demo.cancelled"
    with running(tmp_path, [invitation(**options)], guardrails=NIGHT, events=EVENTS) as (
        rt,
        clock,
        email,
    ):
        _held_at_night(rt, email)
        clock.advance(hours=1)  # 06:00 in New York: she books (or cancels) before 08:00
        rt.track("ny@example.com", event)
        rt.run_until_idle()
        clock.set(MORNING_IN_NEW_YORK)
        rt.run_until_idle()
        assert [m.to for m in email.sent] == ["ldn@example.com"]
        (withdrawn,) = [a for a in actions(rt) if a.status == ActionStatus.SKIPPED]
        skipped = withdrawn.reason["skipped"]
        assert skipped.startswith(f"withdrawn before it went out: {rule} (event ")
        assert withdrawn.reason["held"], "what held it is kept"
        assert withdrawn.completed_at == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
        with Session(rt.db) as session:
            timeline = contact_timeline(session, "ny@example.com")
        assert timeline is not None
        lines = [e.summary for e in timeline.entries]
        # (it also says what held it until then)
        withdrawn_line = lines.index(
            f"email invite/x: skipped ({skipped}; held until 2026-03-02 13:00 UTC: "
            "quiet hours 21:00-08:00 (America/New_York))"
        )
        # The cause before its effect at the same instant: the goal's event, then the skip
        (cause,) = [i for i, line in enumerate(lines) if line.startswith(event)]
        assert cause < withdrawn_line, lines


def test_a_live_workflow_converting_withdraws_its_held_email_and_writes_no_more(
    tmp_path: Path,
) -> None:
    drip = Workflow(
        "invite",
        trigger=on_event("demo.requested"),
        goals=[on_event("demo.booked")],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide")],
    )
    with running(tmp_path, [drip], guardrails=NIGHT, events=EVENTS) as (rt, clock, email):
        _held_at_night(rt, email)
        clock.advance(hours=1)
        rt.track("ny@example.com", "demo.booked")
        rt.run_until_idle()
        clock.advance(days=2)
        rt.run_until_idle()
        assert sent(email, "ny@example.com") == []
        mine = [a for a in actions(rt) if a.reason.get("step") == "x"]
        assert {a.status for a in mine} == {ActionStatus.SENT, ActionStatus.SKIPPED}
        assert sorted(e.status for e in rt_enrollments(rt)) == ["completed", "converted"]


def test_a_condition_goal_withdraws_too(tmp_path: Path) -> None:
    workflow = invitation(goals=[on_condition(did_event("demo.booked"))])
    with running(tmp_path, [workflow], guardrails=NIGHT, events=EVENTS) as (rt, clock, email):
        _held_at_night(rt, email)
        clock.advance(hours=1)
        rt.track("ny@example.com", "demo.booked")
        rt.run_until_idle()
        clock.set(MORNING_IN_NEW_YORK)
        rt.run_until_idle()
        assert [m.to for m in email.sent] == ["ldn@example.com"]
        (withdrawn,) = [a for a in actions(rt) if a.status == ActionStatus.SKIPPED]
        assert withdrawn.reason["skipped"].startswith("withdrawn before it went out: goal reached")


def test_leaving_the_stage_of_a_stage_bound_workflow_withdraws_its_held_email(
    tmp_path: Path,
) -> None:
    """A workflow started by entering a stage exits when the contact leaves it (the
    default): the trial invitation held overnight does not go to the new customer."""
    trial = Workflow(
        "trial", trigger=on_stage_entered("decision"), steps=[send_email("demo_invitation")]
    )
    with running(tmp_path, [trial], guardrails=NIGHT) as (rt, clock, email):
        rt.track("ny@example.com", "demo.requested", timezone="America/New_York")
        rt.run_until_idle()
        assert email.sent == []  # 05:00 in New York: held
        clock.advance(hours=1)
        rt.track("ny@example.com", "order.completed")
        rt.run_until_idle()
        clock.set(MORNING_IN_NEW_YORK)
        rt.run_until_idle()
        assert email.sent == []
        (withdrawn,) = actions(rt)
        assert withdrawn.reason["skipped"] == "withdrawn before it went out: left stage decision"


def test_a_held_email_goes_when_the_workflow_has_neither_goal_nor_exit_met(
    tmp_path: Path,
) -> None:
    """The control: the same night and morning with no goal reached send it at 08:00."""
    workflow = invitation(goals=[on_event("demo.booked")])
    with running(tmp_path, [workflow], guardrails=NIGHT, events=EVENTS) as (rt, clock, email):
        _held_at_night(rt, email)
        clock.advance(hours=1)
        rt.track("ny@example.com", "demo.cancelled")  # not the goal
        rt.run_until_idle()
        clock.set(MORNING_IN_NEW_YORK)
        rt.run_until_idle()
        assert sorted(m.to for m in email.sent) == ["ldn@example.com", "ny@example.com"]


def test_an_email_written_in_the_pass_that_reaches_the_goal_still_goes(tmp_path: Path) -> None:
    """Not held, so not withdrawn: a new contact whose first events start a workflow and
    meet its goal at once gets what the workflow wrote on the way."""
    workflow = Workflow(
        "invite",
        trigger=on_event("demo.requested"),
        goals=[on_event("demo.booked")],
        steps=[send_email("demo_invitation", id="x"), wait(days=1), send_email("guide")],
    )
    with running(tmp_path, [workflow], events=EVENTS) as (rt, _clock, email):
        rt.track("ana@example.com", "demo.requested")
        rt.track("ana@example.com", "demo.booked")
        rt.run_until_idle()
        assert sent(email) == ["invite:x"]
        (enrollment,) = rt_enrollments(rt)
        assert enrollment.status == "converted"


def rt_enrollments(rt) -> list[Enrollment]:  # type: ignore[no-untyped-def]
    with Session(rt.db) as session:
        return list(session.exec(select(Enrollment)).all())


def test_an_explicit_exit_step_does_not_withdraw_the_email_before_it(tmp_path: Path) -> None:
    """``exit_workflow()`` right after a send is the author ending the workflow with that
    email, not a reason to take it back; the held email goes in the morning. (The wait is
    until a time of day: a relative one would be paused by the held email, pauses.py, and
    end only after it went.)"""
    workflow = Workflow(
        "invite",
        trigger=on_event("demo.requested"),
        steps=[send_email("demo_invitation", id="x"), wait_until("06:00"), exit_workflow()],
    )
    with running(tmp_path, [workflow], guardrails=NIGHT) as (rt, clock, email):
        _held_at_night(rt, email)
        clock.advance(hours=1)  # 06:00 in New York: the exit step runs, the email still held
        rt.run_until_idle()
        with Session(rt.db) as session:
            statuses = dict(
                session.exec(
                    select(Contact.email, Enrollment.status).join(
                        Enrollment, col(Enrollment.contact_id) == col(Contact.id)
                    )
                ).all()
            )
        assert statuses["ny@example.com"] == "exited"
        clock.set(MORNING_IN_NEW_YORK)
        rt.run_until_idle()
        assert sorted(m.to for m in email.sent) == ["ldn@example.com", "ny@example.com"]


def test_a_transactional_email_waiting_to_retry_is_not_withdrawn(tmp_path: Path) -> None:
    receipts = Workflow(
        "receipts",
        trigger=on_event("demo.requested"),
        goals=[on_event("demo.booked")],
        steps=[send_email("demo_invitation", id="r", marketing=False)],
    )
    with running(tmp_path, [receipts], events=EVENTS) as (rt, clock, email):
        email.fail_next(retry_after=timedelta(minutes=30))
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        assert email.sent == []
        (waiting,) = actions(rt)
        assert waiting.status == ActionStatus.PENDING and waiting.attempts == 1
        rt.track("ana@example.com", "demo.booked")  # the goal, while the receipt waits
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.run_until_idle()
        assert sent(email) == ["receipts:r"]


def test_a_marketing_email_waiting_to_retry_is_withdrawn(tmp_path: Path) -> None:
    workflow = invitation(goals=[on_event("demo.booked")])
    with running(tmp_path, [workflow], events=EVENTS) as (rt, clock, email):
        email.fail_next(retry_after=timedelta(minutes=30))
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        rt.track("ana@example.com", "demo.booked")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.run_until_idle()
        assert email.sent == []
        (withdrawn,) = actions(rt)
        assert withdrawn.status == ActionStatus.SKIPPED
        assert withdrawn.reason["skipped"].startswith(
            "withdrawn before it went out: goal reached: demo.booked"
        )


@pytest.fixture
def fake() -> FakeSendGrid:  # type: ignore[misc]
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_held_batch_emails_of_contacts_who_converted_are_withdrawn(
    tmp_path: Path, fake: FakeSendGrid, database: str, request: pytest.FixtureRequest
) -> None:
    """The batch path (one request for many contacts): of four contacts held overnight in
    Tokyo, the two who bought before 09:00 get no sale email; the other two do."""
    url = request.getfixturevalue("pg_db_url") if database == "postgresql" else None
    sale = Workflow(
        "spring_sale",
        trigger=on_stage_entered("consideration"),
        goals=[on_stage_entered("purchase")],
        steps=[send_email("spring_sale", id="sale")],
    )
    rules = (EventRule("order.completed", triggers=("purchase",)),)
    evening = Guardrails(quiet_hours=quiet_hours("18:00", "09:00"))
    worlds = _world(tmp_path, fake, [sale], evening, rules, url=url)
    runtime, clock = next(worlds)
    try:
        add(runtime, "Asia/Tokyo", 4)
        runtime.broadcast("spring_sale")
        runtime.drain()
        assert fake.requests == []  # 19:00 in Tokyo: all four held
        clock.set(clock.now() + timedelta(hours=1))
        for n in (0, 1):
            runtime.track(f"tokyo{n}@example.com", "order.completed")
        runtime.run_until_idle()
        clock.set(datetime(2026, 3, 3, 0, 1, tzinfo=UTC))  # 09:01 in Tokyo
        runtime.run_until_idle()
        sent_to = [p["to"][0]["email"] for r in fake.requests for p in r.body["personalizations"]]
        assert sorted(sent_to) == ["tokyo2@example.com", "tokyo3@example.com"]
        assert len(fake.requests) == 1  # still one request for the two
        with Session(runtime.db) as session:
            skipped = session.exec(
                select(Action).where(Action.status == ActionStatus.SKIPPED)
            ).all()
        assert len(skipped) == 2
        assert {a.reason["skipped"] for a in skipped} == {
            "withdrawn before it went out: goal reached: entered purchase"
        }
    finally:
        next(worlds, None)


def test_an_email_a_worker_is_claiming_is_skipped_over_not_waited_for(
    tmp_path: Path, pg_db_url: str
) -> None:
    """PostgreSQL: the withdrawal does not wait on a row a claim has locked (the claim goes
    on to send it; it was on its way before the end), so the pipeline's transaction, which
    holds the contact's lock, never waits on a claim that waits for that contact."""
    db = make_engine(pg_db_url)
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with Session(db) as session:
        ana = new_contact("ana@example.com", now)
        session.add(ana)
        session.flush()
        enrollment = Enrollment(
            contact_id=ana.id,  # type: ignore[arg-type]
            workflow="invite",
            version="v1",
            status="converted",
            started_at=now,
            updated_at=now,
        )
        session.add(enrollment)
        session.flush()
        session.add(
            Action(
                contact_id=ana.id,  # type: ignore[arg-type]
                enrollment_id=enrollment.id,
                kind="email",
                idempotency_key="held-invitation",
                reason={"held": [{"rule": "quiet hours"}]},
                next_attempt_at=now + timedelta(hours=3),
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
        session.refresh(enrollment)
    locked = threading.Event()
    release = threading.Event()

    def claim() -> None:  # a worker's claim holding the action's row lock
        with db.connect() as conn, conn.begin():
            conn.execute(text("SELECT id FROM actions FOR UPDATE")).all()
            locked.set()
            release.wait(10)

    worker = threading.Thread(target=claim)
    worker.start()
    try:
        assert locked.wait(10)
        with Session(db) as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert (
                withdraw_waiting_emails(session, enrollment.id, now=now, why="goal reached") == []
            )
            session.commit()
        release.set()
        worker.join(10)
        with Session(db) as session:
            assert session.exec(select(Action.status)).one() == ActionStatus.PENDING
            withdrawn = withdraw_waiting_emails(session, enrollment.id, now=now, why="goal reached")
            session.commit()
            assert len(withdrawn) == 1
            assert session.exec(select(Action.status)).one() == ActionStatus.SKIPPED
    finally:
        release.set()
        worker.join(10)
        db.dispose()


def _in_flight(rt, contact_email: str) -> int:  # type: ignore[no-untyped-def]
    """Put the contact's pending email in the state a worker's claim leaves it in while the
    provider call runs: ``sending``, leased. The goal's withdrawal cannot see it."""
    with Session(rt.db) as session:
        action = session.exec(
            select(Action).where(Action.status == ActionStatus.PENDING, Action.kind == "email")
        ).one()
        action.status = ActionStatus.SENDING
        action.lease_until = rt.clock.now() + timedelta(minutes=5)
        session.add(action)
        session.commit()
        assert action.id is not None
        return action.id


def _failed_and_waiting(rt, action_id: int) -> None:  # type: ignore[no-untyped-def]
    """The provider call failed transiently: back to pending, to retry in 30 minutes."""
    with Session(rt.db) as session:
        action = session.get(Action, action_id)
        assert action is not None
        action.status = ActionStatus.PENDING
        action.next_attempt_at = rt.clock.now() + timedelta(minutes=30)
        action.lease_until = action.next_attempt_at
        session.add(action)
        session.commit()


def test_an_email_in_flight_when_the_goal_came_that_fails_is_not_retried(
    tmp_path: Path,
) -> None:
    """The withdrawal passes over an email mid-send; if that send fails and waits to retry,
    the claim of the retry reads the enrollment's mark and skips it."""
    workflow = invitation(goals=[on_event("demo.booked")])
    with running(tmp_path, [workflow], guardrails=NIGHT, events=EVENTS) as (rt, clock, email):
        _held_at_night(rt, email)
        clock.set(MORNING_IN_NEW_YORK)
        action_id = _in_flight(rt, "ny@example.com")
        rt.track("ny@example.com", "demo.booked")
        rt.run_until_idle()
        _failed_and_waiting(rt, action_id)
        clock.advance(hours=1)
        rt.run_until_idle()
        assert [m.to for m in email.sent] == ["ldn@example.com"]
        (withdrawn,) = [a for a in actions(rt) if a.id == action_id]
        assert withdrawn.status == ActionStatus.SKIPPED
        assert withdrawn.reason["skipped"].startswith(
            "withdrawn before it went out: goal reached: demo.booked"
        )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_batch_email_in_flight_when_the_goal_came_that_fails_is_not_retried(
    tmp_path: Path, fake: FakeSendGrid, database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_db_url") if database == "postgresql" else None
    sale = Workflow(
        "spring_sale",
        trigger=on_stage_entered("consideration"),
        goals=[on_stage_entered("purchase")],
        steps=[send_email("spring_sale", id="sale"), wait(days=3), send_email("spring_sale")],
    )
    rules = (EventRule("order.completed", triggers=("purchase",)),)
    evening = Guardrails(quiet_hours=quiet_hours("18:00", "09:00"))
    worlds = _world(tmp_path, fake, [sale], evening, rules, url=url)
    runtime, clock = next(worlds)
    try:
        add(runtime, "Asia/Tokyo", 1)
        runtime.broadcast("spring_sale")
        runtime.drain()
        assert fake.requests == []  # held until 09:00 in Tokyo
        clock.set(datetime(2026, 3, 3, 0, 1, tzinfo=UTC))  # 09:01 in Tokyo
        action_id = _in_flight(runtime, "tokyo0@example.com")
        runtime.track("tokyo0@example.com", "order.completed")
        runtime.run_until_idle()
        _failed_and_waiting(runtime, action_id)
        clock.set(clock.now() + timedelta(hours=1))
        runtime.run_until_idle()
        assert fake.requests == []
        with Session(runtime.db) as session:
            action = session.get(Action, action_id)
        assert action is not None and action.status == ActionStatus.SKIPPED
        assert action.reason["skipped"] == (
            "withdrawn before it went out: goal reached: entered purchase"
        )
    finally:
        next(worlds, None)
