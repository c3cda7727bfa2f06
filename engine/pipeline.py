"""The one path every input takes (DESIGN.md section 2).

``record_event`` (recording.py) stores an event idempotently (keyed by its source's id).
``process_contact`` takes the contact's row lock and applies its pending events in arrival
order: rules and score, the stage machine, workflow exits and entries, and the action rows
they write, all in the caller's transaction. ``wake_enrollment`` continues an enrollment
whose wait is over. The transactions jobs run these in, alone or in batches, are in
pipeline_jobs.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from engine import known_enrollments
from engine.attribute_changes import AttributeViews, changed_keys
from engine.clock import ensure_utc
from engine.conditions import Condition, EvalContext, conditions_as_of, matches
from engine.db import keep, skip_commit_flush
from engine.effects import Effects
from engine.enrollments import live_enrollments, older_versions, workflow_for
from engine.entry import start_enrollment
from engine.executor import end_enrollment, resume_on_event, wake
from engine.feedback import apply_feedback
from engine.models import (
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    EventStatus,
    StageTransition,
)
from engine.new_rows import new_row
from engine.recording import (
    CONTACT_CREATED,
    INTERNAL_SOURCE,
)
from engine.registry import Registry
from engine.steps import WaitForEvent
from engine.waits import follow_date_changes, follow_zone_changes
from engine.withdrawals import mark_withdrawn, withdraw_waiting_emails
from engine.workflow import ConditionMet, EventReceived, StageEntered, Workflow

log = logging.getLogger(__name__)

LIFECYCLE_CHANGED = "crm.lifecycle_changed"
EVENTS_PER_PASS = 200


def lock_contact(session: Session, contact_id: int) -> Contact | None:
    """Load the contact holding its row lock until commit (PostgreSQL ``FOR NO KEY
    UPDATE``: it serialises the contact's writers, and an erasure's ``DELETE``, but not the
    ``FOR KEY SHARE`` lock every event row written for her takes for its foreign key, so
    recording her events never waits for a job processing her;
    SQLite's ``BEGIN IMMEDIATE`` already serialises writers)."""
    return session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update(key_share=True)
    ).first()


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
    views = _attribute_views(session, registry, contact, pending)
    for event in pending:
        if not isolate:
            effects.extend(apply_event(session, registry, contact, event, now=now, views=views))
            continue
        try:
            with session.begin_nested():
                effects.extend(apply_event(session, registry, contact, event, now=now, views=views))
        except Exception as exc:  # a bug in a rule or workflow: keep the event, say why
            log.exception("event %s for contact %s failed", event.id, contact.id)
            session.refresh(contact)
            event.status = EventStatus.FAILED
            event.error = f"{type(exc).__name__}: {exc}"
            event.processed_at = now
            session.add(event)
    return effects


def _attribute_views(
    session: Session, registry: Registry, contact: Contact, pending: list[Event]
) -> AttributeViews:
    """The contact's attributes as they stood before and after each of ``pending``: the
    stored ones hold every recorded event's change, these pending ones' and any later."""
    changes: list[tuple[int, Mapping[str, Any]]] = [
        (e.id, e.attributes_before)  # type: ignore[misc]  # stored events have ids
        for e in pending
        if e.attributes_before
    ]
    if pending and len(pending) >= EVENTS_PER_PASS and registry.condition_items:
        # Events left for the next pass changed the stored attributes too.
        later = session.exec(
            select(Event.id, Event.attributes_before)
            .where(
                Event.contact_id == contact.id,
                Event.status == EventStatus.PENDING,
                col(Event.id) > pending[-1].id,
                col(Event.attributes_before).is_not(None),
            )
            .order_by(col(Event.id))
        ).all()
        changes.extend(tuple(row) for row in later)  # type: ignore[misc]
    return AttributeViews(contact, changes)


