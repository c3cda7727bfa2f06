"""Schedule triggers: cron expressions evaluated in each contact's own time zone.

``on_schedule("0 9 * * MON")`` means Mondays at 09:00 wherever each contact is. The work is
done per time zone, never per contact per minute:

1. **Plan** (every scheduler tick): list the time zones in use (an index skip-scan, one probe
   per zone), and for each schedule-triggered workflow and zone compute the latest cron slot
   at or before now (cached in-process until the next slot). A slot not seen before becomes a
   ``schedule_slots`` row; the unique key (workflow, time zone, slot) makes parallel
   schedulers harmless. Planning a slot supersedes the older pending slots of the same
   workflow and zone, so after downtime **the latest missed slot fires once, not every
   missed one**. Slots before the workflow's current version was first seen are never
   planned (deploying a Monday schedule on a Friday waits for Monday), and a slot later than
   the trigger's ``max_delay`` is recorded as skipped.
2. **Claim**: due pending slots are taken with ``FOR UPDATE SKIP LOCKED`` (SQLite: the
   ``BEGIN IMMEDIATE`` transaction) and a lease, and a ``fire_schedule`` job is enqueued.
3. **Fire** (the job): under the slot's row lock, take the next batch of the zone's contacts
   (created at or before the slot) in id order, offer each the workflow (its ``when``
   condition, entry rule and re-entry policy decide), and advance the slot's cursor in the
   same transaction. A lost job is re-claimed when its lease runs out and continues from the
   cursor, so each contact is offered the workflow exactly once per slot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cronsim import CronSim, CronSimError
from sqlalchemy import BindParameter, bindparam, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from engine import known_events
from engine.broadcast import enroll_starting_with_email, reentries, starts_with_email
from engine.conditions import EvalContext
from engine.db import one_of_param, transaction
from engine.durations import describe_duration
from engine.effects import Effects
from engine.enrollments import remember_version, store_version
from engine.entry import meets_entry_rules, start_enrollment
from engine.localtime import zone
from engine.models import Contact, ScheduleSlot, ScheduleSlotStatus
from engine.registry import Registry
from engine.steps import SendEmail
from engine.workflow import Scheduled, Workflow

log = logging.getLogger(__name__)

# Contacts offered a slot's workflow per transaction: their row locks are held meanwhile.
CONTACTS_PER_BATCH = 200

_ZONES_IN_USE = text(
    """
    WITH RECURSIVE zones(tz) AS (
        SELECT MIN(timezone) FROM contacts
        UNION ALL
        SELECT (SELECT MIN(timezone) FROM contacts WHERE timezone > zones.tz)
        FROM zones WHERE zones.tz IS NOT NULL
    )
    SELECT tz FROM zones WHERE tz IS NOT NULL
    """
)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable five-field cron expression, or None."""
    fields = expression.split()
    if len(fields) != 5:
        return f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return str(exc)
    return None


def explain(expression: str) -> str:
    """``"0 9 * * MON"`` -> ``"At 09:00 on Monday"`` (the expression itself if unexplainable)."""
    try:
        return CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # explain() is best effort; the expression was validated at load
        return expression


def latest_slot(expression: str, tz_name: str, now: datetime) -> datetime:
    """The latest instant at or before ``now`` that ``expression`` matches in ``tz_name``'s
    wall-clock time, as UTC. DST follows cron's rules: a local time skipped by the change
    fires just after it, a repeated one fires once."""
    local = now.astimezone(zone(tz_name)) + timedelta(microseconds=1)
    return next(CronSim(expression, local, reverse=True)).astimezone(UTC)


def next_slot(expression: str, tz_name: str, after: datetime) -> datetime:
    """The first instant strictly after ``after`` that ``expression`` matches, as UTC."""
    local = after.astimezone(zone(tz_name))
    return next(CronSim(expression, local)).astimezone(UTC)


def zones_in_use(session: Session) -> list[str]:
    """Distinct contact time zones, one index probe per zone (not a scan of the contacts)."""
    return [row[0] for row in session.execute(_ZONES_IN_USE)]


@dataclass(frozen=True)
class Planned:
    workflow: str
    timezone: str
    slot_at: datetime
    new: bool  # False: another scheduler had planned it already


