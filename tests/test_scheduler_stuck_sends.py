"""An action left ``sending`` by a worker that stopped is handed out once per lease.

Its ``lease_until`` stays expired (the next claim reads it to know that the send may have
been cut short); the sweeper's own lease on it is ``dispatch_lease_until``. While no worker
consumes, passes every few seconds must not queue it again at each pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dramatiq import Message
from sqlalchemy import Engine, insert, select
from sqlmodel import Session, col

from connectors import EmailConnector, EmailMessage, SendResult
from engine.db import make_engine
from engine.models import Action, ActionStatus, Contact
from engine.runtime import Runtime
from engine.scheduler import claim_due
from tests.support import actions, make_runtime, new_contact

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
PASS = timedelta(seconds=5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Engine]:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    engine = make_engine(request.getfixturevalue(fixture))
    try:
        yield engine
    finally:
        engine.dispose()


def action_rows(db: Engine, *rows: tuple[str, datetime]) -> list[int]:
    """One contact with an email action per (status, lease_until); their ids in order."""
    with db.begin() as conn:
        contact = new_contact("stuck@example.com", NOW - timedelta(days=1))
        contact_id = conn.execute(
            insert(Contact).values(**contact.model_dump(exclude={"id"})).returning(col(Contact.id))
        ).scalar_one()
        return [
            conn.execute(
                insert(Action)
                .values(
                    contact_id=contact_id,
                    kind="email",
                    payload={"template": "welcome"},
                    idempotency_key=f"test:{n}",
                    status=status,
                    attempts=1 if status == ActionStatus.SENDING else 0,
                    next_attempt_at=NOW - timedelta(hours=1),
                    lease_until=lease_until,
                    created_at=NOW - timedelta(hours=1),
                    updated_at=NOW - timedelta(hours=1),
                )
                .returning(col(Action.id))
            ).scalar_one()
            or 0
            for n, (status, lease_until) in enumerate(rows)
        ]


def handed_out(db: Engine, at: datetime) -> list[int]:
    return claim_due(db, now=at, lease=LEASE, batch_size=100).actions


def test_a_row_left_sending_is_handed_out_once_per_lease_and_keeps_its_expired_lease(
    db,
) -> None:
    # Given a send cut short (its worker died; its lease ran out a minute ago), a pending
    # action whose message was lost, and a send in progress
    stuck, lost, live = action_rows(
        db,
        (ActionStatus.SENDING, NOW - timedelta(minutes=1)),
        (ActionStatus.PENDING, NOW - timedelta(seconds=30)),
        (ActionStatus.SENDING, NOW + 3 * LEASE),
    )
    # When the scheduler passes every 5 s while no worker consumes
    # Then the first pass hands out the stuck and the lost one, oldest lease first...
    assert handed_out(db, NOW) == [stuck, lost]
    # ...and no pass within the lease hands either out again
    for n in range(1, LEASE // PASS):
        assert handed_out(db, NOW + n * PASS) == [], n
    assert handed_out(db, NOW + LEASE - timedelta(microseconds=1)) == []
    # Once that lease has run out they are due again, once
    assert handed_out(db, NOW + LEASE) == [stuck, lost]
    assert handed_out(db, NOW + LEASE + PASS) == []
    # The stuck row still says that its send was cut short: its own lease is as it was
    with db.connect() as conn:
        table = Action.__table__  # type: ignore[attr-defined]
        rows = {r.id: r for r in conn.execute(select(table))}
    assert rows[stuck].status == ActionStatus.SENDING
    assert rows[stuck].lease_until == NOW - timedelta(minutes=1)
    assert rows[stuck].dispatch_lease_until == NOW + 2 * LEASE
    assert rows[lost].lease_until == NOW + 2 * LEASE
    assert rows[live].dispatch_lease_until is None


class _Blind(EmailConnector):
    """A connector that cannot dedupe (like SendGrid's mail send)."""

    name = "blind"
    dedupes = False

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> SendResult:
        self.sent.append(message)
        return SendResult("x")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    # Given three welcome emails whose workers died mid-send, their leases run out
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    for name in ("ana", "ben", "cy"):
        runtime.track(f"{name}@example.com", "page.viewed")
    runtime.broker.flush_all()  # no worker runs: the tests look at what is queued
    runtime.process_contacts([1, 2, 3])
    runtime.broker.flush_all()
    with Session(runtime.db) as session:
        for action in actions(runtime):
            action.status = ActionStatus.SENDING
            action.attempts = 1
            action.lease_until = clock.now() - timedelta(seconds=1)
            session.add(action)
        session.commit()
    yield runtime
    runtime.close()


def queued_action_ids(runtime: Runtime) -> list[int]:
    """The action ids the messages waiting in the broker carry (the queues are emptied)."""
    ids: list[int] = []
    for queue in runtime.broker.queues.values():  # type: ignore[attr-defined]
        while not queue.empty():
            (arg,) = Message.decode(queue.get_nowait()).args
            ids.extend(arg if isinstance(arg, list) else [arg])
            queue.task_done()
    return sorted(ids)


def test_passes_without_a_worker_queue_each_stuck_send_once_per_lease(rt) -> None:
    clock = rt.clock
    stuck = sorted(a.id for a in actions(rt) if a.id is not None)
    assert len(stuck) == 3
    # When passes run every 5 s for a minute, with no worker consuming
    for _ in range(12):
        rt.tick()
        clock.advance(PASS)
    # Then each stuck send was queued once, not once per pass
    assert queued_action_ids(rt) == stuck
    # And again once its hand-out lease has run out
    clock.advance(rt.lease)
    rt.tick()
    rt.tick()
    assert queued_action_ids(rt) == stuck


def test_a_stuck_send_handed_out_again_is_still_never_sent_twice(rt) -> None:
    # Given a pass that queued the stuck sends, twice over a lease, for a connector that
    # cannot dedupe
    rt.email = blind = _Blind()
    rt.tick()
    rt.clock.advance(rt.lease)
    rt.tick()
    # When a worker finally runs every queued job
    rt.drain()
    # Then nothing went out again: the expired lease still told the claim that the send
    # may have been cut short
    assert blind.sent == []
    assert {a.status for a in actions(rt)} == {ActionStatus.UNKNOWN}
    assert all("cannot dedupe" in (a.error or "") for a in actions(rt))
