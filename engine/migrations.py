"""Run Alembic migrations from Python: ``upgrade``, ``downgrade``, ``current``, ``check``,
``stamp``; and ``schema_problem``, what a database's revision means for this code.

``upgrade``, ``downgrade`` and ``stamp`` run one at a time per database, and on SQLite as
one transaction (see ``_migrating``): two deploys migrating at once, or a migration cut
short, leave the database at one revision or the other, never between.

Alembic owns the schema. Its scripts live in ``alembic/`` beside ``alembic.ini`` at the
repository root (the parent of the ``engine`` package), so these helpers work from a
checkout or an editable install, not from a wheel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, event, make_url, pool, text
from sqlalchemy.exc import ArgumentError

from engine.db import make_engine
from engine.errors import ConfigurationError
from engine.models import metadata

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: holds ``alembic.ini`` and the ``alembic/`` scripts folder."""


def alembic_config(database_url: str) -> Config:
    """An Alembic ``Config`` pointing at our scripts and at ``database_url``."""
    ini = ROOT / "alembic.ini"
    scripts = ROOT / "alembic"
    if not ini.is_file() or not (scripts / "env.py").is_file():
        raise ConfigurationError(
            f"Alembic migrations not found: expected {ini} and {scripts}/env.py. "
            "Run Journeyline from a source checkout (pip install -e .) to migrate."
        )
    config = Config(str(ini))
    config.set_main_option("script_location", str(scripts))
    # ConfigParser interpolates '%': escape it, e.g. for a URL-encoded password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # The calling application owns logging; env.py leaves it alone.
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Migrate the database at ``database_url`` up to ``revision`` (default: the newest);
    the revision it was at when this run's turn came (None: an empty schema). A run that
    waited for another's upgrade finds that one's revision, not the one before it."""
    return _migrating(database_url, lambda config: command.upgrade(config, revision))


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    _migrating(database_url, lambda config: command.downgrade(config, revision))


def stamp(database_url: str, revision: str = "head") -> None:
    """Record ``revision`` as the database's without running anything (tests that built
    the tables with ``create_all``)."""
    _migrating(database_url, lambda config: command.stamp(config, revision))


MIGRATION_LOCK = 0x4A4C_4D49_4752  # "JLMIGR": PostgreSQL's advisory lock key for migrating
"""Held for the whole of an upgrade, downgrade or stamp on PostgreSQL."""

SQLITE_BUSY_SECONDS = 30
"""How long a migration of a SQLite file waits for a writer (a worker's transaction) to
finish, as the engine's own connections do, instead of the driver's 5 s."""


def _migrating(database_url: str, operation: Callable[[Config], None]) -> str | None:
    """Run an Alembic ``operation`` on one connection of our own:

    - PostgreSQL: under a session advisory lock. Two deploys running ``journeyline db
      upgrade`` at once both read the old revision and ran the same DDL; the second failed
      with a traceback (``relation "alembic_version" already exists``, ``column ... already
      exists``). The second now waits for the first, then finds nothing left to do.
    - SQLite: in one ``BEGIN IMMEDIATE`` transaction. The driver commits each DDL statement
      on its own, so a migration cut short (killed, ``database is locked`` behind a worker)
      left a revision half applied (a column added, the revision not recorded) and every
      later upgrade failed (``duplicate column name``) until the file was repaired by hand.
      Now it is all or nothing, and a concurrent migration waits for it.
    """
    config = alembic_config(database_url)
    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend not in ("postgresql", "sqlite"):
        before = current(database_url)
        operation(config)  # env.py opens its own connection
        return before
    with _connection(database_url, sqlite=backend == "sqlite") as connection:
        config.attributes["connection"] = connection
        if backend == "sqlite":
            with connection.begin():  # BEGIN IMMEDIATE: Alembic runs inside it, commits nothing
                before = MigrationContext.configure(connection).get_current_revision()
                operation(config)
            return before
        # The lock is the session's (it outlives the commit; Alembic runs its own
        # transaction), and goes with the connection if the migration fails.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        before = MigrationContext.configure(connection).get_current_revision()
        connection.commit()
        operation(config)
        connection.commit()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
        return before


@contextmanager
def _connection(database_url: str, *, sqlite: bool) -> Iterator[Connection]:
    """A connection to migrate with. Not ``make_engine``'s: SQLite's ``foreign_keys=ON``
    would cascade the deletes of batch mode's table rebuilds into child tables (env.py)."""
    if not sqlite:
        db = make_engine(database_url, poolclass=pool.NullPool)
    else:
        db = create_engine(
            database_url,
            poolclass=pool.NullPool,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
        )

        @event.listens_for(db, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are ours alone (the driver commits DDL on its own otherwise).
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA foreign_keys=OFF")

        @event.listens_for(db, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with db.connect() as connection:
            yield connection
    finally:
        db.dispose()


def head() -> str:
    """The newest revision in ``alembic/versions`` (there must be exactly one head)."""
    return _scripts()[0]


@functools.cache
def _scripts() -> tuple[str, frozenset[str]]:
    """The head and every revision of ``alembic/versions``: read once per process."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = scripts.get_heads()
    if len(heads) != 1:
        raise ConfigurationError(f"migrations have {len(heads)} heads {heads}: merge them")
    return str(heads[0]), frozenset(str(script.revision) for script in scripts.walk_revisions())


REVISION_QUERY = text("SELECT version_num FROM alembic_version")
"""The database's revision, in one query (``schema_problem`` says what it means)."""


def schema_problem(found: Sequence[str]) -> str | None:
    """What is wrong for this code with a database whose ``alembic_version`` holds
    ``found`` (``REVISION_QUERY``), or None when nothing is:

    - at the head: nothing;
    - empty: never migrated;
    - a revision of ours other than the head: older than this version;
    - a revision we do not know: a newer version migrated it first, as a rolling deploy
      does; nothing, for this process keeps serving until it is replaced (migrations add
      before they take away).
    """
    newest, known = _scripts()
    revisions = sorted(set(found))
    if revisions == [newest]:
        return None
    if not revisions:
        return "the database was never migrated: run journeyline db upgrade"
    if all(revision in known for revision in revisions):
        return (
            f"the database schema ({', '.join(revisions)}) is older than this version "
            f"({newest}): run journeyline db upgrade"
        )
    return None


def current(database_url: str) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated. (Through
    ``make_engine``: a host that does not answer fails in its connect timeout.)"""
    db = make_engine(database_url, poolclass=pool.NullPool)
    try:
        with db.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        db.dispose()


def check(database_url: str) -> list[Any]:
    """Differences between the models and the database, as Alembic autogenerate sees them.

    Run ``upgrade`` first: an empty list then means the migrations build exactly the schema
    the models describe; anything else needs a new revision.
    """
    db = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with db.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        db.dispose()
