"""Moving a virtual clock through due work, for the test harness and the simulator.

Virtual time must not cost wall time: rather than ticking the scheduler at every virtual
minute or hour, ``advance_to`` asks the database when the next thing falls due (a wake-up,
a deferred or retried action, a schedule slot), jumps straight there, runs everything due,
and repeats until the target. A quiet week costs a few queries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import Session, select

from engine.clock import VirtualClock
from engine.models import Action, ActionStatus
from engine.runtime import Runtime
from engine.scheduler import next_wake_ups
from engine.schedules import next_slot, zones_in_use
from engine.workflow import Scheduled

# The earliest wake-up a pass may claim (one no claim is on, or one whose claim lapses
# first: a wake job that was lost runs again then) and the earliest pending action's lease,
# in one statement.
_NEXT_WAKE_AND_RETRY = select(
    *next_wake_ups(),
    select(func.min(Action.lease_until))
    .where(Action.status == ActionStatus.PENDING)
    .scalar_subquery(),
)


def next_due(runtime: Runtime, now: datetime) -> datetime | None:
    """The earliest instant at which the scheduler will find work, or None if none waits."""
    with Session(runtime.db) as session:
        wake, lapse, retry = session.execute(_NEXT_WAKE_AND_RETRY).one()
        slots = _next_schedule_slots(runtime, session, now)
    candidates = [t for t in (wake, lapse, retry, *slots) if t is not None]
    if not candidates:
        return None
    return min(_aware(t) for t in candidates)


def advance_to(
    runtime: Runtime, clock: VirtualClock, target: datetime, *, settled: bool = False
) -> datetime:
    """Run everything due up to ``target``, each at its own instant, and stop the clock there.

    ``settled``: the caller ran ``settle`` at this instant and changed nothing since, so the
    opening pass over what is due now is skipped (the simulator's hours: a scheduler pass
    each that could find nothing)."""
    if not settled:
        runtime.run_until_idle()  # whatever is due now, stuck rows included
    due = next_due(runtime, clock.now())
    while due is not None and due <= target:
        clock.set(max(due, clock.now()))
        due = _run_due(runtime, clock)
    clock.set(target)
    settle(runtime, clock)
    return target


def settle(runtime: Runtime, clock: VirtualClock) -> None:
    """Run the queued jobs, then the scheduler while it has something due at this instant.

    Cheaper than ``Runtime.run_until_idle`` for a virtual clock: that one ends with a
    scheduler pass that finds nothing, where one ``next_due`` query says so."""
    runtime.drain()
    due = next_due(runtime, clock.now())
    if due is not None and due <= clock.now():
        _run_due(runtime, clock)


def _run_due(runtime: Runtime, clock: VirtualClock) -> datetime | None:
    """Something is due now: scheduler passes and their jobs until nothing due is left (or a
    pass finds nothing it may claim, e.g. a wake-up another job holds a claim on). Returns
    what ``next_due`` says then, so that the caller does not ask again."""
    while len(runtime.tick()):
        runtime.drain()
        due = next_due(runtime, clock.now())
        if due is None or due > clock.now():
            return due
    return next_due(runtime, clock.now())


def _next_schedule_slots(runtime: Runtime, session: Session, now: datetime) -> list[datetime]:
    """The next slot of each schedule trigger in each time zone in use, so every slot fires at
    its own instant rather than only the latest one at the end."""
    scheduled = runtime.registry.triggered_by_schedule()
    if not scheduled:
        return []
    zones = zones_in_use(session)
    # (cron, zone) -> (after, slot): the next slot stays the same until ``now`` reaches it.
    known: dict[tuple[str, str], tuple[datetime, datetime]] = runtime.__dict__.setdefault(
        "_next_schedule_slots", {}
    )
    slots = []
    for workflow in scheduled:
        assert isinstance(workflow.trigger, Scheduled)
        for tz_name in zones:
            key = (workflow.trigger.cron, tz_name)
            cached = known.get(key)
            if cached is None or not cached[0] <= now < cached[1]:
                cached = (now, next_slot(workflow.trigger.cron, tz_name, now))
                known[key] = cached
            slots.append(cached[1])
    return slots


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
