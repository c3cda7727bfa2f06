"""New rows' primary keys chosen before a flush, so their INSERT needs no RETURNING.

Left to itself, SQLAlchemy writes a flush's new rows of a table as one multi-row
``INSERT ... VALUES (...), (...) RETURNING id`` to learn their ids. For a job's hundred new
actions that statement has over a thousand parameters, and psycopg converts a statement
with more than 50 parameters from ``%(name)s`` placeholders to ``$n`` with a regular
expression on every execution (it caches only short statements): under the end-to-end
benchmark that parse was about a fifth of a worker's CPU. On SQLite the statement costs no
parse, but SQLAlchemy still builds the multi-row statement and matches each returned row
back to its object.

So before a flush that inserts at least ``MIN_ROWS`` rows of a table whose primary key is a
sequence-backed integer, the ids are chosen and set on the objects in the order they were
added. SQLAlchemy then needs no ``RETURNING``: one short single-row ``INSERT`` run for every
row (``executemany``: pipelined in one round trip by psycopg, a loop in C by sqlite3).

- PostgreSQL: drawn from the tables' sequences, for every such table in one statement. Ids
  drawn for a flush that then fails are gaps in the sequence, as a failed ``INSERT`` leaves.
- SQLite, when the engine serialises writers (``engine.db.make_engine`` opens every
  transaction with ``BEGIN IMMEDIATE``): the table's largest id plus one, two, ..., which is
  what SQLite itself would give (no ``AUTOINCREMENT``); no other writer can insert before
  this transaction ends. Any other SQLite engine is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from sqlalchemy import Integer, Table, event, func, inspect, select, text
from sqlalchemy.orm import InstanceState, UOWTransaction
from sqlalchemy.orm import Session as OrmSession

from engine.db_writers import serialises_writers

MIN_ROWS = 4
"""Fewer new rows than this go the usual way: the statement is short enough to be cached,
and drawing ids first would cost a round trip more."""

_SEQUENCES: dict[tuple[Any, str], str | None] = {}  # (database URL, table) -> its id sequence


@event.listens_for(OrmSession, "before_flush")
def _draw_ids(session: OrmSession, _flush: UOWTransaction, _instances: Any) -> None:
    if not session.new:
        return
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite" and not serialises_writers(connection.engine):
        return
    if dialect not in ("postgresql", "sqlite"):
        return
    wanted = _new_rows_by_table(session.new)
    wanted = {table: states for table, states in wanted.items() if len(states) >= MIN_ROWS}
    if not wanted:
        return
    if dialect == "sqlite":
        _after_largest(connection, wanted)
        return
    sequences = {table: _sequence(connection, table) for table in wanted}
    tables = sorted((t for t in wanted if sequences[t]), key=lambda t: t.fullname)
    if not tables:
        return
    columns = ", ".join(
        f"ARRAY(SELECT nextval(CAST(:seq{n} AS regclass)) FROM generate_series(1, :count{n}))"
        for n in range(len(tables))
    )
    params: dict[str, Any] = {}
    for n, table in enumerate(tables):
        params[f"seq{n}"] = sequences[table]
        params[f"count{n}"] = len(wanted[table])
    drawn = connection.execute(text(f"SELECT {columns}"), params).one()
    for table, ids in zip(tables, drawn, strict=True):
        states = sorted(wanted[table], key=_added_order)
        key = _key_attribute(states[0].mapper)
        for state, new_id in zip(states, sorted(ids), strict=True):
            setattr(state.obj(), key, new_id)  # type: ignore[arg-type]


def _after_largest(connection: Any, wanted: dict[Table, list[InstanceState[Any]]]) -> None:
    """SQLite: each table's new rows numbered on from its largest id, in the order added."""
    tables = tuple(sorted(wanted, key=lambda t: t.fullname))
    largest = connection.execute(_largest_ids(tables)).one()
    for table, top in zip(tables, largest, strict=True):
        states = sorted(wanted[table], key=_added_order)
        key = _key_attribute(states[0].mapper)
        for offset, state in enumerate(states, start=1):
            setattr(state.obj(), key, (top or 0) + offset)  # type: ignore[arg-type]


def _added_order(state: InstanceState[Any]) -> int:
    # ``Session.add`` numbers every pending object, and only pending objects come here.
    assert state.insert_order is not None
    return state.insert_order


@cache
def _largest_ids(tables: tuple[Table, ...]) -> Any:
    """Each table's largest id, in one statement (built once per set of tables)."""
    return select(*(select(func.max(_key_column(t))).scalar_subquery() for t in tables))


def _new_rows_by_table(objects: Iterable[Any]) -> dict[Table, list[InstanceState[Any]]]:
    found: dict[Table, list[InstanceState[Any]]] = {}
    for obj in objects:
        state: InstanceState[Any] = inspect(obj)
        key = _key_attribute(state.mapper)
        if key is None or state.dict.get(key) is not None:
            continue  # no sequence-backed key, or the caller chose its id
        found.setdefault(state.mapper.local_table, []).append(state)  # type: ignore[arg-type]
    return found


_KEYS: dict[Any, str | None] = {}  # mapper -> attribute of its sequence-backed key, or None


def _key_attribute(mapper: Any) -> str | None:
    """The attribute holding the mapper's lone sequence-backed integer key (once per mapper)."""
    if mapper not in _KEYS:
        table = mapper.local_table
        column = _key_column(table) if isinstance(table, Table) else None
        _KEYS[mapper] = None if column is None else mapper.get_property_by_column(column).key
    return _KEYS[mapper]


def _key_column(table: Table) -> Any:
    """The table's primary key column if it is a lone sequence-backed integer, else None."""
    primary = list(table.primary_key.columns)
    if len(primary) != 1:
        return None
    column = primary[0]
    if (
        not isinstance(column.type, Integer)
        or column.autoincrement not in (True, "auto")
        or column.default is not None
        or column.server_default is not None
    ):
        return None
    return column


def _sequence(connection: Any, table: Table) -> str | None:
    """The sequence behind the table's key (None: it has none; it is left to the database)."""
    key = (connection.engine.url, table.fullname)
    if key not in _SEQUENCES:
        _SEQUENCES[key] = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.fullname, "column": _key_column(table).name},
        ).scalar_one()
    return _SEQUENCES[key]
