"""The reads that run for every batch find their rows through an index led by the contact,
on SQLite with no statistics (a fresh database, as every simulation and embedded install
starts): not through a status index, which would read every sent action, every live
enrollment or every event of the table (migration 0005)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite
from sqlmodel import SQLModel

from engine.db import make_engine
from engine.guardrails import _history_statement
from engine.known_enrollments import _load_statements
from engine.known_events import _statement

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
CONTACTS = [3, 5, 8]


def _plan(tmp_path: Path, statement: Any) -> str:
    db = make_engine(f"sqlite:///{tmp_path}/plans.db")
    SQLModel.metadata.create_all(db)
    sql = str(
        statement.compile(
            dialect=sqlite.dialect(),
            compile_kwargs={"literal_binds": True, "render_postcompile": True},
        )
    )
    try:
        with db.connect() as connection:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    finally:
        db.dispose()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("capped", [True, False])
def test_the_guard_rails_history_reads_a_contacts_actions_by_contact(
    tmp_path: Path, capped: bool
) -> None:
    params: dict[str, Any] = {"contact_ids": CONTACTS}
    if capped:
        params["sent_since"] = SINCE
    plan = _plan(
        tmp_path, _history_statement("sqlite", capped=capped, excluding=False).params(**params)
    )
    assert "ix_actions_contact_kind_status (contact_id=? AND kind=?" in plan
    assert "ix_actions_due" not in plan


def test_a_conditions_past_events_are_read_by_contact_type_and_time(tmp_path: Path) -> None:
    statement = _statement("sqlite", "occurred_at").params(
        contact_ids=CONTACTS, types=["trial.started"], since=SINCE
    )
    plan = _plan(tmp_path, statement)
    assert "ix_events_contact_type (contact_id=? AND type=? AND occurred_at>?)" in plan


def test_a_batchs_live_enrollments_are_read_by_contact_and_status(tmp_path: Path) -> None:
    plan = _plan(tmp_path, _load_statements("sqlite")[0].params(contact_ids=CONTACTS))
    assert "ix_enrollments_contact_status (contact_id=? AND status=?)" in plan
    assert "ix_enrollments_due" not in plan
