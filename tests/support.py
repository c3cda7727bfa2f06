"""Builders shared by the tests: a runtime on a given database with a recording connector."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, pool, text
from sqlmodel import Session, SQLModel, select

from connectors import RecordingEmailConnector
from engine import Settings, VirtualClock, migrations
from engine.db import make_engine
from engine.models import Action, Contact, Enrollment, Event, StageTransition
from engine.runtime import Runtime


def make_runtime(
    database_url: str,
    *,
    broker_url: str = "stub://",
    create_schema: bool = True,
    clock: VirtualClock | None = None,
    **settings: object,
) -> tuple[Runtime, VirtualClock, RecordingEmailConnector]:
    db = make_engine(database_url)
    if create_schema:
        SQLModel.metadata.create_all(db)
    # The outboxes (email, CRM steps) write files: beside the test's database, or in a
    # folder of its own, never in the working directory (they were left in the checkout).
    settings.setdefault("outbox_dir", _scratch_outbox(database_url))
    clock = clock or VirtualClock()
    email = RecordingEmailConnector()
    runtime = Runtime(
        Settings(database_url=database_url, broker_url=broker_url, **settings),  # type: ignore[arg-type]
        clock=clock,
        email=email,
        db=db,
    )
    return runtime, clock, email


def _scratch_outbox(database_url: str) -> Path:
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        return Path(database_url.removeprefix("sqlite:///")).parent / "outbox"
    return Path(tempfile.mkdtemp(prefix="journeyline-test-outbox-"))


def new_contact(email: str, at: datetime) -> Contact:
    """A transient contact in awareness since ``at``, for tests that write rows directly."""
    return Contact(
        email=email, stage="awareness", stage_entered_at=at, created_at=at, updated_at=at
    )


def contact(runtime: Runtime, email: str) -> Contact:
    with Session(runtime.db) as session:
        return session.exec(select(Contact).where(Contact.email == email)).one()


def rows(runtime: Runtime, model: type) -> list:
    with Session(runtime.db) as session:
        return list(session.exec(select(model).order_by(model.id)).all())


def events(runtime: Runtime) -> list[Event]:
    return rows(runtime, Event)


def actions(runtime: Runtime) -> list[Action]:
    return rows(runtime, Action)


def enrollments(runtime: Runtime) -> list[Enrollment]:
    return rows(runtime, Enrollment)


def transitions(runtime: Runtime) -> list[StageTransition]:
    return rows(runtime, StageTransition)


def mark_migrated(conn: Any) -> None:
    """Record the newest revision in tables ``create_all`` just built (from the models, so
    at the head): ``journeyline worker`` refuses a database that was never migrated."""
    conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) "
                      "NOT NULL PRIMARY KEY)"))  # fmt: skip
    conn.execute(text("DELETE FROM alembic_version"))
    conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": migrations.head()})


def reset_postgres(url: str, *, create_tables: bool) -> None:
    """Drop every table (and Alembic's bookkeeping) in ``url``; create them anew, at the
    newest revision, if asked."""
    db = create_engine(url, poolclass=pool.NullPool)
    try:
        with db.begin() as conn:
            # A connection a previous test leaked would block DROP forever; fail instead.
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            SQLModel.metadata.drop_all(conn)
            if create_tables:
                SQLModel.metadata.create_all(conn)
                mark_migrated(conn)
    finally:
        db.dispose()


def stop_processes(processes: list[subprocess.Popen[str]]) -> list[str]:
    """Terminate each process (kill it after 30 s) and return what it printed."""
    outputs = []
    for process in processes:
        process.terminate()
        try:
            outputs.append(process.communicate(timeout=30)[0])
        except subprocess.TimeoutExpired:
            process.kill()
            outputs.append(process.communicate()[0])
    return outputs


@contextmanager
def statements(db: Engine) -> Iterator[list[str]]:
    """Every SQL statement ``db`` runs inside the block, in order (BEGIN included)."""
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(db, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db, "before_cursor_execute", note)