def apply_event(
    session: Session,
    registry: Registry,
    contact: Contact,
    event: Event,
    *,
    now: datetime,
    views: AttributeViews | None = None,
) -> Effects:
    """Everything one event does to one contact, in a fixed order:

    1. note which condition triggers/goals/exits hold *before* the event; an event that
       sets consent (``email.unsubscribed``) sets it;
    2. rules: score, then triggers offered to the stage machine (stage moves end and start
       stage-bound workflows);
    3. live enrollments: a goal event converts, an exit event exits, an awaited event
       resumes a ``wait_for_event``;
    4. workflows triggered by this event start;
    5. conditions that turned true (score, attribute, segment) convert, exit or start.

    Conditions on attributes read them as they stood before and after this event
    (``views``, made for the contact's pending events; by default from this event alone):
    they were merged into the contact when it was recorded.
    """
    assert event.id is not None  # a stored event
    if views is None:
        views = AttributeViews(contact, [(event.id, event.attributes_before or {})])
    seen = views
    event_id = event.id
    # Entry rules, branches and stage guards read the contact as of this event, not with
    # the later events of the job already stored (engine.conditions.conditions_as_of).
    with conditions_as_of(session, event_id, lambda: seen.after(event_id)):
        return _apply_event(session, registry, contact, event, now=now, views=views)


def _apply_event(
    session: Session,
    registry: Registry,
    contact: Contact,
    event: Event,
    *,
    now: datetime,
    views: AttributeViews,
) -> Effects:
    effects = Effects()
    if event.type == CONTACT_CREATED and event.source == INTERNAL_SOURCE:
        # Made by an event that arrived late (a backfill of orders from addresses not seen
        # before): she is placed in the first stage, as an import places her, and nothing
        # starts for her (a welcome to every backfilled buyer).
        late = _late_by(registry, event, internal=True)
        effects.extend(
            enter_first_stage(session, registry, contact, event, now=now, late=late is not None)
        )
        if late is not None:
            return effects
        # Before it the contact did not exist, so no condition held: one that holds for the
        # new contact (created with the attributes of a segment) turns true here, once.
        assert event.id is not None
        nothing = {key: False for key, _condition in registry.condition_items}
        effects.extend(
            _conditions_turned_true(
                session, registry, contact, nothing, now=now, event_id=event.id, views=views
            )
        )
        return effects
    # Conditions as they stood before this event: its own row (and any later one) is
    # already stored, and an event-based condition must not count it yet; its attributes
    # (and any later event's) are merged, and one on attributes must not see them yet.
    assert event.id is not None  # a stored event
    late = _late_by(registry, event)
    if late is not None:
        return _keep_as_history(session, registry, contact, event, late, now=now)
    before = _conditions_now(
        session, registry, contact, now, upto=event.id - 1, attributes=views.before(event.id)
    )
    # Marked changed before anything below reads the database, so the score, stage and
    # version reach it in one UPDATE at the next autoflush rather than one each.
    contact.updated_at = now
    contact.version += 1
    # An unsubscribe, a bounce or a spam report (from the track API, a webhook, any source
    # but those applied when recorded) first, so the workflows below start as for an
    # unsubscribed contact and conditions on ``subscribed()`` see the change.
    apply_feedback(session, registry, contact, event, now=now)
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
                attributes=views.after(event.id),
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
    _withdraw_after_the_end(session, registry, contact, lambda w: _event_ends(w, event), now)
    for workflow in registry.triggered_by_event(event.type):
        received = workflow.trigger
        assert isinstance(received, EventReceived)
        if matches(event.properties, received.where):
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
        _conditions_turned_true(
            session, registry, contact, before, now=now, event_id=event.id, views=views
        )
    )
    # A wait counted from a date this event changed (a trial extended) follows the new date.
    follow_date_changes(session, registry, contact, changed_keys(event.attributes_before), now=now)
    # A wait for a local time follows the contact's time zone, which an input merged into
    # her when it was recorded (an event's ``timezone``, an import): each such wait notes
    # the zone its wake-up was computed in, so a change is found whichever path made it.
    follow_zone_changes(session, registry, contact, now=now)
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
    _keep_event(session, event)
    keep(session, contact)
    return effects


def _keep_as_history(
    session: Session,
    registry: Registry,
    contact: Contact,
    event: Event,
    late: timedelta,
    *,
    now: datetime,
) -> Effects:
    """A late event is history, not news: a backfilled order from before her churn must
    not reactivate her, nor last month's orders each send a thank-you. It moves no stage,
    scores nothing, and starts, resumes, converts or exits no workflow (conditions
    included); conditions read it later as what happened. What always applies applies:
    consent and suppression (by event time), and the attributes or zone it merged into her
    when recorded, which waits counted from them follow."""
    log.info(
        "event %s (%s, contact %s) arrived %s after it occurred: kept as history, "
        "applied to no stage, score or workflow",
        event.id,
        event.type,
        contact.id,
        late,
    )
    contact.updated_at = now
    contact.version += 1
    apply_feedback(session, registry, contact, event, now=now)
    follow_date_changes(session, registry, contact, changed_keys(event.attributes_before), now=now)
    follow_zone_changes(session, registry, contact, now=now)
    event.status = EventStatus.LATE
    event.processed_at = now
    _keep_event(session, event)
    keep(session, contact)
    return Effects()


