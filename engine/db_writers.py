"""Which SQLite engines serialise their writers (every transaction ``BEGIN IMMEDIATE``).

``engine.db.make_engine`` marks the SQLite engines it configures so; code that relies on
holding the only write lock for a whole transaction (``sequence_ids`` numbering new rows on
from a table's largest id) asks here first and leaves any other engine alone.
"""

from __future__ import annotations

from weakref import WeakSet

from sqlalchemy.engine import Engine

_SERIALISED: WeakSet[Engine] = WeakSet()


def mark_serialised(engine: Engine) -> None:
    _SERIALISED.add(engine)


def serialises_writers(engine: Engine) -> bool:
    return engine in _SERIALISED
