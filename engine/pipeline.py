"""The one path every input takes (DESIGN.md section 2).

``record_event`` stores an event idempotently (keyed by its source's id). ``process_contact``
takes the contact's row lock and applies its pending events in arrival order: rules and
score, the stage machine, workflow exits and entries, and the action rows they write, all in
the caller's transaction. ``wake_enrollment`` continues an enrollment whose wait is over.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from engine import known_enrollments
from engine.conditions import EvalContext, matches
from engine.contacts import (
    find_or_insert_contact_id,
    normalize_email,
    validate_event_type,
    validate_properties,
    validate_timezone,
)
from engine.db import insert_new, skip_commit_flush, transaction
from engine.executor import (
    Effects,
    end_enrollment,
    live_enrollments,
    resume_on_event,
    start_enrollment,
    wake,
    workflow_for,
)
from engine.models import (
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    EventStatus,
    StageTransition,
)
from engine.registry import Registry
from engine.steps import WaitForEvent
from engine.workflow import ConditionMet, EventReceived, StageEntered

log = logging.getLogger(__name__)

EVENT_LEASE = timedelta(minutes=5)
INTERNAL_SOURCE = "journeyline"
CONTACT_CREATED = "contact.created"
LIFECYCLE_CHANGED = "crm.lifecycle_changed"
EVENTS_PER_PASS = 200


@dataclass(frozen=True)
class Recorded:
    event_id: int
    contact_id: int
    duplicate: bool


def record_event(
    session: Session,
    registry: Registry,
    *,
    now: datetime,
    email: str,
    event_type: str,
    properties: Mapping[str, Any] | None = None,
    source: str = "api",
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    attributes: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> Recorded:
    """Validate and store one event (creating its contact if new). Nothing is written when
    validation fails; a repeated ``idempotency_key`` from the same source returns the first."""
    email = normalize_email(email)
    event_type = validate_event_type(event_type)
    properties = validate_properties(properties)
    attributes = validate_properties(attributes, field="attributes")
    if timezone is not None:
        validate_timezone(timezone)
    if idempotency_key:
        key = f"{source}:{idempotency_key}"
        existing = _event_with_key(session, key)
        if existing is not None:
            return existing
    else:
        key = f"{source}:auto:{uuid.uuid4()}"  # new by construction: nothing to look up
    contact_id, created = find_or_insert_contact_id(
        session,
        email=email,
        journey=registry.journey,
        now=now,
        timezone=timezone,
        attributes=attributes,
    )
    events: Any = Event.__table__
    row = {
        "contact_id": contact_id,
        "properties": {},
        "status": EventStatus.PENDING.value,
        "error": None,
        "occurred_at": occurred_at or now,
        "received_at": now,
        "lease_until": now + EVENT_LEASE,
        "processed_at": None,
    }
    if created:
        # Entering the first stage is an event like any other, so workflows for it start
        # on the same path, in order, before the event that created the contact.
        session.execute(
            events.insert().values(
                **row,
                type=CONTACT_CREATED,
                source=INTERNAL_SOURCE,
                idempotency_key=f"{INTERNAL_SOURCE}:created:{contact_id}",
            )
        )
    event_id = insert_new(
        session,
        events,
        {
            **row,
            "type": event_type,
            "properties": properties,
            "source": source,
            "idempotency_key": key,
        },
        unique=("idempotency_key",),
    )
    if event_id is None:
        # The same key raced in from another request: the first one stands.
        existing = _event_with_key(session, key)
        assert existing is not None, f"event {key} conflicted but cannot be found"
        return existing
    return Recorded(event_id, contact_id, duplicate=False)


def _event_with_key(session: Session, key: str) -> Recorded | None:
    found = session.exec(
        select(Event.id, Event.contact_id).where(Event.idempotency_key == key)
    ).first()
    if found is None:
        return None
    return Recorded(found[0], found[1], duplicate=True)  # type: ignore[arg-type]


def lock_contact(session: Session, contact_id: int) -> Contact | None:
    """Load the contact holding its row lock until commit (PostgreSQL ``FOR UPDATE``;
    SQLite's ``BEGIN IMMEDIATE`` already serialises writers)."""
    return session.exec(select(Contact).where(Contact.id == contact_id).with_for_update()).first()


def process_contact_job(
    db: Engine, registry: Registry, contact_id: int, *, now: datetime
) -> Effects:
    """Apply the contact's pending events, committed; what to enqueue afterwards.

    The common case (no event raises) runs in one transaction with no savepoint per event.
    If one raises, that transaction is rolled back whole and the events are applied again,
    each in its own savepoint, so only the failing one is marked failed (``process_contact``
    with ``isolate=True``).
    """
    try:
        with transaction(db) as session:
            skip_commit_flush(session)
            return process_contact(session, registry, contact_id, now=now, isolate=False)
    except Exception as exc:
        log.warning(
            "contact %s: an event failed (%s: %s); applying the events again one by one",
            contact_id,
            type(exc).__name__,
            exc,
        )
    with transaction(db) as session:
        skip_commit_flush(session)
        return process_contact(session, registry, contact_id, now=now, isolate=True)


def process_contacts_job(
    db: Engine, registry: Registry, contact_ids: list[int], *, now: datetime
) -> Effects:
    """Several contacts' pending events in one transaction, committed; what to enqueue.

    The contacts are locked in one statement, in id order (two jobs sharing contacts lock
    them in the same order, so they queue rather than deadlock), and their pending events
    are read in one statement. If anything raises, the transaction is rolled back whole and
    each contact is done again on its own (``process_contact_job``), so one bad event costs
    only its own contact a retry.
    """
    ids = sorted(set(contact_ids))
    try:
        with transaction(db) as session:
            skip_commit_flush(session)
            return _process_together(session, registry, ids, now=now)
    except Exception as exc:
        log.warning(
            "contacts %s: processing together failed (%s: %s); one by one instead",
            ids,
            type(exc).__name__,
            exc,
        )
    effects = Effects()
    failure: Exception | None = None
    for contact_id in ids:
        try:
            effects.extend(process_contact_job(db, registry, contact_id, now=now))
        except Exception as exc:  # the others still go ahead; the job is retried for this one
            log.exception("processing contact %s failed", contact_id)
            failure = failure or exc
    if failure is not None:
        raise PartlyFailed(effects, failure) from failure
    return effects


class PartlyFailed(Exception):
    """Part of a batch (contacts or enrollments) failed; ``effects`` holds what the rest
    committed."""

    def __init__(self, effects: Effects, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.effects = effects
        self.cause = cause


def _process_together(
    session: Session, registry: Registry, ids: list[int], *, now: datetime
) -> Effects:
    contacts = session.exec(
        select(Contact).where(col(Contact.id).in_(ids)).order_by(col(Contact.id)).with_for_update()
    ).all()
    known_enrollments.keep_enrollments(session)
    known_enrollments.load(session, [c.id for c in contacts if c.id is not None])
    limit = EVENTS_PER_PASS * len(ids)
    pending = session.exec(
        select(Event)
        .where(col(Event.contact_id).in_(ids), Event.status == EventStatus.PENDING)
        .order_by(col(Event.id))
        .limit(limit)
    ).all()
    by_contact: dict[int, list[Event]] = {}
    for event in pending:
        by_contact.setdefault(event.contact_id, []).append(event)
    effects = Effects()
    for contact in contacts:
        mine = by_contact.get(contact.id, [])  # type: ignore[arg-type]
        effects.extend(_apply_pending(session, registry, contact, mine[:EVENTS_PER_PASS], now=now))
        if len(mine) > EVENTS_PER_PASS or len(pending) == limit:
            effects.contacts.append(contact.id)  # type: ignore[arg-type]  # more may wait
    return effects


def process_contact(
    session: Session, registry: Registry, contact_id: int, *, now: datetime, isolate: bool = True
) -> Effects:
    """Apply the contact's pending events in arrival order.

    With ``isolate`` each event runs in a savepoint: one that raises is rolled back alone and
    kept as ``failed`` with its error. Without, the first error propagates to the caller.
    """
    contact = lock_contact(session, contact_id)
    if contact is None:
        return Effects()
    known_enrollments.keep_enrollments(session)  # read once under the contact's lock
    pending = session.exec(
        select(Event)
        .where(Event.contact_id == contact_id, Event.status == EventStatus.PENDING)
        .order_by(col(Event.id))
        .limit(EVENTS_PER_PASS)
    ).all()
    effects = _apply_pending(session, registry, contact, list(pending), now=now, isolate=isolate)
    if len(pending) == EVENTS_PER_PASS:
        effects.contacts.append(contact_id)  # more are waiting: continue in a new job
    return effects


def _apply_pending(
    session: Session,
    registry: Registry,
    contact: Contact,
    pending: list[Event],
    *,
    now: datetime,
    isolate: bool = False,
) -> Effects:
    effects = Effects()
    for event in pending:
        if not isolate:
            effects.extend(apply_event(session, registry, contact, event, now=now))
            continue
        try:
            with session.begin_nested():
                effects.extend(apply_event(session, registry, contact, event, now=now))
        except Exception as exc:  # a bug in a rule or workflow: keep the event, say why
            log.exception("event %s for contact %s failed", event.id, contact.id)
            session.refresh(contact)
            event.status = EventStatus.FAILED
            event.error = f"{type(exc).__name__}: {exc}"
            event.processed_at = now
            session.add(event)
    return effects


def apply_event(
    session: Session, registry: Registry, contact: Contact, event: Event, *, now: datetime
) -> Effects:
    """Everything one event does to one contact, in a fixed order:

    1. note which condition triggers/goals/exits hold *before* the event;
    2. rules: score, then triggers offered to the stage machine (stage moves end and start
       stage-bound workflows);
    3. live enrollments: a goal event converts, an exit event exits, an awaited event
       resumes a ``wait_for_event``;
    4. workflows triggered by this event start;
    5. conditions that turned true (score, attribute, segment) convert, exit or start.
    """
    effects = Effects()
    if event.type == CONTACT_CREATED and event.source == INTERNAL_SOURCE:
        effects.extend(enter_first_stage(session, registry, contact, event, now=now))
        return effects
    before = _conditions_now(session, registry, contact, now)
    # Marked changed before anything below reads the database, so the score, stage and
    # version reach it in one UPDATE at the next autoflush rather than one each.
    contact.updated_at = now
    contact.version += 1
    reacted = False
    if event.type == LIFECYCLE_CHANGED:
        reacted = True
        effects.extend(_follow_crm_stage(session, registry, contact, event, now=now))
    rules = registry.rules.matching(event.type, event.properties)
    score_delta = sum(r.score for r in rules)
    if score_delta:
        contact.score += score_delta
    for rule in rules:
        for trigger in rule.triggers:
            if not registry.machine.allows(contact.stage, trigger):
                continue
            move = registry.machine.fire(
                email=contact.email,
                stage=contact.stage,
                trigger=trigger,
                score=contact.score,
                attributes=contact.attributes,
            )
            if move.moved:
                effects.extend(
                    change_stage(
                        session,
                        registry,
                        contact,
                        move.dest,
                        trigger=trigger,
                        now=now,
                        event_id=event.id,
                        cause=f"event {event.type}",
                    )
                )
    reacted |= bool(rules)
    live_before = live_enrollments(session, contact.id)  # type: ignore[arg-type]
    for enrollment in live_before:
        outcome, step_effects = _react_to_event(
            session, registry, contact, enrollment, event, now=now
        )
        effects.extend(step_effects)
        reacted |= outcome
    for workflow in registry.triggered_by_event(event.type):
        trigger = workflow.trigger
        assert isinstance(trigger, EventReceived)
        if matches(event.properties, trigger.where):
            reacted = True
            effects.extend(
                start_enrollment(
                    session,
                    registry,
                    contact,
                    workflow,
                    now=now,
                    cause_event_id=event.id,
                    why=f"event {event.type}",
                )
            )
    effects.extend(
        _conditions_turned_true(session, registry, contact, before, now=now, event_id=event.id)
    )
    if reacted or registry.knows_event(event.type):
        # A known type that changed nothing this time (an NPS 7 that no rule scores) is
        # processed all the same; "unmapped" is for types nothing in the registry names.
        event.status = EventStatus.PROCESSED
    else:
        log.warning(
            "event type %r has no rule and no workflow waits for it: kept as unmapped "
            "(event %s, contact %s)",
            event.type,
            event.id,
            contact.id,
        )
        event.status = EventStatus.UNMAPPED
    event.processed_at = now
    session.add(event)
    session.add(contact)
    return effects


def _follow_crm_stage(
    session: Session, registry: Registry, contact: Contact, event: Event, *, now: datetime
) -> Effects:
    """The CRM says the contact reached a stage: walk there forward, trigger by trigger."""
    from engine.inbound_crm import forward_path

    effects = Effects()
    target = event.properties.get("stage")
    if target not in registry.journey.stage_names:
        log.info("CRM stage %r maps to no stage of ours: ignored", event.properties.get("value"))
        return effects
    path = forward_path(registry, contact.stage, target)
    if not path:
        log.info(
            "CRM says %s for contact %s, already at or past it (%s): no move",
            target,
            contact.id,
            contact.stage,
        )
        return effects
    for trigger in path:
        move = registry.machine.fire(
            email=contact.email,
            stage=contact.stage,
            trigger=trigger,
            score=contact.score,
            attributes=contact.attributes,
        )
        if not move.moved:
            log.info(
                "CRM move of contact %s held at %s by %s",
                contact.id,
                contact.stage,
                move.refused_by,
            )
            break
        effects.extend(
            change_stage(
                session,
                registry,
                contact,
                move.dest,
                trigger=trigger,
                now=now,
                event_id=event.id,
                cause=f"{event.source} CRM",
            )
        )
    return effects


def _react_to_event(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    event: Event,
    *,
    now: datetime,
) -> tuple[bool, Effects]:
    if enrollment.status not in (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING):
        return False, Effects()  # ended earlier in this same event
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        return False, Effects()
    for goal in workflow.goals:
        if (
            isinstance(goal, EventReceived)
            and goal.type == event.type
            and matches(event.properties, goal.where)
        ):
            end_enrollment(
                session,
                enrollment,
                now=now,
                status=EnrollmentStatus.CONVERTED,
                reason=f"goal reached: {event.type} (event {event.id})",
            )
            return True, Effects()
    for exit_rule in workflow.exit_when:
        if (
            isinstance(exit_rule, EventReceived)
            and exit_rule.type == event.type
            and matches(event.properties, exit_rule.where)
        ):
            end_enrollment(
                session, enrollment, now=now, reason=f"exit on {event.type} (event {event.id})"
            )
            return True, Effects()
    waiting = enrollment.context.get("waiting_for")
    if enrollment.status == EnrollmentStatus.WAITING and waiting and waiting["type"] == event.type:
        node = workflow.program[enrollment.position]
        step = node.step
        if isinstance(step, WaitForEvent) and matches(event.properties, step.where):
            return True, resume_on_event(
                session, registry, contact, enrollment, now=now, event_id=event.id
            )
    return False, Effects()


def _conditions_now(
    session: Session, registry: Registry, contact: Contact, now: datetime
) -> dict[tuple[str, str, int], bool]:
    """Every condition-based trigger, goal and exit, evaluated for this contact now."""
    ctx = EvalContext(session, contact, now)
    state: dict[tuple[str, str, int], bool] = {}
    for workflow in registry.workflows.values():
        for role, items in (
            ("trigger", (workflow.trigger,)),
            ("goal", workflow.goals),
            ("exit", workflow.exit_when),
        ):
            for index, item in enumerate(items):
                if isinstance(item, ConditionMet):
                    state[(workflow.name, role, index)] = item.condition.evaluate(ctx)
    return state


def _conditions_turned_true(
    session: Session,
    registry: Registry,
    contact: Contact,
    before: dict[tuple[str, str, int], bool],
    *,
    now: datetime,
    event_id: int | None,
) -> Effects:
    if not before:
        return Effects()
    after = _conditions_now(session, registry, contact, now)
    turned = {key for key, value in after.items() if value and not before.get(key, False)}
    effects = Effects()
    if not turned:
        return effects
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        for name, role, index in turned:
            if name != enrollment.workflow or role == "trigger":
                continue
            workflow = registry.workflows[name]
            item = (workflow.goals if role == "goal" else workflow.exit_when)[index]
            assert isinstance(item, ConditionMet)
            if role == "goal":
                end_enrollment(
                    session,
                    enrollment,
                    now=now,
                    status=EnrollmentStatus.CONVERTED,
                    reason=f"goal reached: {item.condition.describe()}",
                )
            else:
                end_enrollment(
                    session, enrollment, now=now, reason=f"exit: {item.condition.describe()}"
                )
            break
    for name, role, _index in sorted(turned):
        if role == "trigger":
            workflow = registry.workflows[name]
            assert isinstance(workflow.trigger, ConditionMet)
            why = workflow.trigger.name or workflow.trigger.condition.describe()
            effects.extend(
                start_enrollment(
                    session, registry, contact, workflow, now=now, cause_event_id=event_id, why=why
                )
            )
    return effects


def enter_first_stage(
    session: Session, registry: Registry, contact: Contact, event: Event, *, now: datetime
) -> Effects:
    session.add(
        StageTransition(
            contact_id=contact.id,
            from_stage="",
            to_stage=contact.stage,  # type: ignore[arg-type]
            trigger="created",
            event_id=event.id,
            at=now,
        )
    )
    event.status = EventStatus.PROCESSED
    event.processed_at = now
    session.add(event)
    effects = Effects()
    for workflow in registry.triggered_by_stage(contact.stage):
        effects.extend(
            start_enrollment(
                session,
                registry,
                contact,
                workflow,
                now=now,
                cause_event_id=event.id,
                why=f"entered stage {contact.stage}",
            )
        )
    return effects


def change_stage(
    session: Session,
    registry: Registry,
    contact: Contact,
    dest: str,
    *,
    trigger: str,
    now: datetime,
    event_id: int | None,
    cause: str = "",
) -> Effects:
    """Record a stage change and let workflows react: stage-bound enrollments of the old
    stage exit, goals and exits on the new stage end theirs, and workflows for leaving the
    old stage and entering the new one start."""
    source = contact.stage
    contact.stage = dest
    contact.stage_entered_at = now
    session.add(
        StageTransition(
            contact_id=contact.id,
            from_stage=source,
            to_stage=dest,  # type: ignore[arg-type]
            trigger=trigger,
            event_id=event_id,
            at=now,
        )
    )
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
        if workflow is None:
            continue
        if any(isinstance(g, StageEntered) and g.stage == dest for g in workflow.goals):
            end_enrollment(
                session,
                enrollment,
                now=now,
                status=EnrollmentStatus.CONVERTED,
                reason=f"goal reached: entered {dest}",
            )
        elif any(isinstance(x, StageEntered) and x.stage == dest for x in workflow.exit_when):
            end_enrollment(session, enrollment, now=now, reason=f"exit: entered {dest}")
        elif (
            workflow.exit_on_stage_left
            and isinstance(workflow.trigger, StageEntered)
            and workflow.trigger.stage == source
        ):
            end_enrollment(session, enrollment, now=now, reason=f"left stage {source}")
    effects = Effects()
    why = f"{trigger}: {source} -> {dest}" + (f" ({cause})" if cause else "")
    for workflow in registry.triggered_by_stage_left(source):
        effects.extend(
            start_enrollment(
                session,
                registry,
                contact,
                workflow,
                now=now,
                cause_event_id=event_id,
                why=f"left {source}; {why}",
            )
        )
    for workflow in registry.triggered_by_stage(dest):
        effects.extend(
            start_enrollment(
                session,
                registry,
                contact,
                workflow,
                now=now,
                cause_event_id=event_id,
                why=f"entered {dest}; {why}",
            )
        )
    return effects


def wake_enrollment(
    session: Session, registry: Registry, enrollment_id: int, *, now: datetime
) -> Effects:
    """Continue a waiting enrollment if its time has come; a no-op for a duplicate wake.

    Meant for the ``wake_enrollment`` job's own transaction: its commit skips the disk flush
    (see ``skip_commit_flush``)."""
    skip_commit_flush(session)
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return Effects()
    contact = lock_contact(session, enrollment.contact_id)
    session.refresh(enrollment)  # re-read under the contact's lock
    known_enrollments.keep_enrollments(session)
    if (
        contact is None
        or enrollment.status != EnrollmentStatus.WAITING
        or enrollment.wake_at is None
        or enrollment.wake_at > now
    ):
        return Effects()
    return wake(session, registry, contact, enrollment, now=now)


def wake_enrollments_job(
    db: Engine, registry: Registry, enrollment_ids: list[int], *, now: datetime
) -> Effects:
    """Continue several due enrollments in one transaction, committed; what to enqueue.

    Their contacts are locked in one statement in id order and the enrollments re-read under
    those locks, so a duplicate or stale wake is a no-op as in ``wake_enrollment``. If
    anything raises, the transaction is rolled back whole and each enrollment is woken in a
    transaction of its own; the first error is raised after the others committed.
    """
    ids = sorted(set(enrollment_ids))
    try:
        with transaction(db) as session:
            skip_commit_flush(session)
            return _wake_together(session, registry, ids, now=now)
    except Exception as exc:
        log.warning(
            "enrollments %s: waking together failed (%s: %s); one by one instead",
            ids,
            type(exc).__name__,
            exc,
        )
    effects = Effects()
    failure: Exception | None = None
    for enrollment_id in ids:
        try:
            with transaction(db) as session:
                effects.extend(wake_enrollment(session, registry, enrollment_id, now=now))
        except Exception as exc:
            log.exception("waking enrollment %s failed", enrollment_id)
            failure = failure or exc
    if failure is not None:
        raise PartlyFailed(effects, failure) from failure
    return effects


def _wake_together(
    session: Session, registry: Registry, ids: list[int], *, now: datetime
) -> Effects:
    owners = sorted(
        set(session.exec(select(Enrollment.contact_id).where(col(Enrollment.id).in_(ids))).all())
    )
    if not owners:
        return Effects()
    contacts = {
        c.id: c
        for c in session.exec(
            select(Contact)
            .where(col(Contact.id).in_(owners))
            .order_by(col(Contact.id))
            .with_for_update()
        ).all()
    }
    known_enrollments.keep_enrollments(session)
    enrollments = session.exec(
        select(Enrollment)
        .where(col(Enrollment.id).in_(ids))
        .order_by(col(Enrollment.id))
        .execution_options(populate_existing=True)  # as they are under the locks
    ).all()
    effects = Effects()
    for enrollment in enrollments:
        contact = contacts.get(enrollment.contact_id)
        if (
            contact is None
            or enrollment.status != EnrollmentStatus.WAITING
            or enrollment.wake_at is None
            or enrollment.wake_at > now
        ):
            continue
        effects.extend(wake(session, registry, contact, enrollment, now=now))
    return effects
