"""Ingest and the pipeline racing on PostgreSQL: the contact row locks they take.

A request that changes a contact's attributes locks her, in id order, and the pipeline
locks the contacts it processes the same way. Every event row written for a contact also
takes a lock on her row: PostgreSQL checks the foreign key with ``FOR KEY SHARE``, which
``FOR UPDATE`` blocked. So contacts are locked ``FOR NO KEY UPDATE`` (it still serialises
their writers, and an erasure's ``DELETE``): recording an event for her waits for nobody,
and two requests locking contacts in id order cannot deadlock through their events. New
contacts are inserted in address order, and a deadlock's victim is recorded again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from engine import batch_writer
from engine.db import transaction
from engine.models import Contact, Event, EventStatus
from engine.pipeline import lock_contact
from engine.pipeline_jobs import process_contacts_job
from engine.recording_batch import record_batch
from engine.runtime import Runtime
from tests.support import make_runtime
from tests.test_ds_event_stream import _In

pytestmark = pytest.mark.postgres

LOCK_WAIT_LIMIT = "5s"
"""``lock_timeout`` of the request under test: it never waits for a row lock once fixed, so
any wait that reaches this is the defect, not a slow machine."""


@pytest.fixture
def runtime(pg_db_url: str) -> Iterator[Runtime]:
    runtime, _clock, _email = make_runtime(pg_db_url)
    try:
        yield runtime
    finally:
        runtime.db.dispose()


def _record(session: Session, runtime: Runtime, *items: _In) -> None:
    record_batch(session, runtime.registry, list(items), now=runtime.clock.now(), source="api")


def _two_contacts(runtime: Runtime) -> tuple[int, int]:
    """Ana and Bo, stored (Ana's id first), each with her first event processed."""
    with transaction(runtime.db) as session:
        _record(
            session,
            runtime,
            _In("ana@example.com", "page.viewed", {}, "seed-ana"),
            _In("bo@example.com", "page.viewed", {}, "seed-bo"),
        )
    with Session(runtime.db) as session:
        ids = {c.email: c.id for c in session.exec(select(Contact))}
    process_contacts_job(runtime.db, runtime.registry, list(ids.values()), now=runtime.clock.now())
    ana, bo = ids["ana@example.com"], ids["bo@example.com"]
    assert ana is not None and bo is not None and ana < bo
    return ana, bo


def _record_without_waiting(runtime: Runtime, *items: _In) -> None:
    with transaction(runtime.db) as session:
        session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_LIMIT}'"))
        _record(session, runtime, *items)


def test_an_event_is_recorded_while_the_pipeline_holds_its_contact(runtime: Runtime) -> None:
    ana, _bo = _two_contacts(runtime)
    # Given the pipeline holds Ana's row lock (a long job: a slow rule, many events)
    with transaction(runtime.db) as pipeline:
        assert lock_contact(pipeline, ana) is not None
        # When a request records an event for her that changes nothing of her
        # Then it is recorded at once: it takes no lock of hers, so waits for none
        _record_without_waiting(runtime, _In("ana@example.com", "page.viewed", {}, "k1"))
    with Session(runtime.db) as session:
        assert session.exec(select(Event).where(Event.idempotency_key == "api:k1")).one()


def test_an_event_is_recorded_while_another_request_merges_attributes(runtime: Runtime) -> None:
    _two_contacts(runtime)
    # Given a request that changes Ana's attributes has locked her and not committed
    with transaction(runtime.db) as merging:
        _record(merging, runtime, _In("ana@example.com", "a.b", {}, "k1", {"plan": "pro"}))
        merging.flush()
        # When another request records an event for her that changes nothing of her
        # Then it does not wait for the first one
        _record_without_waiting(runtime, _In("ana@example.com", "page.viewed", {}, "k2"))
    with Session(runtime.db) as session:
        keys = set(session.exec(select(Event.idempotency_key).where(Event.source == "api")))
    assert {"api:k1", "api:k2"} <= keys


