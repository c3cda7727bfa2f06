"""Running workflow enrollments: walk the compiled program, wait, resume, end.

All of it happens inside the caller's transaction (DESIGN.md section 3): the enrollment's new
position and the action rows its steps write commit together, so a step runs once. Every
decision (a branch taken, a variant drawn, a step skipped) is written to the enrollment's
``context["trail"]`` (engine/trail.py), and every action's ``reason`` says which workflow,
version, step and event caused it.

Around the run: entering a workflow (engine/entry.py); when a wait wakes, and waits that
follow their date or the contact's time zone (engine/waits.py); what a transaction enqueues
once it has committed (engine/effects.py); the workflow version an enrollment runs on, and
a contact's live enrollments (engine/enrollments.py).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Session

from engine.conditions import context_for
from engine.db import keep
from engine.effects import Effects
from engine.enrollments import LIVE, live_enrollments, workflow_for

# Re-exported: engine/cli_workflows.py and engine/runtime.py import these from here (and
# engine/runtime.py and engine/cli_actions.py import ``Effects``).
from engine.enrollments import count_at_steps as count_at_steps
from engine.enrollments import remember_version as remember_version
from engine.models import Action, ActionStatus, Contact, Enrollment, EnrollmentStatus
from engine.new_rows import new_row
from engine.registry import Registry
from engine.steps import (
    Branch,
    CallWebhook,
    ChangeScore,
    CreateCRMNote,
    CreateCRMTask,
    Exit,
    MoveStage,
    Node,
    SendEmail,
    SetAttribute,
    Split,
    Tag,
    UpdateCRM,
    Wait,
    WaitForEvent,
    WaitUntil,
    WaitUntilDate,
    transactional_ahead,
)
from engine.trail import note_on_trail
from engine.waits import (
    ABOUT_THE_WAIT,
    PAUSED,
    WAITING_UNTIL_DATE,
    WAITING_UNTIL_TIME,
    follow_date_changes,
    rezoned,
    wake_time,
    without_a_date,
)
from engine.workflow import Workflow

log = logging.getLogger(__name__)

# The sweeper re-dispatches a pending action only after this; the normal path is faster.
DISPATCH_LEASE = timedelta(minutes=5)


def advance(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    *,
    now: datetime,
) -> Effects:
    """Run from ``enrollment.position`` until a wait, an exit or the end."""
    effects = Effects()
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return effects
    program = workflow.program
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.wake_at = None
    if any(key in enrollment.context for key in ABOUT_THE_WAIT):
        enrollment.context = {
            k: v for k, v in enrollment.context.items() if k not in ABOUT_THE_WAIT
        }
    position: int | None = enrollment.position
    while position is not None and position < len(program):
        node = program[position]
        step = node.step
        if isinstance(step, Wait | WaitUntil | WaitUntilDate):
            wake = wake_time(step, contact, now)
            position = node.next
            if wake is not None and wake > now:
                _park(enrollment, position, wake, now)
                # Followed if the date changes, or the contact's time zone (a local time).
                if isinstance(step, WaitUntilDate):
                    waiting = {"attribute": step.attribute, "step": node.id}
                    enrollment.context = {
                        **enrollment.context,
                        WAITING_UNTIL_DATE: {**waiting, "zone": contact.timezone},
                    }
                elif isinstance(step, WaitUntil):
                    enrollment.context = {
                        **enrollment.context,
                        WAITING_UNTIL_TIME: {"step": node.id, "zone": contact.timezone},
                    }
                return effects
            if wake is None:
                assert isinstance(step, WaitUntilDate)  # the only wait that may have no time
                note = without_a_date(contact, enrollment, step, "went on")
            else:
                note = "wait already over: went on"
            note_on_trail(enrollment, node, now, note)
            continue
        if isinstance(step, WaitForEvent):
            enrollment.context = {
                **enrollment.context,
                "waiting_for": {"type": step.type, "step": node.id},
            }
            _park(enrollment, position, now + step.timeout, now)
            return effects
        if isinstance(step, Exit):
            end_enrollment(session, enrollment, now=now, reason=step.reason)
            return effects
        position = _run(session, registry, contact, enrollment, workflow, node, now, effects)
        if enrollment.status not in LIVE:  # a step (move_stage) ended this enrollment
            return effects
    enrollment.position = len(program)
    end_enrollment(
        session, enrollment, now=now, reason="completed", status=EnrollmentStatus.COMPLETED
    )
    return effects


def resume_on_event(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    *,
    now: datetime,
    event_id: int | None,
) -> Effects:
    """The event a ``wait_for_event`` waited for arrived first: take its path."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return Effects()
    node = workflow.program[enrollment.position]
    note_on_trail(enrollment, node, now, f"event arrived first (event {event_id})")
    return _jump(session, registry, contact, enrollment, node.targets["event"], now)


