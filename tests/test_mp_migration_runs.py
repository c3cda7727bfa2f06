"""A schema migration is all or nothing, and one at a time.

On SQLite the driver commits each DDL statement on its own, so a migration cut short (a
killed process, ``database is locked`` behind a worker) left a revision half applied and
every later ``journeyline db upgrade`` failed. On PostgreSQL two deploys migrating at once
both read the old revision and ran the same DDL: the second crashed with a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, pool
from sqlalchemy.engine import Engine

from engine import migrations
from tests.support import reset_postgres
from tests.test_migration_race import waits_on_a_lock


def columns(url: str, table: str) -> set[str]:
    db = create_engine(url, poolclass=pool.NullPool)
    try:
        return {column["name"] for column in inspect(db).get_columns(table)}
    finally:
        db.dispose()


@contextmanager
def on_statement(
    starting: str, do: Any, *, thread: threading.Thread | None = None
) -> Iterator[None]:
    """Call ``do()`` before the first statement that starts with ``starting`` (in
    ``thread`` only, if given) on any engine."""
    seen: list[str] = []

    def before(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if thread is not None and threading.current_thread() is not thread:
            return
        if statement.lstrip().startswith(starting) and not seen:
            seen.append(statement)
            do()

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def test_a_sqlite_migration_cut_short_leaves_the_file_at_the_old_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/journeyline.db"
    # Given a file at 0009
    migrations.upgrade(url, "0009")

    def killed() -> None:
        raise RuntimeError("the process stopped here")

    # When its upgrade stops after 0010 added its column, before the index
    with (
        on_statement("CREATE INDEX ix_contacts_hubspot_id", killed),
        pytest.raises(RuntimeError, match="stopped here"),
    ):
        migrations.upgrade(url)
    # Then nothing of 0010 is left: the file is at 0009 as it was
    assert migrations.current(url) == "0009"
    assert "hubspot_id" not in columns(url, "contacts")
    # And the next upgrade goes through
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    assert migrations.check(url) == []


@pytest.mark.postgres
def test_two_upgrades_at_once_on_postgres_both_succeed(postgres_url: str) -> None:
    reset_postgres(postgres_url, create_tables=False)
    failures: list[BaseException] = []
    release = threading.Event()

    def upgrade() -> None:
        try:
            migrations.upgrade(postgres_url)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    first = threading.Thread(target=upgrade)
    second = threading.Thread(target=upgrade)
    # Given a deploy's upgrade of an empty database is under way (held at 0001's first table)
    with on_statement("CREATE TABLE contacts", lambda: release.wait(30), thread=first):
        first.start()
        # When a second deploy runs its upgrade meanwhile
        second.start()
        watcher = create_engine(postgres_url, poolclass=pool.NullPool)
        try:
            second_waited = waits_on_a_lock(watcher)
        finally:
            watcher.dispose()
        release.set()
        first.join(timeout=60)
        second.join(timeout=60)
    # Then neither fails: the second waited for the first and found nothing left to do
    assert not first.is_alive() and not second.is_alive()
    assert failures == [], failures
    assert second_waited, "the second upgrade did not wait for the first"
    assert migrations.current(postgres_url) == migrations.head()
    assert migrations.check(postgres_url) == []


def test_on_postgres_each_revision_commits_on_its_own(postgres_url: str) -> None:
    # Given a database at 0008, where 0010 will fail (its column is there already)
    reset_postgres(postgres_url, create_tables=False)
    migrations.upgrade(postgres_url, "0008")
    db = create_engine(postgres_url, poolclass=pool.NullPool)
    try:
        with db.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE contacts ADD COLUMN hubspot_id VARCHAR(64)")
        # When an upgrade to the newest runs 0009, then fails in 0010
        with pytest.raises(Exception, match="hubspot_id"):
            migrations.upgrade(postgres_url)
        # Then 0009 stays applied (its locks went when it committed, not at the very end)
        assert migrations.current(postgres_url) == "0009"
    finally:
        db.dispose()
        reset_postgres(postgres_url, create_tables=False)


def test_upgrade_says_the_revision_it_found_when_its_turn_came(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/journeyline.db"
    assert migrations.upgrade(url, "0008") is None  # an empty schema
    assert migrations.upgrade(url) == "0008"
    assert migrations.upgrade(url) == migrations.head()  # nothing left to do
