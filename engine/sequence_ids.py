"""New rows' primary keys drawn from their sequences before a flush (PostgreSQL).

Left to itself, SQLAlchemy writes a flush's new rows of a table as one multi-row
``INSERT ... VALUES (...), (...) RETURNING id`` to learn their ids. For a job's hundred new
actions that statement has over a thousand parameters, and psycopg converts a statement
with more than 50 parameters from ``%(name)s`` placeholders to ``$n`` with a regular
expression on every execution (it caches only short statements): under the end-to-end
benchmark that parse was about a fifth of a worker's CPU.

So before a flush that inserts at least ``MIN_ROWS`` rows of a table whose primary key is a
sequence-backed integer, the ids are drawn from the sequences, for every such table in one
statement, and set on the objects in the order they were added. SQLAlchemy then needs no
``RETURNING`` and sends one short single-row ``INSERT`` for every row through psycopg's
``executemany`` (pipelined, one round trip), whose conversion is cached.

Ids drawn for a flush that then fails are gaps in the sequence, as a failed ``INSERT``
leaves anyway. SQLite is left alone (its multi-row ``INSERT`` costs no such parse).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, Table, event, inspect, text
from sqlalchemy.orm import InstanceState, UOWTransaction
from sqlalchemy.orm import Session as OrmSession

MIN_ROWS = 4
"""Fewer new rows than this go the usual way: the statement is short enough to be cached,
and drawing ids first would cost a round trip more."""

_SEQUENCES: dict[tuple[Any, str], str | None] = {}  # (database URL, table) -> its id sequence


@event.listens_for(OrmSession, "before_flush")
def _draw_ids(session: OrmSession, _flush: UOWTransaction, _instances: Any) -> None:
    if not session.new:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    wanted = _new_rows_by_table(session.new)
    wanted = {table: states for table, states in wanted.items() if len(states) >= MIN_ROWS}
    if not wanted:
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
        states = sorted(wanted[table], key=lambda state: state.insert_order)
        key = _key_attribute(states[0].mapper)
        for state, new_id in zip(states, sorted(ids), strict=True):
            setattr(state.obj(), key, new_id)  # type: ignore[arg-type]


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
