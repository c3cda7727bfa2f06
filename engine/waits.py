"""Waits: when a waiting enrollment wakes, and waits that follow what they count from.

``wake_time`` is when a ``wait``, ``wait_until`` or ``wait_until_date`` step wakes for a
contact. A waiting enrollment's context says which wait it is parked at
(``WAITING_UNTIL_DATE``, ``WAITING_UNTIL_TIME``, ``PAUSED``), so its wake-up can follow
what it was counted from: ``follow_date_changes`` moves it when the date attribute changes
(a trial extended by two weeks moves its "3 days before it ends" reminder),
``follow_zone_changes`` when the contact's time zone does (a local time). Each move is
noted on the enrollment's trail (engine/trail.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlmodel import Session

from engine.db import keep
from engine.enrollments import live_enrollments, workflow_for
from engine.localtime import (
    at_local,
    date_problem,
    next_time_of_day,
    parse_hhmm,
    parse_instant,
    zone,
)
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.registry import Registry
from engine.steps import Node, Wait, WaitUntil, WaitUntilDate
from engine.trail import note_on_trail

# The executor's logger, as before these waits had a module of their own: logging set up
# for ``engine.executor`` still gets the warning about a date that is not one.
log = logging.getLogger("engine.executor")

WAITING_UNTIL_DATE = "waiting_until_date"
"""In a waiting enrollment's context: the date attribute its wait is counted from, the wait
step, and the contact's time zone when the wake-up was computed (``follow_date_changes``
moves the wake-up when the date changes, ``follow_zone_changes`` when the zone does: a date
without an offset, and a ``time=``, are local)."""

WAITING_UNTIL_TIME = "waiting_until_time"
"""In a waiting enrollment's context: its wait until a time of day (``wait_until``) and the
contact's time zone when the wake-up was computed (``follow_zone_changes``)."""

PAUSED = "paused"
"""In a waiting enrollment's context: its relative wait was extended because an email
written just before it was held by a guard rail (engine/pauses.py): the wait step, when
the wait began, and the hold that set its wake-up."""

ABOUT_THE_WAIT = (WAITING_UNTIL_DATE, WAITING_UNTIL_TIME, PAUSED)
"""Context keys that describe the wait an enrollment is parked at: gone when it runs on."""
_LOCAL_WAITS = (WAITING_UNTIL_DATE, WAITING_UNTIL_TIME)


def wake_time(
    step: Wait | WaitUntil | WaitUntilDate, contact: Contact, now: datetime
) -> datetime | None:
    """When ``step``, reached ``now``, wakes for ``contact``; None: a date wait with no date."""
    if isinstance(step, Wait):
        return now + step.duration
    if isinstance(step, WaitUntil):
        return next_time_of_day(now, contact.timezone, step.time, weekdays_only=step.weekdays_only)
    instant = parse_instant(contact.attributes.get(step.attribute), contact.timezone)
    if instant is None:
        return None  # no date (or not a date: the caller says so): nothing to wait for
    target = instant + step.offset
    if step.time:
        tz = zone(contact.timezone)
        local_day = (instant.astimezone(tz) + step.offset).date()
        target = at_local(local_day, parse_hhmm(step.time), tz)
    return target


def follow_date_changes(
    session: Session,
    registry: Registry,
    contact: Contact,
    changed: Iterable[str],
    *,
    now: datetime,
    running: Enrollment | None = None,
) -> None:
    """The contact's attributes ``changed`` (by an event, an import, or a ``set_attribute``
    step of the enrollment ``running``, which is left alone: it is not waiting): a wait
    counted from one of them (``wait_until_date``) wakes at the time the new date gives, as
    a trial extended by two weeks moves its "3 days before it ends" reminder; a date
    removed, moved into the past, or replaced by something that is not a date, wakes it now
    (as a wait that starts without a date goes straight on)."""
    names = set(changed)
    if not names:
        return
    for enrollment, waiting in _parked_at_local_waits(
        session, contact, running, WAITING_UNTIL_DATE
    ):
        if waiting["attribute"] not in names:
            continue
        node = _wait_node(session, registry, enrollment, waiting, (WaitUntilDate,))
        if node is None:
            continue
        assert isinstance(node.step, WaitUntilDate)
        moved_to = _moved_wake(node.step, contact, now)
        if date_problem(contact.attributes.get(node.step.attribute)) is not None:
            note = without_a_date(
                contact, enrollment, node.step, f"wakes at {moved_to.isoformat()}"
            )
        else:
            note = f"{waiting['attribute']} changed: wakes at {moved_to.isoformat()}"
        _rewake(session, contact, enrollment, WAITING_UNTIL_DATE, node, moved_to, now, note)


