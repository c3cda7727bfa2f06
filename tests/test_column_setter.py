"""ColumnsSetFast: a column assignment is tracked like SQLModel's, without pydantic's copy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect
from sqlmodel import Session, select

from engine.db import make_engine
from engine.models import Contact, metadata
from tests.support import new_contact

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_a_column_assignment_is_saved_and_noted_as_set() -> None:
    db = make_engine("sqlite://")
    metadata.create_all(db)
    with Session(db) as session:
        contact = new_contact("ana@example.com", NOW)
        session.add(contact)
        session.commit()
        # When a loaded row's column is assigned
        contact.timezone = "Europe/Madrid"
        # Then SQLAlchemy sees the change and pydantic notes the field as set
        assert inspect(contact).attrs.timezone.history.added == ["Europe/Madrid"]
        assert "timezone" in contact.model_fields_set
        session.commit()
    with Session(db) as session:
        again = session.exec(select(Contact)).one()
        assert again.timezone == "Europe/Madrid"
    db.dispose()


def test_a_name_that_is_no_column_goes_the_usual_way() -> None:
    contact = new_contact("ben@example.com", NOW)
    # An unknown name is refused by pydantic, as without the fast setter
    with pytest.raises(ValueError, match='has no field "colour"'):
        contact.colour = "red"  # type: ignore[attr-defined]
