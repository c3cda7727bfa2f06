"""Run Alembic migrations from Python: ``upgrade``, ``downgrade``, ``current``, ``check``,
``stamp``; and ``schema_problem``, what a database's revision means for this code.

Alembic owns the schema. Its scripts live in ``alembic/`` beside ``alembic.ini`` at the
repository root (the parent of the ``engine`` package), so these helpers work from a
checkout or an editable install, not from a wheel.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool, text

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


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` up to ``revision`` (default: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    command.downgrade(alembic_config(database_url), revision)


def stamp(database_url: str, revision: str = "head") -> None:
    """Record ``revision`` as the database's without running anything (tests that built
    the tables with ``create_all``)."""
    command.stamp(alembic_config(database_url), revision)


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