def follow_zone_changes(
    session: Session,
    registry: Registry,
    contact: Contact,
    *,
    now: datetime,
) -> None:
    """The contact's time zone is not the one a waiting enrollment's local-time wake-up was
    computed in (``wait_until("10:00")``, ``wait_until_date`` at a time or from a date
    without an offset): it wakes at that time in the new zone, the next ``10:00`` there, or
    now if the date's time there has passed; as quiet hours, and Braze's and Customer.io's
    local-time sends, follow the contact's current zone. Relative waits stay."""
    for enrollment, _waiting in _parked_at_local_waits(session, contact, None, *_LOCAL_WAITS):
        rezoned(session, registry, contact, enrollment, now=now)


def _parked_at_local_waits(
    session: Session, contact: Contact, running: Enrollment | None, *keys: str
) -> Iterator[tuple[Enrollment, dict[str, Any]]]:
    """The contact's waiting enrollments parked at a wait that ``keys`` of their context
    describe, with what it says of the wait; never ``running``, the enrollment whose step
    asks (it is mid-run: its state is its caller's)."""
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        if enrollment is running or enrollment.status != EnrollmentStatus.WAITING:
            continue
        for key in keys:
            waiting = enrollment.context.get(key)
            if waiting:
                yield enrollment, waiting
                break


def rezoned(
    session: Session, registry: Registry, contact: Contact, enrollment: Enrollment, *, now: datetime
) -> bool:
    """If ``enrollment`` waits for a local time computed in another zone than the contact's,
    move its wake-up to that time in her zone; whether it then still lies ahead. (Checked
    on waking too, for a zone recorded but not applied yet when the old wake-up came.)"""
    key = next((k for k in _LOCAL_WAITS if enrollment.context.get(k)), None)
    if key is None:
        return False
    waiting = enrollment.context[key]
    if waiting.get("zone", contact.timezone) == contact.timezone:
        return False  # the same zone; or parked before zones were noted: left as it is
    node = _wait_node(session, registry, enrollment, waiting, (WaitUntil, WaitUntilDate))
    if node is None:
        return False
    assert isinstance(node.step, WaitUntil | WaitUntilDate)
    moved_to = _moved_wake(node.step, contact, now)
    note = f"time zone changed to {contact.timezone}: wakes at {moved_to.isoformat()}"
    _rewake(session, contact, enrollment, key, node, moved_to, now, note)
    return moved_to > now


def _wait_node(
    session: Session,
    registry: Registry,
    enrollment: Enrollment,
    waiting: dict[str, Any],
    kinds: tuple[type, ...],
) -> Node | None:
    """The wait step ``waiting`` names in the enrollment's workflow, if still one of ``kinds``."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        return None
    node = next((n for n in workflow.program if n.id == waiting["step"]), None)
    return node if node is not None and isinstance(node.step, kinds) else None


def _moved_wake(step: WaitUntil | WaitUntilDate, contact: Contact, now: datetime) -> datetime:
    """When a wait the contact is parked at wakes, computed again now: its time if still
    ahead, else now (no date, or one already past)."""
    wake = wake_time(step, contact, now)
    return wake if wake is not None and wake > now else now


def _rewake(
    session: Session,
    contact: Contact,
    enrollment: Enrollment,
    key: str,
    node: Node,
    moved_to: datetime,
    now: datetime,
    note: str,
) -> None:
    """Move a waiting enrollment's wake-up to ``moved_to`` (noting why in its trail, if it
    moves), computed in the contact's current zone, which its context now records."""
    waiting = enrollment.context[key]
    if moved_to == enrollment.wake_at and waiting.get("zone") == contact.timezone:
        return
    enrollment.context = {**enrollment.context, key: {**waiting, "zone": contact.timezone}}
    if moved_to != enrollment.wake_at:
        note_on_trail(enrollment, node, now, note)
        enrollment.wake_at = moved_to
    enrollment.updated_at = now
    keep(session, enrollment)


def without_a_date(
    contact: Contact, enrollment: Enrollment, step: WaitUntilDate, outcome: str
) -> str:
    """The trail note of a date wait that has no date to count from and so ``outcome``
    ("went on"). A value that is not a date (stored before dates were checked, or from a
    provider's webhook, which is not refused) is also logged as a warning: its workflow
    goes on without waiting, which its author will want to know."""
    value = contact.attributes.get(step.attribute)
    if date_problem(value) is None:  # nothing there
        return f"no {step.attribute}: {outcome}"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    log.warning(
        "contact %s, workflow %s: %s holds %s, not a date: %s (give an ISO 8601 date or time, "
        "or a Unix time)",
        contact.id,
        enrollment.workflow,
        step.attribute,
        shown,
        outcome,
    )
    return f"{step.attribute} holds {shown}, not a date: {outcome}"
