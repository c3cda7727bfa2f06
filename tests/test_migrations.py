"""Alembic builds exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from pprint import pformat

import pytest
from sqlalchemy import create_engine, insert, inspect, pool, select, text

from bench.services import contact_row
from engine import migrations
from engine.db import make_engine
from engine.errors import ConfigurationError
from engine.models import Contact, Enrollment, metadata
from engine.scheduler import claim_due
from tests.support import reset_postgres


def table_names(url: str) -> set[str]:
    db = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(db).get_table_names())
    finally:
        db.dispose()


def assert_matches_models(url: str) -> None:
    diff = migrations.check(url)
    assert diff == [], "migrations and models disagree; add a revision:\n" + pformat(diff)


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/migrated.db"


@pytest.fixture
def empty_pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database with our tables and Alembic's bookkeeping gone."""
    reset_postgres(postgres_url, create_tables=False)
    return postgres_url


def test_sqlite_upgrade_matches_models(empty_sqlite_url: str) -> None:
    # Given an empty SQLite database
    assert migrations.current(empty_sqlite_url) is None
    # When it is migrated to head
    migrations.upgrade(empty_sqlite_url)
    # Then it is at the newest revision and autogenerate finds nothing to add
    assert migrations.current(empty_sqlite_url) == migrations.head()
    assert set(metadata.tables) <= table_names(empty_sqlite_url)
    assert_matches_models(empty_sqlite_url)


def test_sqlite_downgrade_to_base_then_upgrade(empty_sqlite_url: str) -> None:
    # Given a migrated database
    migrations.upgrade(empty_sqlite_url)
    # When it is taken down to base
    migrations.downgrade(empty_sqlite_url, "base")
    # Then no table of ours is left, and migrating up again rebuilds the same schema
    assert migrations.current(empty_sqlite_url) is None
    assert not set(metadata.tables) & table_names(empty_sqlite_url)
    migrations.upgrade(empty_sqlite_url)
    assert migrations.current(empty_sqlite_url) == migrations.head()
    assert_matches_models(empty_sqlite_url)


@pytest.mark.postgres
def test_postgres_upgrade_matches_models(empty_pg_url: str) -> None:
    migrations.upgrade(empty_pg_url)
    assert migrations.current(empty_pg_url) == migrations.head()
    assert_matches_models(empty_pg_url)


@pytest.mark.postgres
def test_postgres_downgrade_to_base_then_upgrade(empty_pg_url: str) -> None:
    migrations.upgrade(empty_pg_url)
    migrations.downgrade(empty_pg_url, "base")
    assert not set(metadata.tables) & table_names(empty_pg_url)
    migrations.upgrade(empty_pg_url)
    assert_matches_models(empty_pg_url)


def test_missing_scripts_folder_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "ROOT", tmp_path)
    with pytest.raises(ConfigurationError, match="Alembic migrations not found"):
        migrations.upgrade(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_0006_keeps_waiting_enrollments_and_the_scheduler_hands_them_out(
    database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("empty_sqlite_url" if database == "sqlite" else "empty_pg_url")
    # Given a database at 0005 with a waiting enrollment that a pass had claimed
    migrations.upgrade(url, "0005")
    wake = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    db = make_engine(url)
    try:
        with db.begin() as conn:
            contact_id = conn.execute(
                insert(Contact)
                .values(**contact_row("kept@example.com", now=wake))
                .returning(Contact.id)
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO enrollments (contact_id, workflow, version, entry, status,"
                    " position, wake_at, claimed_until, context, started_at, updated_at)"
                    " VALUES (:contact, 'nurture', '1', 1, 'waiting', 2, :wake, :claimed, '{}',"
                    " :wake, :wake)"
                ),
                {
                    "contact": contact_id,
                    "wake": wake.replace(tzinfo=None),
                    "claimed": (wake + timedelta(minutes=5)).replace(tzinfo=None),
                },
            )
        # When it is upgraded to head
        migrations.upgrade(url)
        assert_matches_models(url)
        # Then the enrollment is as it was, and the first pass hands it out
        with db.connect() as conn:
            (row,) = conn.execute(select(Enrollment)).all()
        assert (row.status, row.position, row.wake_at) == ("waiting", 2, wake)
        due = claim_due(
            db, now=wake + timedelta(minutes=1), lease=timedelta(minutes=5), batch_size=10
        )
        assert due.enrollments == [row.id]
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_0010_copies_each_hubspot_link_into_an_indexed_column(
    database: str, request: pytest.FixtureRequest
) -> None:
    """Every HubSpot webhook event looks its contact up by the object id: it was a scan of
    the JSON of every contact; now an index."""
    url = request.getfixturevalue("empty_sqlite_url" if database == "sqlite" else "empty_pg_url")
    # Given a database at 0009 with a contact linked to HubSpot object 501, and one not
    migrations.upgrade(url, "0009")
    now = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    db = make_engine(url)
    try:
        with db.begin() as conn:
            for email, external in (("linked@example.com", {"hubspot": "501"}), ("n@x.io", {})):
                conn.execute(
                    insert(Contact.__table__).values(  # type: ignore[attr-defined]
                        **{**contact_row(email, now=now), "external_ids": external}
                    )
                )
        # When it is upgraded
        migrations.upgrade(url)
        assert_matches_models(url)
        # Then the link is in the column, and a lookup by it is an index search
        with db.connect() as conn:
            linked = conn.execute(
                select(Contact.email).where(Contact.hubspot_id == "501")
            ).scalar_one()
            assert linked == "linked@example.com"
            if database == "sqlite":
                plan = conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE hubspot_id = '501'"
                ).all()
                assert "ix_contacts_hubspot_id" in str(plan)
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")  # a table of two rows
                plan = conn.exec_driver_sql(
                    "EXPLAIN SELECT id FROM contacts WHERE hubspot_id = '501'"
                ).all()
                assert "ix_contacts_hubspot_id" in str(plan)
    finally:
        db.dispose()