def wake(
    session: Session, registry: Registry, contact: Contact, enrollment: Enrollment, *, now: datetime
) -> Effects:
    """A wait is over: a plain wait goes on; a wait for an event takes its timeout path. A
    wait for a local time computed in a zone the contact has left since (her new zone was
    recorded, not yet applied: ``follow_zone_changes``) waits on for that time in her zone."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return Effects()
    if "waiting_for" in enrollment.context and enrollment.position < len(workflow.program):
        node = workflow.program[enrollment.position]
        note_on_trail(enrollment, node, now, "timed out waiting for the event")
        return _jump(session, registry, contact, enrollment, node.targets["timeout"], now)
    if rezoned(session, registry, contact, enrollment, now=now):
        return Effects()
    return advance(session, registry, contact, enrollment, now=now)


def end_enrollment(
    session: Session,
    enrollment: Enrollment,
    *,
    now: datetime,
    reason: str,
    status: str = EnrollmentStatus.EXITED,
) -> None:
    enrollment.status = status
    enrollment.wake_at = None
    enrollment.ended_at = now
    enrollment.updated_at = now
    context = {k: v for k, v in enrollment.context.items() if k not in _ENDED_WITHOUT}
    enrollment.context = {**context, "end_reason": reason}
    keep(session, enrollment)


# --- internals --------------------------------------------------------------------------


def _jump(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    target: int | None,
    now: datetime,
) -> Effects:
    enrollment.context = {k: v for k, v in enrollment.context.items() if k != "waiting_for"}
    if target is None:
        enrollment.position = 10**6  # past the end: advance completes it
    else:
        enrollment.position = target
    return advance(session, registry, contact, enrollment, now=now)


_ENDED_WITHOUT = ("waiting_for", PAUSED)
"""Context keys an ended enrollment no longer needs."""


_UNSET = object()


def _park(enrollment: Enrollment, position: int | None, wake_at: datetime, now: datetime) -> None:
    enrollment.position = 10**6 if position is None else position
    enrollment.status = EnrollmentStatus.WAITING
    enrollment.wake_at = wake_at
    enrollment.updated_at = now


def _run(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    workflow: Workflow,
    node: Node,
    now: datetime,
    effects: Effects,
) -> int | None:
    """Run one non-waiting step; return the next position."""
    step = node.step
    if isinstance(step, Branch):
        ctx = context_for(session, contact, now, enrollment)
        taken = "then" if step.condition.evaluate(ctx) else "else"
        # In the words of branch(condition, then=[...], otherwise=[...]).
        answer = "yes: then" if taken == "then" else "no: otherwise"
        note_on_trail(enrollment, node, now, f"{step.condition.describe()}? {answer}")
        return node.targets[taken]
    if isinstance(step, Split):
        # Keyed by the address, not the row id: a contact draws the same variant in any
        # database (a harness test, a simulation, production) whoever was created first.
        variant = choose_variant(step.weights, f"{contact.email}:{workflow.name}:{node.id}")
        variants = {**enrollment.context.get("variants", {}), node.id: variant}
        enrollment.context = {**enrollment.context, "variants": variants}
        note_on_trail(enrollment, node, now, f"variant {variant}")
        return node.targets[variant]
    if isinstance(step, SetAttribute):
        changed = contact.attributes.get(step.name, _UNSET) != step.value
        contact.attributes = {**contact.attributes, step.name: step.value}
        if changed:  # a trial extended by a step moves a reminder as an input would
            follow_date_changes(
                session, registry, contact, (step.name,), now=now, running=enrollment
            )
    elif isinstance(step, Tag):
        tags = [t for t in (contact.attributes.get("tags") or []) if t != step.tag]
        if not step.remove:
            tags.append(step.tag)
        contact.attributes = {**contact.attributes, "tags": sorted(tags)}
    elif isinstance(step, ChangeScore):
        contact.score += step.delta
    elif isinstance(step, MoveStage):
        _move(session, registry, contact, enrollment, node, step, now, effects)
    else:
        action = _action(contact, enrollment, workflow, node, now)
        session.add(action)  # written with the job's next flush (see Effects)
        effects.add_action(action, marketing=bool(action.payload.get("marketing", False)))
    contact.updated_at = now
    keep(session, contact)
    return node.next


def _move(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    node: Node,
    step: MoveStage,
    now: datetime,
    effects: Effects,
) -> None:
    from engine.pipeline import change_stage

    if not registry.machine.allows(contact.stage, step.trigger):
        note_on_trail(
            enrollment, node, now, f"stage {contact.stage} does not allow {step.trigger}: skipped"
        )
        return
    move = registry.machine.fire(
        email=contact.email,
        stage=contact.stage,
        trigger=step.trigger,
        score=contact.score,
        attributes=contact.attributes,
    )
    if not move.moved:
        note_on_trail(enrollment, node, now, f"{step.trigger} held by guard {move.refused_by}")
        return
    enrollment.position = node.next if node.next is not None else 10**6
    effects.extend(
        change_stage(
            session,
            registry,
            contact,
            move.dest,
            trigger=step.trigger,
            now=now,
            event_id=None,
            cause=f"workflow {enrollment.workflow}",
        )
    )


def choose_variant(weights: dict[str, int] | Any, key: str) -> str:
    """Deterministic weighted choice: the same contact always lands in the same variant."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % sum(weights.values())
    for name, weight in sorted(weights.items()):
        if bucket < weight:
            return str(name)
        bucket -= weight
    raise AssertionError("unreachable: buckets cover the total weight")