def _pause_before_events(thread_name: str, paused: threading.Event, go: threading.Event) -> Any:
    """``PostgresWriter.insert_events`` that, in the thread named ``thread_name``, says it is
    about to insert (the contacts it locks are locked) and waits for ``go``."""
    original = batch_writer.PostgresWriter.insert_events

    def insert_events(self: Any, session: Session, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == thread_name:
            paused.set()
            assert go.wait(timeout=30)
        return original(self, session, *args, **kwargs)

    return insert_events


def _waiting_for_a_lock(runtime: Runtime, application_name: str) -> bool:
    with runtime.db.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND wait_event_type = 'Lock'"
                ),
                {"name": application_name},
            ).scalar()
        )


def _until(condition: Callable[[], bool], *, seconds: float = 30) -> None:
    stop = threading.Event()
    deadline = datetime.now() + timedelta(seconds=seconds)
    while not condition():
        assert datetime.now() < deadline, "the condition did not come about"
        stop.wait(0.02)


def test_two_batches_locking_in_id_order_do_not_deadlock(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ana, bo = _two_contacts(runtime)
    paused, go = threading.Event(), threading.Event()
    monkeypatch.setattr(
        batch_writer.PostgresWriter, "insert_events", _pause_before_events("second", paused, go)
    )
    errors: dict[str, BaseException] = {}

    def run(name: str, *items: _In) -> None:
        try:
            with transaction(runtime.db) as session:
                session.execute(text(f"SET LOCAL application_name = 'cc-{name}'"))
                _record(session, runtime, *items)
        except BaseException as exc:  # reported by the main thread
            errors[name] = exc

    # Given a batch that changes Bo and brings a plain event for Ana has locked Bo
    second = threading.Thread(
        target=run,
        name="second",
        args=(
            "second",
            _In("bo@example.com", "a.b", {}, "b1", {"plan": "basic"}),
            _In("ana@example.com", "page.viewed", {}, "b2"),
        ),
    )
    second.start()
    assert paused.wait(timeout=30)
    # When a batch changing Ana and Bo locks them in id order: Ana, then waits for Bo
    first = threading.Thread(
        target=run,
        name="first",
        args=(
            "first",
            _In("ana@example.com", "a.b", {}, "a1", {"seats": 5}),
            _In("bo@example.com", "a.b", {}, "a2", {"seats": 7}),
        ),
    )
    first.start()
    _until(lambda: _waiting_for_a_lock(runtime, "cc-first"))
    # and the second batch goes on to write its events (Ana's among them)
    go.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive()
    # Then both are recorded: neither was chosen as a deadlock's victim
    assert errors == {}, {k: type(v).__name__ + ": " + str(v) for k, v in errors.items()}
    with Session(runtime.db) as session:
        contacts = {c.id: c.attributes for c in session.exec(select(Contact))}
        statuses = {e.idempotency_key: e.status for e in session.exec(select(Event))}
    assert contacts[ana] == {"seats": 5}
    assert contacts[bo] == {"plan": "basic", "seats": 7}
    assert {k for k, s in statuses.items() if s == EventStatus.PENDING} == {
        "api:a1",
        "api:a2",
        "api:b1",
        "api:b2",
    }


def test_a_deadlock_victim_is_refused_whole_and_its_retry_records_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's behaviour around the deadlock above, which stays right after the fix: the
    victim's transaction is rolled back whole (an ``OperationalError``, which the API
    answers 503 with Retry-After), and the same batch sent again is recorded once."""
    _two_contacts(runtime)
    victim = OperationalError("SELECT 1", {}, Exception("deadlock detected"))

    def refused(self: Any, session: Session, *args: Any, **kwargs: Any) -> Any:
        raise victim

    items = (
        _In("bo@example.com", "a.b", {}, "b1", {"plan": "basic"}),
        _In("ana@example.com", "page.viewed", {}, "b2"),
    )
    with monkeypatch.context() as patch:
        patch.setattr(batch_writer.PostgresWriter, "insert_events", refused)
        with pytest.raises(OperationalError), transaction(runtime.db) as session:
            _record(session, runtime, *items)
    with Session(runtime.db) as session:
        bo = session.exec(select(Contact).where(Contact.email == "bo@example.com")).one()
        assert bo.attributes == {}
        assert session.exec(select(Event).where(Event.idempotency_key == "api:b1")).first() is None
    with transaction(runtime.db) as session:
        _record(session, runtime, *items)
    with transaction(runtime.db) as session:
        _record(session, runtime, *items)
    with Session(runtime.db) as session:
        keys = list(session.exec(select(Event.idempotency_key).where(Event.source == "api")))
        bo = session.exec(select(Contact).where(Contact.email == "bo@example.com")).one()
    assert sorted(keys) == ["api:b1", "api:b2", "api:seed-ana", "api:seed-bo"]
    assert bo.attributes == {"plan": "basic"}


_HOLD_FIRST_AT_MAY = """
CREATE OR REPLACE FUNCTION cc_hold_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.email = 'may@example.com' AND current_setting('application_name') = 'cc-first' THEN
    PERFORM pg_advisory_xact_lock_shared(4242);
  END IF;
  RETURN NEW;