def _late_by(registry: Registry, event: Event, *, internal: bool = False) -> timedelta | None:
    """How long after it occurred ``event`` arrived, when that is longer than the registry
    applies events live (``LATE_EVENTS_AFTER``); None otherwise. Events the engine writes
    itself (unless ``internal``: a contact's creation carries the time of the event that
    made her) and CRM stage changes (which follow their own order) are never late."""
    if registry.late_after is None or (event.source == INTERNAL_SOURCE and not internal):
        return None
    if event.type == LIFECYCLE_CHANGED:
        return None
    delay = ensure_utc(event.received_at) - ensure_utc(event.occurred_at)
    return delay if delay > registry.late_after else None


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
    ended = _event_ends(workflow, event)
    if ended is not None:
        _end_early(session, enrollment, now, *ended)
        return True, Effects()
    waiting = enrollment.context.get("waiting_for")
    if enrollment.status == EnrollmentStatus.WAITING and waiting and waiting["type"] == event.type:
        node = workflow.program[enrollment.position]
        step = node.step
        if (
            isinstance(step, WaitForEvent)
            and matches(event.properties, step.where)
            and _occurred_while_waiting(enrollment, event)
        ):
            return True, resume_on_event(
                session, registry, contact, enrollment, now=now, event_id=event.id
            )
    return False, Effects()


def _occurred_while_waiting(enrollment: Enrollment, event: Event) -> bool:
    """Whether ``event`` occurred before the wait's timeout: one that occurred at or after it
    (sent a little late, it arrived before the scheduler took the timeout) does not win
    over the timeout, as an event at exactly that instant does not. (An event arriving
    more than ``LATE_EVENTS_AFTER`` after it occurred resumes no wait at all.)"""
    wake = enrollment.wake_at
    return wake is None or ensure_utc(event.occurred_at) < ensure_utc(wake)


def _conditions_now(
    session: Session,
    registry: Registry,
    contact: Contact,
    now: datetime,
    *,
    upto: int,
    attributes: Mapping[str, Any],
) -> dict[tuple[str, str, int], bool]:
    """Every condition-based trigger, goal and exit, evaluated for this contact now, counting
    its events up to the id ``upto`` and reading ``attributes`` as its attributes. A goal or
    an exit is evaluated for the contact's live enrollment in its workflow, if any:
    ``opened``/``clicked`` name that enrollment's emails, and ``did_event`` without
    ``within`` counts since entering it."""
    if not registry.condition_items and not _older_versions_have_conditions(session, registry):
        return {}  # nothing to evaluate: the enrollments need not be read
    live = {e.workflow: e for e in live_enrollments(session, contact.id)}  # type: ignore[arg-type]
    items = _condition_items(session, registry, live.values())
    if not items:
        return {}
    plain = EvalContext(session, contact, now, upto_event=upto, attributes=attributes)
    found = {}
    for key, condition in items:
        enrollment = live.get(key[0]) if key[1] != "trigger" else None
        ctx = plain
        if enrollment is not None:
            ctx = EvalContext(
                session,
                contact,
                now,
                enrollment=enrollment,
                upto_event=upto,
                attributes=attributes,
            )
        found[key] = condition.evaluate(ctx)
    return found


def _condition_items(
    session: Session, registry: Registry, live: Iterable[Enrollment]
) -> Sequence[tuple[tuple[str, str, int], Condition]]:
    """The registry's condition triggers, goals and exits, with the goals and exits of a
    workflow the contact is in on an older version taken from that version: an enrollment
    finishes on the version it started (DESIGN.md, principle 5), so a release that drops
    a goal, or adds one, does not change how her enrollment ends."""
    items = registry.condition_items
    older = [e for e in live if _on_an_older_version(registry, e)]
    if not older:
        return items
    replaced = {e.workflow for e in older}
    kept = [item for item in items if item[0][1] == "trigger" or item[0][0] not in replaced]
    for enrollment in older:
        workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
        if workflow is None:  # its spec was never stored: the current one, as before
            kept += [item for item in items if item[0][0] == enrollment.workflow]
            continue
        for role, rules in (("goal", workflow.goals), ("exit", workflow.exit_when)):
            for index, rule in enumerate(rules):
                if isinstance(rule, ConditionMet):
                    kept.append(((workflow.name, role, index), rule.condition))
    return kept