def _action(
    contact: Contact, enrollment: Enrollment, workflow: Workflow, node: Node, now: datetime
) -> Action:
    step = node.step
    kind: str
    payload: dict[str, Any]
    if isinstance(step, SendEmail):
        kind, payload = "email", step.payload()
    elif isinstance(step, UpdateCRM):
        kind, payload = (
            "crm.update",
            {
                "properties": dict(step.properties),
                "stage": contact.stage,
                "score": contact.score,
                "workflow": workflow.name,
            },
        )
    elif isinstance(step, CreateCRMTask):
        due = (now + step.due_in).isoformat() if step.due_in else None
        kind, payload = "crm.task", {"subject": step.subject, "body": step.body, "due_at": due}
    elif isinstance(step, CreateCRMNote):
        kind, payload = "crm.note", {"body": step.body}
    elif isinstance(step, CallWebhook):
        kind, payload = "webhook", {"url": step.url, "payload": dict(step.payload)}
    else:
        raise AssertionError(f"not an action step: {step!r}")
    action = new_row(
        Action,
        contact_id=contact.id,  # type: ignore[arg-type]
        enrollment_id=enrollment.id,
        kind=kind,
        payload=payload,
        # Derived from the intent: this enrollment, at this step. A retry, a redelivered
        # message or a second worker computes the same key and the unique constraint holds.
        idempotency_key=(
            _AWAITS_ENROLLMENT_ID if enrollment.id is None else action_key(enrollment.id, node.id)
        ),
        status=ActionStatus.PENDING,
        reason={
            "workflow": workflow.name,
            "version": enrollment.version,
            "step": node.id,
            "trigger": enrollment.context.get("trigger", ""),
            "cause_event_id": enrollment.cause_event_id,
            "variants": enrollment.context.get("variants", {}),
        },
        next_attempt_at=now,
        lease_until=now + DISPATCH_LEASE,
        created_at=now,
        updated_at=now,
    )
    if enrollment.id is None:  # started in this flush: the unit of work fills the id in
        set_attribute(action, "enrollment", enrollment)
    return action


def action_key(enrollment_id: int, step: str) -> str:
    """The idempotency key of the action an enrollment's step writes."""
    return f"enrollment:{enrollment_id}:step:{step}"


_AWAITS_ENROLLMENT_ID = "enrollment:?"


@event.listens_for(Action, "before_insert")
def _key_of_a_new_enrollments_action(_mapper: Any, _connection: Any, action: Action) -> None:
    """An action of an enrollment written in the same flush: the enrollment went first (the
    ``Action.enrollment`` relationship orders them) and its id is known now."""
    if action.idempotency_key == _AWAITS_ENROLLMENT_ID:
        assert action.enrollment_id is not None, "the enrollment was not written first"
        action.idempotency_key = action_key(action.enrollment_id, str(action.reason["step"]))


def exit_unsubscribed(
    session: Session, registry: Registry, contact: Contact, *, now: datetime
) -> None:
    """The contact unsubscribed: end their marketing workflows (receipts carry on). A
    workflow with a transactional email still ahead of the enrollment (on any path) goes
    on, so that email is sent; its marketing emails are skipped at send time ("contact is
    unsubscribed"), each saying so in the timeline."""
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
        if workflow is None or not (workflow.exit_on_unsubscribe and workflow.sends_marketing):
            continue
        if transactional_ahead(workflow.program, enrollment.position):
            log.info(
                "contact %s stays in %s after unsubscribing: a transactional email is ahead "
                "(its marketing emails are skipped)",
                contact.id,
                workflow.name,
            )
            continue
        end_enrollment(session, enrollment, now=now, reason="unsubscribed")
