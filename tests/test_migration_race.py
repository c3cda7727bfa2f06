"""A migration never overwrites what a worker did meanwhile (PostgreSQL).

``journeyline workflows migrate NAME --apply`` plans and moves in one transaction. On
PostgreSQL (read committed) a worker can wake an enrollment and commit between the plan's
read and the move; the move must then see the enrollment as the worker left it, not as the
plan read it. A worker arriving once the move has its locks waits for the migration to
commit and goes on from the new version.

PostgreSQL only: on SQLite the migration's transaction holds the database's write lock from
its first statement (``BEGIN IMMEDIATE``), so no worker commits inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text, update
from sqlmodel import Session, select

from connectors.email.recording import RecordingEmailConnector
from engine import Workflow, on_event, send_email, wait
from engine.clock import VirtualClock
from engine.db import make_engine, transaction
from engine.models import Enrollment
from engine.runtime import Runtime
from engine.settings import Settings
from engine.versions import apply_migration, plan_migration
from engine.virtual_time import advance_to
from tests.test_migration_safety import registry

pytestmark = pytest.mark.postgres

TWO_DAYS_ON = timedelta(days=2, minutes=1)  # past the wait before the guide

V1 = Workflow(
    "drip",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("welcome", id="welcome"),
        wait(days=2, id="pause"),
        send_email("guide", id="guide"),
        wait(days=2, id="pause2"),
        send_email("trial_offer", id="trial"),
    ],
)
# An email inserted above the guide: the guide is the same step (its id), one position on,
# so an enrollment moved to version 2 at a position the plan did not check runs it again.
V2 = Workflow(
    "drip",
    trigger=on_event("demo.requested"),
    steps=[*V1.steps[:2], send_email("demo_invitation", id="demo"), *V1.steps[2:]],
)


@contextmanager
def drip_on_postgres(url: str) -> Iterator[tuple[Runtime, VirtualClock, RecordingEmailConnector]]:
    """Ed enrolled on version 1 (welcome sent, waiting before the guide), version 2
    deployed (the guide is the same step there, at position 3 instead of 2)."""
    db = make_engine(url)
    clock = VirtualClock()
    email = RecordingEmailConnector()
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://"),
        clock=clock,
        email=email,
        db=db,
        registry=registry(V1),
    )
    runtime.start()
    try:
        runtime.track("ed@example.com", "demo.requested")
        runtime.run_until_idle()
        runtime.registry = registry(V2)
        yield runtime, clock, email
    finally:
        runtime.close()
        db.dispose()


def the_enrollment(db: Engine) -> Enrollment:
    with Session(db) as session:
        (enrollment,) = session.exec(select(Enrollment)).all()
    return enrollment


def templates(email: RecordingEmailConnector) -> list[str]:
    return [m.headers["X-Journeyline-Template"] for m in email.sent]


def as_read(session: Session) -> list[Enrollment]:
    """The enrollments as the migration's session read them, kept alive: whether the plan's
    own rows are still in the session's identity map when the move runs is up to the
    garbage collector, and a stale one must not be trusted either way."""
    return list(session.exec(select(Enrollment)).all())


def notes(enrollment: Enrollment) -> list[str]:
    return [str(t.get("note", "")) for t in enrollment.context.get("trail", [])]


def test_an_enrollment_a_worker_ran_on_after_the_plan_stays_where_the_worker_left_it(
    pg_db_url: str,
) -> None:
    with drip_on_postgres(pg_db_url) as (runtime, clock, email):
        with transaction(runtime.db) as session:
            # Given the migration has planned to move Ed at the guide
            plan = plan_migration(session, runtime.registry, "drip")
            assert plan.movable == 1
            read = as_read(session)
            # When a worker wakes him, sends the guide and commits before the move
            advance_to(runtime, clock, clock.now() + TWO_DAYS_ON)
            worker_left = the_enrollment(runtime.db)
            moved = apply_migration(session, plan)
        # Then the move sees he ran on, and leaves him as the worker left him
        assert moved == 0
        enrollment = the_enrollment(runtime.db)
        assert (enrollment.version, enrollment.position) == (V1.version, worker_left.position)
        assert enrollment.context == worker_left.context
        assert not any("moved from version" in n for n in notes(enrollment))
        assert read[0].position == worker_left.position  # the session's copy was read again
        # And he finishes on version 1, each email once
        advance_to(runtime, clock, clock.now() + timedelta(days=6))
        assert templates(email) == ["welcome", "guide", "trial_offer"]


def test_a_move_keeps_what_a_writer_put_in_the_context_after_the_plan(pg_db_url: str) -> None:
    with drip_on_postgres(pg_db_url) as (runtime, _clock, _email):
        with transaction(runtime.db) as session:
            # Given the migration has planned to move Ed at the guide
            plan = plan_migration(session, runtime.registry, "drip")
            assert plan.movable == 1
            read = as_read(session)
            # When another transaction notes something on his enrollment (as a held email's
            # pause does) without moving it, and commits before the move
            enrollment_id = plan.moves[0].enrollment_id
            with runtime.db.begin() as other:
                (context,) = other.execute(
                    text("SELECT context FROM enrollments WHERE id = :id"), {"id": enrollment_id}
                ).one()
                context = {
                    **context,
                    "paused": {"step": "pause"},
                    "trail": [*context.get("trail", []), {"step": "pause", "note": "paused"}],
                }
                other.execute(
                    update(Enrollment).where(Enrollment.id == enrollment_id).values(context=context)  # type: ignore[arg-type]
                )
            moved = apply_migration(session, plan)
        # Then he is moved, and the note and the pause are kept beside the migration's note
        assert moved == 1
        enrollment = the_enrollment(runtime.db)
        assert enrollment.version == V2.version
        assert enrollment.context["paused"] == {"step": "pause"}
        assert notes(enrollment)[-2:] == [
            "paused",
            f"moved from version {V1.version} to {V2.version}",
        ]
        assert read[0].context == enrollment.context  # the session's copy was read again


def test_a_worker_arriving_during_the_move_waits_for_it_then_goes_on_in_the_new_version(
    pg_db_url: str,
) -> None:
    with drip_on_postgres(pg_db_url) as (runtime, clock, email):
        failures: list[BaseException] = []

        def wake_him() -> None:
            try:
                advance_to(runtime, clock, clock.now() + TWO_DAYS_ON)
            except BaseException as exc:  # reported by the test, not lost in the thread
                failures.append(exc)

        worker = threading.Thread(target=wake_him)
        with transaction(runtime.db) as session:
            # Given the migration has moved Ed and not yet committed
            plan = plan_migration(session, runtime.registry, "drip")
            assert apply_migration(session, plan) == 1
            # When a worker wakes him meanwhile
            worker.start()
            waited = waits_on_a_lock(runtime.db) and worker.is_alive()
        worker.join(timeout=30)
        assert not worker.is_alive() and not failures, failures
        # Then, once the migration commits, it sends the guide once, from version 2
        enrollment = the_enrollment(runtime.db)
        assert (enrollment.version, enrollment.position) == (V2.version, 5)  # past pause2
        assert f"moved from version {V1.version} to {V2.version}" in notes(enrollment)
        assert templates(email) == ["welcome", "guide"]
        advance_to(runtime, clock, clock.now() + timedelta(days=6))
        assert templates(email) == ["welcome", "guide", "trial_offer"]
        # as it waited for the migration's lock on his contact
        assert waited, "the worker did not wait for the migration"


def waits_on_a_lock(db: Engine, *, within_seconds: float = 10.0) -> bool:
    """Whether another session of this database is waiting on a row lock, looked for until
    ``within_seconds`` pass (a real thread's progress, not business time)."""
    deadline = time.monotonic() + within_seconds
    with db.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            watcher.rollback()  # a fresh snapshot of pg_stat_activity each time
            if waiting:
                return True
            time.sleep(0.02)
    return False
