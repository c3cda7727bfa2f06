"""A contact's timeline: everything that happened to one contact, in one chronological list.

Events, stage transitions, workflow enrollments (entered, a wait paused while an email was
held, ended) and actions each become ``Entry`` rows (kind, instant, one-line summary,
details) merged by time, so an operator can answer "why did this person get that email?"
with one query (DESIGN.md section 9). An event stands at
the instant the engine took it in (processed it, or received it while it waits), the
instant of everything it caused; when it happened by its source's clock is in its details
(and its summary when that was a minute or more earlier). Beside them, the
contact's live enrollments (running or waiting) say what comes next: the step, the next
wake-up and, when a scheduler pass has handed that wake-up to a job, until when it is held
(a wake-up past due with no claim waits for the next pass; one held past its claim's end
is due again). The result is plain dataclasses; ``to_dict()`` gives a JSON-ready view for
the CLI and the HTTP API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from engine.attribute_changes import describe_change
from engine.contacts import normalize_email
from engine.executor import workflow_for
from engine.models import (
    Action,
    ActionStatus,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    StageTransition,
)
from engine.recording import CONTACT_UPDATED
from engine.registry import Registry
from engine.scheduler import current_claims

# Entries at the same instant sort in causal order: grouped by the event that caused them,
# then the event, the stage change it caused, the enrollment that change started, the action
# that enrollment wrote. Entries with no known cause (an exit) come last in their instant.
# This only holds if an event stands at the instant its effects were written: at its
# ``occurred_at`` (stamped when it was recorded, or by its source) it would come before the
# effects of the events processed ahead of it, a new contact's first event before the
# contact's own creation (a virtual clock hides this: there the two instants are one).
_KIND_ORDER = {"event": 0, "stage": 1, "enrollment": 2, "action": 3}
_NO_CAUSE = 2**62


@dataclass(frozen=True)
class Entry:
    kind: str  # "event", "stage", "enrollment" or "action"
    at: datetime
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    cause_event_id: int | None = field(default=None, repr=False)
    row_id: int = field(default=0, repr=False)

    @property
    def sort_key(self) -> tuple[datetime, int, int, int]:
        cause = _NO_CAUSE if self.cause_event_id is None else self.cause_event_id
        return (self.at, cause, _KIND_ORDER.get(self.kind, 9), self.row_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "summary": self.summary,
            "details": _jsonable(self.details),
        }


@dataclass(frozen=True)
class ContactSummary:
    id: int
    email: str
    stage: str
    score: int
    subscription_status: str
    timezone: str
    attributes: dict[str, Any]
    stage_entered_at: datetime
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self.__dict__)


@dataclass(frozen=True)
class LiveEnrollment:
    """An enrollment still running or waiting, and what holds its next wake-up."""

    id: int
    workflow: str
    version: str
    status: str  # "active" or "waiting"
    position: int  # the step it is at
    step: str | None  # that step's id: what runs when it wakes (None: workflows not loaded)
    wake_at: datetime | None
    claimed_until: datetime | None  # a pass handed this wake-up to a job, held until then

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self.__dict__)


@dataclass(frozen=True)
class Timeline:
    contact: ContactSummary
    entries: list[Entry]
    live: list[LiveEnrollment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "contact": self.contact.to_dict(),
            "entries": [e.to_dict() for e in self.entries],
            "live": [e.to_dict() for e in self.live],
        }


def contact_timeline(
    session: Session, email: str, registry: Registry | None = None
) -> Timeline | None:
    """The timeline of the contact with ``email``, or None if there is no such contact.

    With ``registry``, each live enrollment's step is named (from its own version of the
    workflow). Raises ``ValidationError`` when ``email`` is not an address at all.
    """
    email = normalize_email(email)
    contact = session.exec(select(Contact).where(Contact.email == email)).first()
    if contact is None or contact.id is None:
        return None
    cid = contact.id
    entries: list[Entry] = []
    events = session.exec(select(Event).where(Event.contact_id == cid)).all()
    entries.extend(_event_entry(e) for e in events)
    transitions = session.exec(
        select(StageTransition).where(StageTransition.contact_id == cid)
    ).all()
    entries.extend(_stage_entry(t) for t in transitions)
    enrollments = session.exec(select(Enrollment).where(Enrollment.contact_id == cid)).all()
    for enrollment in enrollments:
        entries.extend(_enrollment_entries(enrollment))
    actions = session.exec(
        select(Action).where(Action.contact_id == cid).order_by(col(Action.id))
    ).all()
    entries.extend(_action_entry(a) for a in actions)
    entries.sort(key=lambda e: e.sort_key)
    live = _live(session, list(enrollments))
    if registry is not None:
        live = name_steps(session, registry, live)
    return Timeline(contact=_summary(contact), entries=entries, live=live)


_LIVE = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)


def _live(session: Session, enrollments: list[Enrollment]) -> list[LiveEnrollment]:
    live = sorted((e for e in enrollments if e.status in _LIVE), key=lambda e: e.id or 0)
    held = current_claims(session, [e.id for e in live if e.id is not None])
    return [
        LiveEnrollment(
            id=e.id or 0,
            workflow=e.workflow,
            version=e.version,
            status=str(e.status),
            position=e.position,
            step=None,
            wake_at=e.wake_at,
            claimed_until=held.get(e.id or 0),
        )
        for e in live
    ]


def name_steps(
    session: Session, registry: Registry, live: list[LiveEnrollment]
) -> list[LiveEnrollment]:
    """``live`` with each enrollment's step named, from its own version of the workflow
    (a caller can load the workflows only when there is something to name)."""

    def step(e: LiveEnrollment) -> str | None:
        workflow = workflow_for(session, registry, e.workflow, e.version)
        if workflow is None or not 0 <= e.position < len(workflow.program):
            return None
        return workflow.program[e.position].id

    return [replace(e, step=step(e)) for e in live]


def _summary(contact: Contact) -> ContactSummary:
    assert contact.id is not None
    return ContactSummary(
        id=contact.id,
        email=contact.email,
        stage=contact.stage,
        score=contact.score,
        subscription_status=str(contact.subscription_status),
        timezone=contact.timezone,
        attributes=dict(contact.attributes),
        stage_entered_at=contact.stage_entered_at,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


_NOTED_EARLIER = timedelta(minutes=1)


def _event_entry(event: Event) -> Entry:
    # Processed (or failed) at that instant; still pending: where it waits since it came in.
    at = event.processed_at or event.received_at
    status = f"{event.status}"
    if event.occurred_at <= at - _NOTED_EARLIER:  # sent late or backdated by its source
        status += f"; occurred {event.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    summary = f"{event.type} ({status})"
    if event.type == CONTACT_UPDATED and event.attributes_before:
        # Its properties are the values set: "attributes changed: plan 'free' -> 'pro'".
        change = describe_change(event.attributes_before, event.properties)
        summary = f"{event.type} attributes changed: {change} ({status})"
    elif event.properties:
        shown = ", ".join(f"{k}={v}" for k, v in list(event.properties.items())[:3])
        summary = f"{event.type} {shown} ({status})"
    return Entry(
        kind="event",
        at=at,
        summary=summary,
        details={
            "id": event.id,
            "type": event.type,
            "status": str(event.status),
            "source": event.source,
            "properties": event.properties,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "processed_at": event.processed_at,
            "error": event.error,
            "attributes_before": event.attributes_before,
        },
        cause_event_id=event.id,
        row_id=event.id or 0,
    )


def _stage_entry(transition: StageTransition) -> Entry:
    source = transition.from_stage or "(new)"
    return Entry(
        kind="stage",
        at=transition.at,
        summary=f"{source} -> {transition.to_stage} by {transition.trigger}",
        details={
            "id": transition.id,
            "from": transition.from_stage,
            "to": transition.to_stage,
            "trigger": transition.trigger,
            "event_id": transition.event_id,
        },
        cause_event_id=transition.event_id,
        row_id=transition.id or 0,
    )


def _enrollment_entries(enrollment: Enrollment) -> list[Entry]:
    details = {
        "id": enrollment.id,
        "workflow": enrollment.workflow,
        "version": enrollment.version,
        "entry": enrollment.entry,
        "status": str(enrollment.status),
        "position": enrollment.position,
        "wake_at": enrollment.wake_at,
        "cause_event_id": enrollment.cause_event_id,
    }
    found = [
        Entry(
            kind="enrollment",
            at=enrollment.started_at,
            summary=f"entered workflow {enrollment.workflow}",
            details=details,
            cause_event_id=enrollment.cause_event_id,
            row_id=enrollment.id or 0,
        )
    ]
    found.extend(_pause_entries(enrollment, details))
    if enrollment.ended_at is not None:
        why = enrollment.context.get("end_reason")
        verb = f"{enrollment.status}" + (f": {why}" if why else "")
        found.append(
            Entry(
                kind="enrollment",
                at=enrollment.ended_at,
                summary=f"workflow {enrollment.workflow} {verb}",
                details={**details, "end_reason": why},
                row_id=enrollment.id or 0,
            )
        )
    return found


def _pause_entries(enrollment: Enrollment, details: dict[str, Any]) -> list[Entry]:
    """The times a held email paused this enrollment's wait (engine/pauses.py), from the
    notes its trail keeps: "workflow drip 2-wait: wait extended to ... while email a was
    held until ...". Only the trail's last fifty notes are kept, so a long journey's oldest
    pauses may have gone."""
    found = []
    for note in enrollment.context.get("trail", []):
        if not isinstance(note, dict) or note.get("kind") != "paused" or "at" not in note:
            continue
        found.append(
            Entry(
                kind="enrollment",
                at=datetime.fromisoformat(note["at"]),
                summary=f"workflow {enrollment.workflow} {note['step']}: {note['note']}",
                details={**details, "step": note["step"]},
                row_id=enrollment.id or 0,
            )
        )
    return found


def hold_note(action: Action, *, now: datetime | None = None) -> str | None:
    """What holds a pending action back, as the CLI and the timeline say it: "held until
    2026-01-05 08:00 UTC: quiet hours 21:00-08:00 (Pacific/Auckland)", from the last guard
    rail that deferred it. None when nothing does (or, given ``now``, no longer does)."""
    held = action.reason.get("held") if action.status == ActionStatus.PENDING else None
    if not held:
        return None
    last = held[-1]
    until = datetime.fromisoformat(last["until"])
    if now is not None and until <= now:
        return None
    return f"held until {until:%Y-%m-%d %H:%M} UTC: {last['rule']}"


def _action_entry(action: Action) -> Entry:
    workflow = action.reason.get("workflow", "manual")
    step = action.reason.get("step", action.payload.get("template", "?"))
    summary = f"{action.kind} {workflow}/{step}: {action.status}"
    if action.reason.get("skipped"):
        summary += f" ({action.reason['skipped']})"
    elif action.error:
        summary += f" ({action.error})"
    elif (held := hold_note(action)) is not None:
        summary += f" ({held})"
    at = action.completed_at or action.updated_at
    # Sent or skipped later than written (held, retried, withdrawn by a goal): not part of
    # its cause's group then, but after whatever happened at that instant (the goal's event).
    later = at != action.created_at
    return Entry(
        kind="action",
        at=at,
        summary=summary,
        details={
            "id": action.id,
            "kind": action.kind,
            "status": str(action.status),
            "template": action.payload.get("template"),
            "workflow": workflow,
            "step": step,
            "attempts": action.attempts,
            "provider_id": action.provider_id,
            "error": action.error,
            "created_at": action.created_at,
            "completed_at": action.completed_at,
        },
        cause_event_id=None if later else action.reason.get("cause_event_id"),
        row_id=action.id or 0,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
