"""Periodic jobs that re-enqueue themselves, without a separate process to drive them.

``scheduler_tick`` runs one scheduler pass and sends itself again with a delay. Anything may
start such a chain (``journeyline scheduler --periodic``, each worker process at boot with
``JOURNEYLINE_SCHEDULER_IN_WORKERS=true``), so starters must not multiply it. The
``periodic_ticks`` row books the next run and names the chain that owns it (a token the
chain's next message carries):

- the owner's message ticks, books the next run with a fresh token and sends it on;
- any other run stops, unless the booked run is overdue by more than an interval (its
  message was lost): then it takes the chain over;
- a starter that finds a live chain looks once more two intervals later, so a chain lost a
  moment before a worker booted is still picked up.

So one chain lives, and even while copies overlap the pass itself is safe to run in
parallel (leases, ``SKIP LOCKED``, unique slot keys).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from engine.db import transaction
from engine.models import PeriodicTick

START = ""  # the token of a message that starts a chain
PROBE = "probe"  # the token of a starter's second look; never owns a chain


def take_turn(
    db: Engine, *, name: str, now: datetime, interval: timedelta, token: str = START
) -> str | None:
    """The token to carry in the next message when this run of ``name`` should tick now;
    None when it should stop."""
    fresh = secrets.token_hex(8)
    with transaction(db) as session:
        row = session.exec(
            select(PeriodicTick).where(PeriodicTick.name == name).with_for_update()
        ).first()
        if row is None:
            try:
                with session.begin_nested():
                    session.add(
                        PeriodicTick(name=name, token=fresh, next_at=now + interval, updated_at=now)
                    )
                return fresh
            except IntegrityError:  # another starter booked the first run a moment ago
                return None
        # Not before half an interval ahead of the booking: a broker that ignores delays
        # (inline://) must not spin the chain in a loop.
        owner = token not in (START, PROBE) and token == row.token
        owner = owner and now >= row.next_at - interval / 2
        lost = now > row.next_at + interval
        if not (owner or lost):
            return None
        row.token = fresh
        row.next_at = now + interval
        row.updated_at = now
        session.add(row)
    return fresh
