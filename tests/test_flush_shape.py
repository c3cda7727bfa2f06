"""Changed rows of a table go in one UPDATE statement run for every row, whichever columns
each one changed (engine/flush_shape.py), and each row keeps exactly its own values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, SQLModel, select

from engine.db import make_engine, transaction
from engine.models import Contact
from tests.support import new_contact, statements

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    return str(request.getfixturevalue(name))


def test_contacts_changed_in_different_ways_are_written_by_one_statement(db_url: str) -> None:
    db = make_engine(db_url)
    SQLModel.metadata.create_all(db)
    try:
        with transaction(db) as session:
            session.add_all(new_contact(f"c{n}@example.com", NOW) for n in range(6))
        later = NOW + timedelta(hours=1)
        # Given six contacts, each changed in its own way (one not at all)
        with statements(db) as seen, transaction(db) as session:
            c = session.exec(select(Contact).order_by(Contact.id)).all()
            c[0].score = 5
            c[1].stage, c[1].stage_entered_at = "consideration", later
            c[2].version += 1
            c[3].score, c[3].updated_at = 7, later
            c[4].attributes = {"plan": "pro"}
        updates = [s for s in seen if s.lstrip().startswith("UPDATE contacts")]
        # Then one statement wrote them (an executemany), and each has its own values
        assert len(updates) == 1
        with Session(db) as session:
            got = {
                x.email: (
                    x.score,
                    x.stage,
                    x.stage_entered_at,
                    x.version,
                    x.updated_at,
                    x.attributes,
                )
                for x in session.exec(select(Contact)).all()
            }
        assert got == {
            "c0@example.com": (5, "awareness", NOW, 1, NOW, {}),
            "c1@example.com": (0, "consideration", later, 1, NOW, {}),
            "c2@example.com": (0, "awareness", NOW, 2, NOW, {}),
            "c3@example.com": (7, "awareness", NOW, 1, later, {}),
            "c4@example.com": (0, "awareness", NOW, 1, NOW, {"plan": "pro"}),
            "c5@example.com": (0, "awareness", NOW, 1, NOW, {}),
        }
    finally:
        db.dispose()
