"""A scheduler pass claims due enrollments in ``enrollment_claims``, not on their rows.

Each due wake-up is handed out once per lease, handed out again when its lease lapses (its
job was lost), and a claim never hides a later wake-up of the same enrollment.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine, insert, select, text, update
from sqlmodel import Session

from engine import Workflow, on_event, send_email, virtual_time, wait
from engine.cli_contact import _live_table
from engine.db import make_engine
from engine.models import Contact, Enrollment, EnrollmentClaim, EnrollmentStatus
from engine.scheduler import claim_due
from engine.timeline import LiveEnrollment, contact_timeline
from tests.language_support import running, sent
from tests.support import actions, new_contact

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Engine]:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    engine = make_engine(request.getfixturevalue(fixture))
    try:
        yield engine
    finally:
        engine.dispose()


def waiting(db: Engine, *wakes: datetime) -> list[int]:
    """One contact with a waiting enrollment per wake-up; their ids in the order given."""
    with db.begin() as conn:
        contact = new_contact("claims@example.com", NOW - timedelta(days=1))
        contact_id = conn.execute(
            insert(Contact).values(**contact.model_dump(exclude={"id"})).returning(Contact.id)
        ).scalar_one()
        return [
            conn.execute(
                insert(Enrollment)
                .values(
                    contact_id=contact_id,
                    workflow="nurture",
                    version="1",
                    entry=entry,
                    status=EnrollmentStatus.WAITING,
                    position=1,
                    wake_at=wake,
                    context={},
                    started_at=NOW - timedelta(days=1),
                    updated_at=NOW - timedelta(days=1),
                )
                .returning(Enrollment.id)
            ).scalar_one()
            for entry, wake in enumerate(wakes, start=1)
        ]


def claimed_at(db: Engine, now: datetime, batch_size: int = 100) -> list[int]:
    return claim_due(db, now=now, lease=LEASE, batch_size=batch_size).enrollments


def claims(db: Engine) -> dict[int, tuple[datetime, datetime]]:
    with db.connect() as conn:
        rows = conn.execute(select(EnrollmentClaim.__table__)).all()  # type: ignore[call-overload]
    return {r.enrollment_id: (r.wake_at, r.until) for r in rows}


def test_a_due_wake_up_is_handed_out_once_per_lease_and_again_when_it_lapses(db) -> None:
    late, early, future = waiting(
        db, NOW - timedelta(minutes=1), NOW - timedelta(hours=1), NOW + timedelta(minutes=5)
    )
    # The due ones, earliest first; the future one stays.
    assert claimed_at(db, NOW) == [early, late]
    assert claims(db) == {
        early: (NOW - timedelta(hours=1), NOW + LEASE),
        late: (NOW - timedelta(minutes=1), NOW + LEASE),
    }
    # Within the lease no other pass hands them out, however often it runs; the third one
    # is handed out when it falls due.
    assert claimed_at(db, NOW) == []
    assert claimed_at(db, NOW + timedelta(minutes=4)) == []
    assert claimed_at(db, NOW + timedelta(minutes=5)) == [future]
    # Their jobs never ran: the lease lapses at its end, and they are due again.
    assert claimed_at(db, NOW + LEASE - timedelta(microseconds=1)) == []
    assert claimed_at(db, NOW + LEASE) == [early, late]
    assert {e: until for e, (_wake, until) in claims(db).items()} == {
        early: NOW + 2 * LEASE,
        late: NOW + 2 * LEASE,
        future: NOW + timedelta(minutes=5) + LEASE,
    }


def test_a_pass_takes_at_most_its_batch_and_the_next_pass_the_rest(db) -> None:
    ids = waiting(db, *(NOW - timedelta(minutes=m) for m in range(5, 0, -1)))
    assert claimed_at(db, NOW, batch_size=2) == ids[:2]
    assert claimed_at(db, NOW, batch_size=2) == ids[2:4]
    assert claimed_at(db, NOW, batch_size=2) == ids[4:]
    assert claimed_at(db, NOW, batch_size=2) == []


def test_a_claim_does_not_hide_the_next_wake_up_of_the_same_enrollment(db) -> None:
    # Given an enrollment claimed for its 11:00 wake-up
    (enrollment,) = waiting(db, NOW - timedelta(hours=1))
    assert claimed_at(db, NOW) == [enrollment]
    # When it moves on and waits again (an event came; its new wait is already due)
    with db.begin() as conn:
        conn.execute(
            update(Enrollment)
            .where(Enrollment.id == enrollment)
            .values(wake_at=NOW - timedelta(minutes=30), position=2)
        )
    # Then the next pass hands out the new wake-up at once, not when the old lease lapses
    assert claimed_at(db, NOW + timedelta(seconds=1)) == [enrollment]
    assert claims(db)[enrollment][0] == NOW - timedelta(minutes=30)


def test_claims_leave_the_enrollments_alone_and_lapsed_claims_are_deleted(db) -> None:
    first, second = waiting(db, NOW - timedelta(minutes=2), NOW - timedelta(minutes=1))

    def enrollment_rows() -> list[tuple]:
        with db.connect() as conn:
            columns = [*Enrollment.__table__.c]  # type: ignore[attr-defined]
            if db.dialect.name == "postgresql":
                columns.append(text("xmin"))  # changes with every write of the row
            return [tuple(r) for r in conn.execute(select(*columns).order_by(Enrollment.id))]

    before = enrollment_rows()
    assert claimed_at(db, NOW) == [first, second]
    assert enrollment_rows() == before
    # The first one's job ran and finished it; the second one's job was lost.
    with db.begin() as conn:
        conn.execute(
            update(Enrollment)
            .where(Enrollment.id == first)
            .values(status=EnrollmentStatus.COMPLETED, wake_at=None)
        )
    later = NOW + LEASE + timedelta(minutes=1)
    assert claimed_at(db, later) == [second]
    assert claims(db) == {second: (NOW - timedelta(minutes=1), later + LEASE)}


@pytest.mark.postgres
def test_a_pass_racing_another_waits_for_it_and_skips_what_it_claimed(pg_db_url) -> None:
    db = make_engine(pg_db_url)
    try:
        ids = waiting(db, *(NOW - timedelta(minutes=m) for m in (3, 2, 1)))
        # Given another pass that has claimed the first two and not yet committed
        other = db.connect()
        other.begin()
        other.execute(
            insert(EnrollmentClaim),
            [
                {"enrollment_id": i, "wake_at": NOW - timedelta(minutes=m), "until": NOW + LEASE}
                for i, m in zip(ids[:2], (3, 2), strict=True)
            ],
        )
        # When a second pass runs meanwhile
        result: list[list[int]] = []
        racer = threading.Thread(target=lambda: result.append(claimed_at(db, NOW)))
        racer.start()
        racer.join(timeout=1.0)
        # Then it waits on the other's claims rather than handing the same enrollments out
        assert racer.is_alive(), "the second pass did not wait for the first"
        other.commit()
        other.close()
        racer.join(timeout=30)
        assert not racer.is_alive()
        # and, once the first commits, hands out only what the first did not claim
        assert result == [[ids[2]]]
        assert claimed_at(db, NOW) == []
    finally:
        db.dispose()


@contextmanager
def at_most(seconds: int) -> Iterator[None]:
    """Fail, rather than hang the suite, if the block runs longer than ``seconds``."""

    def give_up(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_in_virtual_time_a_lost_wake_up_runs_when_its_claim_lapses(tmp_path: Path) -> None:
    flow = Workflow(
        "later",
        trigger=on_event("demo.requested"),
        steps=[wait(hours=1), send_email("welcome", id="after_an_hour")],
    )
    with running(tmp_path, [flow]) as (rt, clock, email):
        rt.track("lost@example.com", "demo.requested")
        rt.run_until_idle()
        start = clock.now()
        # Given that the first wake job the scheduler sends never reaches a worker
        lost: list[object] = []
        for job in (rt.jobs.wake_enrollment, rt.jobs.wake_enrollments):
            send = job.send
            job.send = lambda *args, _send=send: lost.append(args) if not lost else _send(*args)  # type: ignore[method-assign]
        # When virtual time moves two hours on
        with at_most(30):
            virtual_time.advance_to(rt, clock, start + timedelta(hours=2))
        # Then the wake-up was handed out again the moment its claim lapsed, and ran once
        assert len(lost) == 1
        assert sent(email) == ["later:after_an_hour"]
        (action,) = actions(rt)
        assert action.completed_at == start + timedelta(hours=1) + rt.lease


def test_the_contact_timeline_says_what_holds_each_waiting_wake_up(db) -> None:
    """What an on-call engineer sees (``journeyline contact``, ``GET /v1/contacts/...``):
    each live enrollment's next wake-up, and the claim holding it while a job runs it."""
    past_due, later, moved_on = waiting(
        db, NOW - timedelta(hours=1), NOW + timedelta(days=1), NOW - timedelta(minutes=30)
    )

    def live() -> dict[int, LiveEnrollment]:
        with Session(db) as session:
            timeline = contact_timeline(session, "claims@example.com")
        assert timeline is not None
        return {e.id: e for e in timeline.live}

    before = live()
    assert {i: e.claimed_until for i, e in before.items()} == {
        past_due: None,
        later: None,
        moved_on: None,
    }
    assert before[later].wake_at == NOW + timedelta(days=1)
    assert before[later].status == "waiting" and before[later].position == 1
    assert before[later].step is None  # no registry given: steps are not named

    assert sorted(claimed_at(db, NOW)) == sorted([past_due, moved_on])
    # moved_on's job ran: it waits for a later wake-up now, which its old claim does not hold.
    with db.begin() as conn:
        conn.execute(
            update(Enrollment)
            .where(Enrollment.id == moved_on)  # type: ignore[arg-type]
            .values(wake_at=NOW + timedelta(days=2))
        )
    after = live()
    assert after[past_due].claimed_until == NOW + LEASE
    assert after[later].claimed_until is None
    assert after[moved_on].claimed_until is None
    assert after[moved_on].to_dict()["wake_at"] == (NOW + timedelta(days=2)).isoformat()

    with db.begin() as conn:  # an ended enrollment is history, not live
        conn.execute(
            update(Enrollment)
            .where(Enrollment.id == later)  # type: ignore[arg-type]
            .values(status=EnrollmentStatus.COMPLETED, wake_at=None, ended_at=NOW)
        )
    assert sorted(live()) == sorted([past_due, moved_on])