@dataclass
class SchedulePlanner:
    """Plans schedule slots; keeps per-process caches so an idle tick costs a few queries.

    Safe to run in several processes at once: what it writes is keyed uniquely, and the
    caches only save work (a cold cache re-checks against the table).
    """

    # (cron, zone) -> (latest slot at or before the last look, the slot after it)
    _slots: dict[tuple[str, str], tuple[datetime, datetime]] = field(default_factory=dict)
    # (workflow, zone) -> the newest slot this process has made sure is planned
    _planned: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # (workflow, version) -> when that version was first seen
    _since: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def slot(self, expression: str, tz_name: str, now: datetime) -> datetime:
        cached = self._slots.get((expression, tz_name))
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[0]
        latest = latest_slot(expression, tz_name, now)
        self._slots[(expression, tz_name)] = (latest, next_slot(expression, tz_name, latest))
        return latest

    def plan(self, session: Session, registry: Registry, *, now: datetime) -> list[Planned]:
        """Record every slot that has come due since the last look, in the caller's
        transaction; pass the result to ``remember`` once that has committed."""
        checked: list[Planned] = []
        scheduled = registry.triggered_by_schedule()
        if not scheduled:
            return checked
        zones = zones_in_use(session)
        for workflow in scheduled:
            trigger = workflow.trigger
            assert isinstance(trigger, Scheduled)
            since = self._first_seen(session, registry, workflow, now)
            for tz_name in zones:
                at = self.slot(trigger.cron, tz_name, now)
                if at < since or self._planned.get((workflow.name, tz_name)) == at:
                    continue
                new = _record_slot(session, workflow, trigger, tz_name, at, now=now)
                checked.append(Planned(workflow.name, tz_name, at, new))
        return checked

    def remember(self, checked: list[Planned]) -> None:
        for item in checked:
            self._planned[(item.workflow, item.timezone)] = item.slot_at

    def _first_seen(
        self, session: Session, registry: Registry, workflow: Workflow, now: datetime
    ) -> datetime:
        key = (workflow.name, workflow.version)
        if key not in self._since:
            self._since[key] = store_version(session, workflow, now)
        return self._since[key]


