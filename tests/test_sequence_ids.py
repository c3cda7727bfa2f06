"""A flush of many new rows chooses their ids first (PostgreSQL: from the sequences; SQLite:
on from the largest) and inserts them without ``RETURNING`` (engine/sequence_ids.py); each
object gets the id of its own row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session, SQLModel, select

from engine.db import make_engine, transaction
from engine.models import Contact, Event
from engine.sequence_ids import MIN_ROWS
from tests.support import new_contact, statements

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    return str(request.getfixturevalue(name))


def _inserts(seen: list[str], table: str) -> list[str]:
    return [s for s in seen if s.lstrip().startswith(f"INSERT INTO {table} ")]


def test_many_new_rows_get_the_ids_of_their_own_rows(db_url: str) -> None:
    db = make_engine(db_url)
    SQLModel.metadata.create_all(db)
    try:
        # Given one contact already there, and twelve new ones with an event each, added in
        # an order that is not the order of their addresses
        with transaction(db) as session:
            session.add(new_contact("first@example.com", NOW))
        names = [f"c{n:02d}@example.com" for n in (5, 3, 11, 0, 7, 1, 9, 2, 10, 4, 8, 6)]
        with statements(db) as seen, transaction(db) as session:
            contacts = [new_contact(name, NOW) for name in names]
            session.add_all(contacts)
            session.flush()
            events = [
                Event(
                    contact_id=c.id,  # type: ignore[arg-type]
                    type="page.viewed",
                    properties={"who": c.email},
                    idempotency_key=f"k:{c.email}",
                    occurred_at=NOW,
                    received_at=NOW,
                )
                for c in contacts
            ]
            session.add_all(events)
        # Then ids follow the order they were added in, after the existing row's
        ids = [c.id for c in contacts]
        assert ids == sorted(ids) and len(set(ids)) == len(names) and ids[0] > 1  # type: ignore[type-var]
        # and every object's id is its own row's
        with Session(db) as session:
            stored = {c.id: c.email for c in session.exec(select(Contact)).all()}
            stored_events = {e.id: e.properties["who"] for e in session.exec(select(Event)).all()}
        assert {c.id: c.email for c in contacts}.items() <= stored.items()
        assert {e.id: e.properties["who"] for e in events} == stored_events
        contact_inserts = _inserts(seen, "contacts")
        if db_url.startswith("postgresql"):
            # one short single-row statement with the drawn id, run for every row
            # (an executemany), not a multi-row VALUES ... RETURNING
            assert len(contact_inserts) == 1
            assert "RETURNING" not in contact_inserts[0] and "%(id)s" in contact_inserts[0]
            assert contact_inserts[0].count("%(email)s") == 1
            assert len([s for s in seen if "nextval" in s]) == 2  # contacts, then events
        else:
            # numbered on from the table's largest id (SQLite's own choice), the same
            # single-row statement run for every row
            assert len(contact_inserts) == 1
            columns = len(Contact.__table__.columns)  # type: ignore[attr-defined]
            assert "RETURNING" not in contact_inserts[0]
            assert contact_inserts[0].count("?") == columns  # a single row's placeholders
            assert len([s for s in seen if "max(contacts.id)" in s]) == 1
    finally:
        db.dispose()


def test_a_few_new_rows_or_chosen_ids_go_the_usual_way(db_url: str) -> None:
    db = make_engine(db_url)
    SQLModel.metadata.create_all(db)
    try:
        with statements(db) as seen, transaction(db) as session:
            few = [new_contact(f"few{n}@example.com", NOW) for n in range(MIN_ROWS - 1)]
            session.add_all(few)
        assert not [s for s in seen if "nextval" in s]
        assert all(c.id is not None for c in few)
        with transaction(db) as session:
            chosen = [new_contact(f"chosen{n}@example.com", NOW) for n in range(MIN_ROWS + 1)]
            for n, c in enumerate(chosen):
                c.id = 1000 + n
            session.add_all(chosen)
        assert [c.id for c in chosen] == [1000 + n for n in range(MIN_ROWS + 1)]
        with Session(db) as session:
            row = session.get(Contact, 1002)
            assert row is not None and row.email == "chosen2@example.com"
    finally:
        db.dispose()


def test_a_sqlite_engine_that_does_not_serialise_writers_is_left_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlmodel import create_engine

    db = create_engine(f"sqlite:///{tmp_path}/plain.db")  # not make_engine: no BEGIN IMMEDIATE
    SQLModel.metadata.create_all(db)
    try:
        with statements(db) as seen, Session(db) as session:
            session.add_all(new_contact(f"p{n}@example.com", NOW) for n in range(MIN_ROWS + 2))
            session.commit()
        assert not [s for s in seen if "max(contacts.id)" in s]
        with Session(db) as session:
            assert len(session.exec(select(Contact)).all()) == MIN_ROWS + 2
    finally:
        db.dispose()