def test_the_live_enrollments_table_tells_held_lapsed_and_waiting_for_a_pass_apart() -> None:
    def row(claimed_until: datetime | None, wake_at: datetime | None) -> LiveEnrollment:
        return LiveEnrollment(
            id=1,
            workflow="nurture",
            version="v1",
            status="waiting",
            position=2,
            step="reminder" if claimed_until is None else None,
            wake_at=wake_at,
            claimed_until=claimed_until,
        )

    console = Console(record=True, width=200)
    console.print(
        _live_table(
            [
                row(NOW + LEASE, NOW - timedelta(minutes=1)),
                row(NOW - timedelta(minutes=5), NOW - timedelta(minutes=20)),
                row(None, NOW - timedelta(minutes=3)),
                row(None, NOW + timedelta(days=1)),
            ],
            now=NOW,
        )
    )
    lines = [line for line in console.export_text().splitlines() if "nurture" in line]
    assert "handed to a job, held until 2026-03-02 12:10:00" in lines[0]
    assert "claim lapsed at 2026-03-02 11:55:00: due again" in lines[1]
    assert "past due: the next scheduler pass hands it out" in lines[2]
    assert "reminder (2)" in lines[2] and "reminder" not in lines[0]  # the step, when known
    assert "2026-03-03 12:00:00" in lines[3]
    assert "held" not in lines[3] and "due" not in lines[3]
