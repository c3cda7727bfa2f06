"""new_row builds the row the model's constructor would, and the database gets the same."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.db import make_engine
from engine.models import Action, Enrollment, StageTransition, metadata
from engine.new_rows import new_row
from tests.support import new_contact

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _action_values(contact_id: int, key: str) -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "kind": "email",
        "payload": {"template": "welcome"},
        "idempotency_key": key,
        "reason": {"workflow": "welcome", "step": "hello"},
        "next_attempt_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Action, _action_values(1, "a")),
        (
            Enrollment,
            {
                "contact_id": 1,
                "workflow": "welcome",
                "version": "v1",
                "started_at": NOW,
                "updated_at": NOW,
            },
        ),
        (
            StageTransition,
            {
                "contact_id": 1,
                "from_stage": "",
                "to_stage": "awareness",
                "trigger": "created",
                "at": NOW,
            },
        ),
    ],
)
def test_a_new_row_is_the_object_the_constructor_builds(cls: Any, values: dict[str, Any]) -> None:
    fast, slow = new_row(cls, **values), cls(**values)
    assert type(fast) is cls
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_fields_set == slow.model_fields_set
    assert set(fast.__dict__) == set(slow.__dict__)


def test_defaults_made_per_row_are_not_shared() -> None:
    one = new_row(Enrollment, contact_id=1, workflow="w", version="v", started_at=NOW,
                  updated_at=NOW)  # fmt: skip
    two = new_row(Enrollment, contact_id=2, workflow="w", version="v", started_at=NOW,
                  updated_at=NOW)  # fmt: skip
    one.context["trail"] = ["x"]
    assert two.context == {}


def test_unknown_or_missing_fields_are_errors_not_silent_nulls() -> None:
    with pytest.raises(TypeError, match="has no field colour"):
        new_row(Action, colour="red", **_action_values(1, "a"))
    values = _action_values(1, "a")
    del values["idempotency_key"]
    with pytest.raises(TypeError, match="needs idempotency_key"):
        new_row(Action, **values)


def test_the_database_gets_the_same_columns_from_both(tmp_path: Any) -> None:
    db = make_engine(f"sqlite:///{tmp_path}/rows.db")
    metadata.create_all(db)
    with Session(db) as session:
        contact = new_contact("ana@example.com", NOW)
        session.add(contact)
        session.flush()
        assert contact.id is not None
        fast = new_row(Action, **_action_values(contact.id, "fast"))
        slow = Action(**_action_values(contact.id, "slow"))
        session.add_all([fast, slow])
        session.commit()
        assert fast.id is not None and slow.id is not None
    with db.connect() as conn:
        table: Any = Action.__table__
        rows = {r.idempotency_key: r._asdict() for r in conn.execute(select(table))}
    for row in rows.values():
        del row["id"], row["idempotency_key"]
    assert rows["fast"] == rows["slow"]
    assert rows["fast"]["status"] == "pending" and rows["fast"]["attempts"] == 0


def test_a_new_row_can_be_changed_before_anything_else_touched_the_mappers() -> None:
    """The constructor configures SQLAlchemy's mappers on first use; new_row must too."""
    code = (
        "from datetime import UTC, datetime\n"
        "from engine.models import Enrollment\n"
        "from engine.new_rows import new_row\n"
        "now = datetime.now(UTC)\n"
        "row = new_row(Enrollment, contact_id=1, workflow='w', version='v', started_at=now,"
        " updated_at=now)\n"
        "row.status = 'waiting'\n"
        "print(row.status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "waiting"