OLDER_VERSIONS_READ_EVERY_S = 60.0
"""How long a process trusts what it read of the stored versions: a rolling deploy stores
a newer one (for this process, "not current") while it runs."""


def _older_versions_have_conditions(session: Session, registry: Registry) -> bool:
    """Whether a stored version of one of the registry's workflows other than its current
    one has a condition goal or exit (an enrollment still on it is evaluated against it).
    Read at most once a minute per process and registry."""
    cached: tuple[float, bool] | None = registry.__dict__.get("_older_conditions")
    if cached is not None and time.monotonic() - cached[0] < OLDER_VERSIONS_READ_EVERY_S:
        return cached[1]
    with session.no_autoflush:  # a job's pending rows stay for its one flush of each table
        older = older_versions(session, registry)
    found = any(
        isinstance(rule, ConditionMet) for old in older for rule in (*old.goals, *old.exit_when)
    )
    registry.__dict__["_older_conditions"] = (time.monotonic(), found)
    return found


def _on_an_older_version(registry: Registry, enrollment: Enrollment) -> bool:
    current = registry.workflows.get(enrollment.workflow)
    return current is not None and current.version != enrollment.version


def _conditions_turned_true(
    session: Session,
    registry: Registry,
    contact: Contact,
    before: dict[tuple[str, str, int], bool],
    *,
    now: datetime,
    event_id: int,
    views: AttributeViews,
) -> Effects:
    if not before:
        return Effects()
    after = _conditions_now(
        session, registry, contact, now, upto=event_id, attributes=views.after(event_id)
    )
    turned = {key for key, value in after.items() if value and not before.get(key, False)}
    effects = Effects()
    if not turned:
        return effects
    # A workflow's goals before its exits (a click is an open too: "opened" as a goal and
    # "clicked" as an exit turn together, and the contact converted), each in its order.
    in_order = sorted(turned, key=lambda key: (key[1] != "goal", key))
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        for name, role, index in in_order:
            if name != enrollment.workflow or role == "trigger":
                continue
            workflow = (
                workflow_for(session, registry, name, enrollment.version)
                or registry.workflows[name]
            )
            _end_early(session, enrollment, now, *_condition_ends(workflow, role, index))
            break
    # The first of a workflow's goals, else of its exits, that turned true.
    ending = {(n, r): i for n, r, i in sorted(turned, reverse=True) if r != "trigger"}

    def ends(workflow: Workflow) -> tuple[str, bool] | None:
        for role in ("goal", "exit"):
            if (workflow.name, role) in ending:
                return _condition_ends(workflow, role, ending[workflow.name, role])
        return None

    _withdraw_after_the_end(session, registry, contact, ends, now)
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


def _condition_ends(workflow: Workflow, role: str, index: int) -> tuple[str, bool]:
    """Why the ``index``-th goal (``role`` "goal") or exit of the workflow, a condition that
    just turned true, ends it, and whether a goal."""
    item = (workflow.goals if role == "goal" else workflow.exit_when)[index]
    assert isinstance(item, ConditionMet)
    if role == "goal":
        return f"goal reached: {item.condition.describe()}", True
    return f"exit: {item.condition.describe()}", False


def _event_ends(workflow: Workflow, event: Event) -> tuple[str, bool] | None:
    """Whether ``event`` meets one of the workflow's goals or exits: why, and whether a goal."""
    for goal in workflow.goals:
        if (
            isinstance(goal, EventReceived)
            and goal.type == event.type
            and matches(event.properties, goal.where)
        ):
            return f"goal reached: {event.type} (event {event.id})", True
    for exit_rule in workflow.exit_when:
        if (
            isinstance(exit_rule, EventReceived)
            and exit_rule.type == event.type
            and matches(event.properties, exit_rule.where)
        ):
            return f"exit on {event.type} (event {event.id})", False
    return None


