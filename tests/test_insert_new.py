"""``insert_new``: the ON CONFLICT DO NOTHING insert the pipeline records events with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session, select

from engine.db import insert_new, make_engine, transaction
from engine.models import Contact, Event
from tests.support import new_contact, statements

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    return str(request.getfixturevalue(name))


def _event(contact_id: int, key: str) -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "type": "page.viewed",
        "properties": {"path": "/pricing"},
        "source": "api",
        "idempotency_key": key,
        "status": "pending",
        "occurred_at": NOW,
        "received_at": NOW,
    }


def test_a_second_row_with_the_same_key_is_not_inserted(db_url: str) -> None:
    # Given a contact
    db = make_engine(db_url)
    try:
        with transaction(db) as session:
            contact = new_contact("ana@example.com", NOW)
            session.add(contact)
            session.flush()
            contact_id = contact.id
        assert contact_id is not None
        table: Any = Event.__table__
        # When the same idempotency key is inserted twice, in separate transactions
        with transaction(db) as session:
            first = insert_new(
                session, table, _event(contact_id, "api:k1"), unique=("idempotency_key",)
            )
        with transaction(db) as session:
            second = insert_new(
                session, table, _event(contact_id, "api:k1"), unique=("idempotency_key",)
            )
            other = insert_new(
                session, table, _event(contact_id, "api:k2"), unique=("idempotency_key",)
            )
        # Then the first and a different key get ids, the repeat gets None and writes nothing
        assert first is not None and other is not None and other != first
        assert second is None
        with Session(db) as session:
            stored = session.exec(select(Event).order_by(Event.id)).all()  # type: ignore[arg-type]
        assert [(e.id, e.idempotency_key, e.properties) for e in stored] == [
            (first, "api:k1", {"path": "/pricing"}),
            (other, "api:k2", {"path": "/pricing"}),
        ]
        assert stored[0].occurred_at == NOW  # UTC round-trips through the column type
    finally:
        db.dispose()


def test_a_flush_of_many_new_rows_is_one_insert_and_each_object_gets_its_own_id(
    db_url: str,
) -> None:
    """The ORM writes a job's new rows (actions, enrollments, transitions) in one multi-row
    INSERT on both databases, and every object gets the id of its own row back."""
    db = make_engine(db_url)
    try:
        with transaction(db) as session:  # ids with a gap below the new rows
            for i in range(5):
                session.add(Contact(email=f"old{i}@example.com", **_contact_times()))
            session.flush()
            session.delete(
                session.exec(select(Contact).where(Contact.email == "old4@example.com")).one()
            )
        with transaction(db) as session:
            new = [Contact(email=f"new{i}@example.com", **_contact_times()) for i in range(200)]
            session.add_all(new)
            with statements(db) as seen:
                session.flush()
            given = {c.email: c.id for c in new}
        inserts = [s for s in seen if s.startswith("INSERT")]
        with Session(db) as session:
            stored = dict(session.exec(select(Contact.email, Contact.id)).all())
        assert len(inserts) == 1
        assert all(stored[email] == contact_id for email, contact_id in given.items())
        assert len(set(given.values())) == 200
    finally:
        db.dispose()


def _contact_times() -> dict[str, Any]:
    return {"stage": "awareness", "stage_entered_at": NOW, "created_at": NOW, "updated_at": NOW}