def _record_slot(
    session: Session,
    workflow: Workflow,
    trigger: Scheduled,
    tz_name: str,
    at: datetime,
    *,
    now: datetime,
) -> bool:
    late = trigger.max_delay is not None and now - at > trigger.max_delay
    values = {
        "workflow": workflow.name,
        "timezone": tz_name,
        "slot_at": at,
        "status": ScheduleSlotStatus.SKIPPED if late else ScheduleSlotStatus.PENDING,
        "note": (
            f"found {describe_duration(now - at)} late "
            f"(max_delay {describe_duration(trigger.max_delay)})"  # type: ignore[arg-type]
            if late
            else ""
        ),
        "after_contact_id": 0,
        "contacts_seen": 0,
        "errors": 0,
        "created_at": now,
        "completed_at": now if late else None,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = session.execute(
        insert(ScheduleSlot)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["workflow", "timezone", "slot_at"])
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False  # another scheduler planned it first
    # Only the latest missed slot fires: older ones not yet fired are superseded.
    session.execute(
        update(ScheduleSlot)
        .where(
            col(ScheduleSlot.workflow) == workflow.name,
            col(ScheduleSlot.timezone) == tz_name,
            col(ScheduleSlot.status) == ScheduleSlotStatus.PENDING,
            col(ScheduleSlot.slot_at) < at,
        )
        .values(
            status=ScheduleSlotStatus.SKIPPED,
            note=f"superseded by the slot at {at.isoformat()}",
            completed_at=now,
        )
    )
    return True


def claim_slots(session: Session, *, now: datetime, lease: timedelta, batch_size: int) -> list[int]:
    """Due pending slots nobody holds, claimed for ``lease``."""
    connection = session.connection()
    due, claim = _claim_statements(connection.dialect.name, batch_size)
    ids = list(connection.execute(due, {"now": now}).scalars())
    if ids:
        connection.execute(claim, {"ids": ids, "until": now + lease})
    return [i for i in ids if i is not None]


_SLOTS = ScheduleSlot.__table__  # type: ignore[attr-defined]


@cache
def _claim_statements(dialect: str, batch_size: int) -> tuple[Any, Any]:
    """The due slots' read and their claim, built once per dialect and batch size (every
    scheduler pass runs them)."""
    now: BindParameter[datetime] = bindparam("now")
    return (
        select(_SLOTS.c.id)
        .where(
            _SLOTS.c.status == ScheduleSlotStatus.PENDING,
            _SLOTS.c.slot_at <= now,
            or_(_SLOTS.c.claimed_until.is_(None), _SLOTS.c.claimed_until < now),
        )
        .order_by(_SLOTS.c.slot_at, _SLOTS.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True),
        _SLOTS.update()
        .where(one_of_param(_SLOTS.c.id, "ids", dialect=dialect))
        .values(claimed_until=bindparam("until")),
    )


@dataclass
class Fired:
    effects: Effects = field(default_factory=Effects)
    contacts: int = 0
    more: bool = False  # contacts remain: run again


def fire_slot(
    session: Session,
    registry: Registry,
    slot_id: int,
    *,
    now: datetime,
    lease: timedelta,
    batch_size: int = CONTACTS_PER_BATCH,
) -> Fired:
    """Offer the slot's workflow to the next batch of its time zone's contacts."""
    fired = Fired()
    slot = session.exec(
        select(ScheduleSlot).where(ScheduleSlot.id == slot_id).with_for_update()
    ).first()
    if slot is None or slot.status != ScheduleSlotStatus.PENDING:
        return fired  # done, superseded, or a duplicate message
    workflow = registry.workflows.get(slot.workflow)
    if workflow is None or not isinstance(workflow.trigger, Scheduled):
        _finish(slot, now, ScheduleSlotStatus.SKIPPED, "the workflow has no schedule any more")
        session.add(slot)
        return fired
    trigger = workflow.trigger
    contacts = session.exec(
        select(Contact)
        .where(
            Contact.timezone == slot.timezone,
            col(Contact.id) > slot.after_contact_id,
            col(Contact.created_at) <= slot.slot_at,
        )
        .order_by(col(Contact.id))
        .limit(batch_size)
        .with_for_update()
    ).all()
    local = slot.slot_at.astimezone(zone(slot.timezone))
    why = f"schedule {trigger.cron} at {local:%Y-%m-%d %H:%M} {slot.timezone}"
    if trigger.name:
        why += f" ({trigger.name})"
    if starts_with_email(workflow):
        fired.effects.extend(_fire_set_based(session, registry, slot, workflow, contacts, now, why))
    else:
        fired.effects.extend(_fire_each(session, registry, slot, workflow, contacts, now, why))
    if contacts:
        slot.after_contact_id = contacts[-1].id  # type: ignore[assignment]
    fired.contacts = len(contacts)
    slot.contacts_seen += len(contacts)
    if len(contacts) < batch_size:
        _finish(slot, now, ScheduleSlotStatus.DONE, "")
    else:
        slot.claimed_until = now + lease
        fired.more = True
    session.add(slot)
    return fired


def _fire_each(
    session: Session,
    registry: Registry,
    slot: ScheduleSlot,
    workflow: Workflow,
    contacts: Sequence[Contact],
    now: datetime,
    why: str,
) -> Effects:
    """The general path: the executor's own entry, contact by contact, each in a savepoint."""
    trigger = workflow.trigger
    assert isinstance(trigger, Scheduled)
    effects = Effects()
    known_events.batch(session, [c.id for c in contacts if c.id is not None])
    for contact in contacts:
        try:
            with session.begin_nested():
                if trigger.condition is None or trigger.condition.evaluate(
                    EvalContext(session, contact, now)
                ):
                    effects.extend(
                        start_enrollment(
                            session,
                            registry,
                            contact,
                            workflow,
                            now=now,
                            cause_event_id=None,
                            why=why,
                        )
                    )
        except Exception as exc:  # one contact's bad data must not stop the zone's slot
            log.exception("schedule slot %s: contact %s failed", slot.id, contact.id)
            session.refresh(contact)
            _count_error(slot, contact, exc)
    return effects


def _fire_set_based(
    session: Session,
    registry: Registry,
    slot: ScheduleSlot,
    workflow: Workflow,
    contacts: Sequence[Contact],
    now: datetime,
    why: str,
) -> Effects:
    """A workflow that starts with an email: decide who enters in the order
    ``start_enrollment`` does (the re-entry policy for the batch in one query, then in
    Python the ``when`` condition, the entry rule, the subscription), then write the
    batch's enrollments and first emails set-based, as it would have (broadcast.py)."""
    offered: list[tuple[Contact, int]] = []
    for contact, entry in reentries(session, workflow, contacts, now):
        try:
            if _may_enter(session, workflow, contact, now):
                offered.append((contact, entry))
        except Exception as exc:  # a condition that cannot read this contact's data
            log.exception("schedule slot %s: contact %s failed", slot.id, contact.id)
            _count_error(slot, contact, exc)
    remember_version(session, registry, workflow, now)
    action_ids = enroll_starting_with_email(session, workflow, offered, now=now, why=why)
    step = workflow.program[0].step
    assert isinstance(step, SendEmail)
    return Effects(actions=action_ids) if step.marketing else Effects(transactional=action_ids)


def _may_enter(session: Session, workflow: Workflow, contact: Contact, now: datetime) -> bool:
    """The checks ``start_enrollment`` makes after the re-entry rules: the slot's ``when``
    condition, then the workflow's entry rules."""
    trigger = workflow.trigger
    assert isinstance(trigger, Scheduled)
    if trigger.condition is not None and not trigger.condition.evaluate(
        EvalContext(session, contact, now)
    ):
        return False
    return meets_entry_rules(session, workflow, contact, now)


def _count_error(slot: ScheduleSlot, contact: Contact, exc: Exception) -> None:
    slot.errors += 1
    slot.last_error = f"contact {contact.id}: {type(exc).__name__}: {exc}"


def _finish(slot: ScheduleSlot, now: datetime, status: ScheduleSlotStatus, note: str) -> None:
    slot.status = status
    slot.note = note
    slot.completed_at = now
    slot.claimed_until = None


def plan_and_claim(
    db: Engine,
    registry: Registry,
    planner: SchedulePlanner,
    *,
    now: datetime,
    lease: timedelta,
    batch_size: int,
) -> list[int]:
    """One scheduler pass over schedules: plan new slots, then claim the due ones."""
    if not registry.triggered_by_schedule():
        return []
    with transaction(db) as session:
        checked = planner.plan(session, registry, now=now)
        session.flush()  # the claim's read is a plain statement: what plan() wrote first
        claimed = claim_slots(session, now=now, lease=lease, batch_size=batch_size)
    planner.remember(checked)
    return claimed
