"""The reads that run for every batch find their rows through an index led by the contact,
on SQLite with no statistics (a fresh database, as every simulation and embedded install
starts): not through a status index, which would read every sent action, every live
enrollment or every event of the table (migration 0005). The scheduler's reads start at the
due end of their indexes (migration 0006)."""

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
from engine.scheduler import _statements
from engine.virtual_time import _NEXT_WAKE_AND_RETRY

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
CONTACTS = [3, 5, 8]


def _plan(tmp_path: Path, statement: Any, params: dict[str, Any] | None = None) -> str:
    """SQLite's plan for ``statement``: its values inlined, or bound from ``params`` (a
    statement that writes cannot take ``.params()``)."""
    db = make_engine(f"sqlite:///{tmp_path}/plans.db")
    SQLModel.metadata.create_all(db)
    literal = params is None
    compiled = statement.compile(
        dialect=sqlite.dialect(),
        compile_kwargs={"literal_binds": literal, "render_postcompile": True},
    )
    bound = {} if literal else compiled.construct_params(params)
    # In the statement's order; str() turns a StrEnum into the text the driver can bind.
    values = tuple(
        str(v) if isinstance(v, str) else v for v in map(bound.get, compiled.positiontup or ())
    )
    try:
        with db.connect() as connection:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
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


def test_a_scheduler_pass_reads_the_due_enrollments_from_the_due_index_alone(
    tmp_path: Path,
) -> None:
    statement = _statements("sqlite", 500).claim_enrollments
    plan = _plan(tmp_path, statement, {"now": "2026-01-01 00:00:00", "until": "2026-01-01"})
    assert (
        "SEARCH enrollments USING COVERING INDEX ix_enrollments_due (status=? AND wake_at<?)"
        in plan
    )
    assert "SEARCH enrollment_claims USING INTEGER PRIMARY KEY" in plan


def test_the_next_wake_up_reads_from_the_start_of_the_due_index_and_the_claims(
    tmp_path: Path,
) -> None:
    # Not every waiting enrollment with its claim looked up: the claims, each with its
    # enrollment (the cost follows the claims in flight).
    plan = _plan(tmp_path, _NEXT_WAKE_AND_RETRY)
    assert "ix_enrollments_due (status=? AND wake_at>?)" in plan
    assert "SEARCH enrollment_claims USING INDEX ix_enrollment_claims_until" in plan
    assert "SEARCH enrollments USING INTEGER PRIMARY KEY (rowid=?)" in plan
    assert "COVERING INDEX ix_enrollments_due (status=?)" not in plan
