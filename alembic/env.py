"""Alembic environment for Journeyline.

The database URL comes from, in order: ``-x url=...`` on the command line, the
``sqlalchemy.url`` option set by the caller (``engine.migrations`` does this), then
``Settings().database_url`` (``JOURNEYLINE_DATABASE_URL`` or ``.env``).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

import engine.models  # noqa: F401  (registers every table on the metadata)
from engine.db import UTCDateTime
from engine.models import metadata
from engine.settings import Settings

config = context.config

# Called from Python (engine.migrations), the host application owns logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    return url or Settings().database_url


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our own column types as importable expressions in revision scripts."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import engine.db")
        return "engine.db.UTCDateTime()"
    return False


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_item=render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    # PostgreSQL: each revision commits on its own, so the locks a revision takes (an
    # index build, a column added) go at its end, not when the last of several pending
    # revisions is done: a long upgrade held every table it touched for its whole length
    # and deadlocked with live workers. (SQLite runs the whole upgrade as one transaction:
    # engine/migrations.py.)
    configure(
        connection=connection,
        transaction_per_migration=connection.dialect.name == "postgresql",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        run_online(given)
        return
    # A plain engine, not engine.db.make_engine: with SQLite's foreign_keys=ON, the table
    # rebuilds of batch mode would cascade deletes into child tables.
    db = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with db.connect() as connection:
            run_online(connection)
    finally:
        db.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
