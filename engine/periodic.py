"""Periodic jobs that re-enqueue themselves, without a separate process to drive them.

``scheduler_tick`` runs one scheduler pass and sends itself again with a delay. Anything may
start such a chain (``journeyline scheduler --periodic``, each worker process at boot with
``JOURNEYLINE_SCHEDULER_IN_WORKERS=true``), so several chains can exist at once. Each run
first takes its turn here: the ``periodic_ticks`` row books the next run, and a run that
finds it booked more than half an interval ahead stops without ticking or re-enqueueing.
Duplicate chains therefore die out after one interval, and even before they do the tick
itself is safe to run in parallel (leases, ``SKIP LOCKED``, unique slot keys).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from engine.db import transaction
from engine.models import PeriodicTick


def take_turn(db: Engine, *, name: str, now: datetime, interval: timedelta) -> bool:
    """Whether this run of the periodic job ``name`` should tick (and book the next run)."""
    with transaction(db) as session:
        row = session.exec(
            select(PeriodicTick).where(PeriodicTick.name == name).with_for_update()
        ).first()
        if row is None:
            try:
                with session.begin_nested():
                    session.add(PeriodicTick(name=name, next_at=now + interval, updated_at=now))
                return True
            except IntegrityError:  # another run booked the first turn a moment ago
                return False
        if row.next_at > now + interval / 2:
            return False  # another chain ran recently and has booked the next run
        row.next_at = now + interval
        row.updated_at = now
        session.add(row)
    return True