END $$;
--
CREATE TRIGGER cc_hold_first BEFORE INSERT ON contacts
  FOR EACH ROW EXECUTE FUNCTION cc_hold_first();
"""
"""Test scaffolding: the first request's insert of may@ waits (before it takes the address)
until the test lets it, so the two requests' statements interleave the same way each run."""


def test_two_batches_creating_the_same_addresses_in_opposite_orders_are_both_recorded(
    runtime: Runtime,
) -> None:
    from engine.api.events import EventIn, record_all

    with runtime.db.begin() as conn:
        for statement in _HOLD_FIRST_AT_MAY.split("--"):
            conn.execute(text(statement))
    errors: dict[str, BaseException] = {}

    def run(name: str, *emails: str) -> None:
        items = [
            EventIn(email=e, type="page.viewed", idempotency_key=f"{name}-{e}") for e in emails
        ]
        try:
            record_all(runtime, items)
        except BaseException as exc:  # reported by the main thread
            errors[name] = exc

    def name_the_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        name = threading.current_thread().name
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT set_config('application_name', %s, false)", (f"cc-{name}",))
        dbapi_connection.commit()

    event.listen(runtime.db.pool, "checkout", name_the_connection)
    with runtime.db.connect() as gate:
        gate.execute(text("SELECT pg_advisory_lock(4242)"))
        # Given a batch creating Ned and May has taken Ned's address, and waits before May's
        first = threading.Thread(
            target=run, name="first", args=("first", "ned@example.com", "may@example.com")
        )
        first.start()
        _until(lambda: _waiting_for_a_lock(runtime, "cc-first"))
        # When a batch creating May and Ned takes May's and waits for Ned's (or, inserting
        # in one order with the first, takes both)
        second = threading.Thread(
            target=run, name="second", args=("second", "may@example.com", "ned@example.com")
        )
        second.start()
        _until(lambda: _waiting_for_a_lock(runtime, "cc-second") or not second.is_alive())
        # and the first goes on to May
        gate.execute(text("SELECT pg_advisory_unlock(4242)"))
        gate.commit()
        first.join(timeout=60)
        second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive()
    # Then both batches are recorded, on one Ned and one May
    assert errors == {}, {k: f"{type(v).__name__}: {v}" for k, v in errors.items()}
    with Session(runtime.db) as session:
        emails = sorted(c.email for c in session.exec(select(Contact)))
        keys = sorted(session.exec(select(Event.idempotency_key).where(Event.source == "api")))
    assert emails == ["may@example.com", "ned@example.com"]
    assert len(keys) == 4
