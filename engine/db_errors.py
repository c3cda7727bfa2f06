"""What a database error means to whoever must answer it: try again later, or migrate.

Two kinds matter to operators, and both are the database's state rather than a bug:

- **unavailable**: it cannot be reached or cannot serve now (refused or dropped
  connections, a server shutting down, a pool with no free connection, a lock or
  serialization conflict). The same request or pass may work in a moment: the HTTP API
  answers 503 with ``Retry-After``, the scheduler tries again next pass.
- **schema behind**: it answers, but a table or column this code uses is missing
  (PostgreSQL ``42P01`` / ``42703``, SQLite ``no such table`` / ``no such column``):
  ``journeyline db upgrade`` was not run for this version.

Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

SCHEMA_BEHIND_MESSAGE = "the database schema is older than this version: run journeyline db upgrade"

_MISSING_SCHEMA_STATES = {"42P01", "42703"}  # PostgreSQL: undefined table, undefined column
_MISSING_SCHEMA_SQLITE = re.compile(r"^(no such table|no such column|table \S+ has no column)")


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (or ``exc`` itself)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return orig if isinstance(orig, BaseException) else exc


def schema_behind(exc: BaseException) -> bool:
    """The database answered, but lacks a table or column this code uses."""
    driver = _driver_error(exc)
    if getattr(driver, "sqlstate", None) in _MISSING_SCHEMA_STATES:
        return True
    return isinstance(exc, DBAPIError) and bool(_MISSING_SCHEMA_SQLITE.match(one_line(driver)))


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or cannot serve now; trying again later may work."""
    if isinstance(exc, PoolTimeout):  # every pooled connection busy: overloaded, not broken
        return True
    if schema_behind(exc):  # SQLite says "no such table" with an OperationalError
        return False
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError)
    if _is_psycopg(exc):  # raised outside SQLAlchemy's wrapping (a pool event, a raw cursor)
        import psycopg

        return isinstance(exc, psycopg.OperationalError)
    return False


def contact_went_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is a row naming a contact that no longer exists (erased by another
    transaction between reading her id and writing the row)."""
    if not isinstance(exc, DBAPIError):
        return False
    text = str(exc.orig)
    return "_contact_id_fkey" in text or "FOREIGN KEY constraint failed" in text


def lock_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL choosing this transaction as a deadlock's victim (or a
    lock wait cut short): rolled back whole, it may simply be run again."""
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "55P03")


def describe_database_error(exc: BaseException) -> str:
    """The driver's error in one line, without SQL: ``OperationalError: connection failed:
    connection to server at "127.0.0.1", port 5433 failed: Connection refused``."""
    driver = _driver_error(exc)
    first = next((line for line in str(driver).splitlines() if line.strip()), "")
    return f"{type(driver).__name__}: {' '.join(first.split()).rstrip('.')}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _is_psycopg(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "psycopg"
