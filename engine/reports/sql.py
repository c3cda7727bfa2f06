"""The few expressions a report needs that SQLite and PostgreSQL spell differently.

Everything else in the reports is portable SQLAlchemy (``GROUP BY``, ``COUNT(DISTINCT)``,
window functions, ``column["key"].as_string()`` for JSON). Expressions that hold a JSON
path are grouped on through a subquery's column, never repeated in ``GROUP BY``: PostgreSQL
would see each repetition's key as a parameter of its own, and so as another expression.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, extract, func, type_coerce
from sqlmodel import Session

STREAM = {"yield_per": 2000}
"""Execution options of a query whose rows Python walks: fetched in pages, never all."""


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def days_between(session: Session, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in days, as a number."""
    name = dialect(session)
    if name == "sqlite":
        return type_coerce(func.julianday(end) - func.julianday(start), Float)
    if name == "postgresql":
        return type_coerce(extract("epoch", end - start) / 86400, Float)
    raise NotImplementedError(f"reports support SQLite and PostgreSQL, not {name}")


def is_json_number(session: Session, column: Any, key: str) -> ColumnElement[bool]:
    """``column[key]`` (a JSON object's member) is a number: as the event rules read a
    score, not a string of digits or a boolean (which SQLite would give as 1)."""
    name = dialect(session)
    if name == "sqlite":
        return func.json_type(column, f'$."{key}"').in_(("integer", "real"))
    if name == "postgresql":
        return func.json_typeof(column[key]) == "number"
    raise NotImplementedError(f"reports support SQLite and PostgreSQL, not {name}")