def _stage_ends(workflow: Workflow, source: str, dest: str) -> tuple[str, bool] | None:
    """Whether moving from ``source`` to ``dest`` meets one of the workflow's goals or exits
    (a stage-bound workflow exits when its stage is left): why, and whether a goal."""
    if any(isinstance(g, StageEntered) and g.stage == dest for g in workflow.goals):
        return f"goal reached: entered {dest}", True
    if any(isinstance(x, StageEntered) and x.stage == dest for x in workflow.exit_when):
        return f"exit: entered {dest}", False
    if (
        workflow.exit_on_stage_left
        and isinstance(workflow.trigger, StageEntered)
        and workflow.trigger.stage == source
    ):
        return f"left stage {source}", False
    return None


class Finished(NamedTuple):
    """An enrollment whose program ran to its end, and its workflow as registered now."""

    id: int
    workflow: Workflow


def _ran_to_the_end(session: Session, registry: Registry, contact_id: int) -> list[Finished]:
    """The contact's latest entry of each workflow whose program has run to its end: an
    email its last steps wrote may still be held, and its goals and exits withdraw it."""
    known = known_enrollments.known_for(session, contact_id)
    if known is None:
        entries = session.exec(
            select(Enrollment.id, Enrollment.workflow).where(
                Enrollment.contact_id == contact_id,
                Enrollment.status == EnrollmentStatus.COMPLETED,
            )
        ).all()
    else:
        entries = [
            (e.id, e.workflow)
            for e in known
            if isinstance(e, known_enrollments.PastEntry) and e.status == EnrollmentStatus.COMPLETED
        ]
    return [
        Finished(id, registry.workflows[name])  # type: ignore[arg-type]
        for id, name in entries
        if name in registry.workflows
    ]


def _withdraw_after_the_end(
    session: Session,
    registry: Registry,
    contact: Contact,
    ends: Callable[[Workflow], tuple[str, bool] | None],
    now: datetime,
) -> None:
    """For workflows that ran to their end: ``ends`` says whether what just happened meets
    one of a workflow's goals or exits (and why); their emails still waiting are withdrawn."""
    assert contact.id is not None
    for finished in _ran_to_the_end(session, registry, contact.id):
        ended = ends(finished.workflow)
        if ended is not None:
            withdraw_waiting_emails(session, finished.id, now=now, why=ended[0])
            mark_withdrawn(session, finished.id, now=now, why=ended[0])


def _end_early(
    session: Session, enrollment: Enrollment, now: datetime, reason: str, goal: bool
) -> None:
    """End ``enrollment`` by a goal (converted) or an exit rule (exited), and withdraw the
    marketing emails it has waiting (held by a guard rail, or waiting to retry)."""
    status = EnrollmentStatus.CONVERTED if goal else EnrollmentStatus.EXITED
    end_enrollment(session, enrollment, now=now, status=status, reason=reason)
    mark_withdrawn(session, enrollment, now=now, why=reason)
    if enrollment.id is not None:  # one started in this transaction has nothing waiting
        withdraw_waiting_emails(session, enrollment.id, now=now, why=reason)


def _keep_event(session: Session, event: Event) -> None:
    """Have the session write the event's new status, if it is an ORM row (a batch job
    reads its events as plain rows and writes their statuses itself: pipeline_jobs.py)."""
    if isinstance(event, Event):
        keep(session, event)


def enter_first_stage(
    session: Session,
    registry: Registry,
    contact: Contact,
    event: Event,
    *,
    now: datetime,
    late: bool = False,
) -> Effects:
    """The new contact enters the journey's first stage: the workflows of that stage start,
    unless ``late`` (her creation arrived as history: she is placed there, as an import
    places a contact, and the event is kept as ``late``)."""
    session.add(
        new_row(
            StageTransition,
            contact_id=contact.id,
            from_stage="",
            to_stage=contact.stage,  # type: ignore[arg-type]
            trigger="created",
            event_id=event.id,
            at=now,
        )
    )
    event.status = EventStatus.LATE if late else EventStatus.PROCESSED
    event.processed_at = now
    _keep_event(session, event)
    effects = Effects()
    for workflow in [] if late else registry.triggered_by_stage(contact.stage):
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
        new_row(
            StageTransition,
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
        ended = _stage_ends(workflow, source, dest)
        if ended is not None:
            _end_early(session, enrollment, now, *ended)
    _withdraw_after_the_end(session, registry, contact, lambda w: _stage_ends(w, source, dest), now)
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
