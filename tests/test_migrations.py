"""Alembic builds exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from pprint import pformat

import pytest
from sqlalchemy import create_engine, inspect, pool

from engine import migrations
from engine.errors import ConfigurationError
from engine.models import metadata
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
