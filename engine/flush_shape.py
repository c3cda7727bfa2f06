"""Changed rows of one table written by one ``executemany``, not one UPDATE per shape.

SQLAlchemy groups a flush's UPDATEs of a table by the set of columns each object changed,
and only runs of neighbours with the same set share an ``executemany``. A job that processes
a hundred contacts changes some contacts' score, some stages, some only their version, in
an interleaved order: the flush sent about one UPDATE statement for every two or three
contacts. So before each flush, the changed objects of a mapper all mark the union of the
columns any of them changed: every one of them is then written with the same statement (a
column written with the value it already holds changes nothing), in one ``executemany``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ColumnProperty, UOWTransaction
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm.attributes import flag_modified

_COLUMNS: dict[Any, frozenset[str]] = {}  # mapper -> its column attributes


@event.listens_for(OrmSession, "before_flush")
def _one_shape_per_table(session: OrmSession, _flush: UOWTransaction, _instances: Any) -> None:
    by_mapper: dict[Any, list[Any]] = {}
    for obj in session.dirty:
        state = inspect(obj)
        if state.committed_state:
            by_mapper.setdefault(state.mapper, []).append(state)
    for mapper, states in by_mapper.items():
        if len(states) < 2:
            continue
        columns = _columns(mapper)
        union: set[str] = set()
        for state in states:
            union.update(key for key in state.committed_state if key in columns)
        for state in states:
            loaded = state.dict
            for key in union:
                if key in loaded:
                    flag_modified(state.obj(), key)


def _columns(mapper: Any) -> frozenset[str]:
    if mapper not in _COLUMNS:
        _COLUMNS[mapper] = frozenset(
            prop.key
            for prop in mapper.iterate_properties
            if isinstance(prop, ColumnProperty) and not prop.columns[0].primary_key
        )
    return _COLUMNS[mapper]
