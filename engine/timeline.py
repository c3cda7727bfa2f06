"""A contact's timeline: everything that happened to one contact, in one chronological list.

Events, stage transitions, workflow enrollments (entered, each decision its trail keeps:
a variant drawn, a branch taken, a wait over or an event arrived first, a stage move held
back, a wait paused while an email was held, a migration; ended) and actions (with every
rule that held them back) each become ``Entry`` rows (kind, instant, one-line summary,
details) merged by time, so an operator can answer "why did this person get that email?"
with one query (DESIGN.md section 9); entries of one instant in causal order
(engine/timeline_order.py). An event stands at the instant the engine took it in
(processed it, or received it while it waits), the instant of everything it caused; when
it happened by its source's clock is in its details (and its summary when that was a
minute or more earlier). Beside them, the
contact's live enrollments (running or waiting) say what comes next: the step, the next
wake-up and, when a scheduler pass has handed that wake-up to a job, until when it is held
(a wake-up past due with no claim waits for the next pass; one held past its claim's end
is due again). The result is plain dataclasses; ``to_dict()`` gives a JSON-ready view for
the CLI and the HTTP API.

With a ``limit``, a timeline is one page: the newest entries (older than a ``before``
cursor, engine/timeline_cursor.py), read without loading the rest
(engine/timeline_reads.py); the test harness and the goldens read it whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from engine.attribute_changes import describe_change
from engine.contacts import normalize_email
from engine.enrollments import workflow_for
from engine.errors import ValidationError

# ``hold_note`` is also imported from here (engine/cli_actions.py).
from engine.hold_notes import hold_note, past_holds
from engine.models import (
    Action,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    StageTransition,
    WorkflowVersion,
)
from engine.recording import CONTACT_UPDATED
from engine.registry import Registry
from engine.scheduler import current_claims
from engine.spec import from_spec
from engine.timeline_cursor import PageKey, decode, encode
from engine.timeline_order import (
    CREATION,
    ENDED,
    ENROLLMENT,
    ENTERED,
    EVENT,
    LAST,
    LATER,
    NO_CAUSE,
    OTHER_ACTION,
    RAN,
    STAGE,
    UNPLACED,
    Runs,
    run_at,
    run_of,
)
from engine.timeline_reads import Rows, read_all, read_page
from engine.workflow import Workflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    kind: str  # "event", "stage", "enrollment" or "action"
    at: datetime
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    cause_event_id: int | None = field(default=None, repr=False)
    row_id: int = field(default=0, repr=False)
    # Its place in its instant: (group: an event id, CREATION or NO_CAUSE; rank; the row
    # it belongs to; for an enrollment's entries, their phase, the position of their step
    # in the workflow and their order as written).
    order: tuple[int, ...] = field(default=(NO_CAUSE, 9), repr=False)

    @property
    def sort_key(self) -> tuple[datetime | int, ...]:
        return (self.at, *self.order)

    @property
    def page_key(self) -> PageKey:
        """Its place, one of its own: ``sort_key`` ties only a decision with an action of
        its run (an index equal to an id), and the decision, written first, comes first."""
        return (*self.sort_key, _KIND_RANK.get(self.kind, len(_KIND_RANK)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "summary": self.summary,
            "details": _jsonable(self.details),
        }


_KIND_RANK = {"event": 0, "stage": 1, "enrollment": 2, "action": 3}


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
    # A page (``limit``): whether older entries were left out, the cursor that reads them
    # (``before``), and whether the oldest instant shown goes on in them.
    more: bool = False
    next_before: str | None = None
    partial_instant: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "contact": self.contact.to_dict(),
            "entries": [e.to_dict() for e in self.entries],
            "live": [e.to_dict() for e in self.live],
            "more": self.more,
            "next_before": self.next_before,
            "partial_instant": self.partial_instant,
        }


def contact_timeline(
    session: Session,
    email: str,
    registry: Registry | None = None,
    *,
    limit: int | None = None,
    before: str | None = None,
) -> Timeline | None:
    """The timeline of the contact with ``email``, or None if there is no such contact.

    With ``registry``, each live enrollment's step named (from its own version of the
    workflow). With ``limit``, only the newest ``limit`` entries (older than the ``before``
    cursor, if given), read without loading the rest; the timeline says whether there are
    more (``more``) and the cursor that reads them (``next_before``). Raises
    ``ValidationError`` when ``email`` is not an address, ``limit`` is below 1 or
    ``before`` is not a cursor a timeline gave.
    """
    email = normalize_email(email)
    if limit is not None and limit < 1:
        raise ValidationError(f"limit must be 1 or more, not {limit}", field="limit")
    cursor = None if before is None else decode(before)
    contact = session.exec(select(Contact).where(Contact.email == email)).first()
    if contact is None or contact.id is None:
        return None
    cid = contact.id
    if limit is None:
        rows = read_all(session, cid)
    else:
        rows = read_page(session, cid, limit=limit, cursor=cursor)
    entries = _entries(session, registry, rows)
    if cursor is not None:
        entries = [e for e in entries if e.page_key < cursor]
    shown = entries if limit is None else entries[-limit:]
    more = len(shown) < len(entries)
    live = _live(session, cid)
    if registry is not None:
        live = name_steps(session, registry, live)
    return Timeline(
        contact=_summary(contact),
        entries=shown,
        live=live,
        more=more,
        next_before=encode(shown[0].page_key) if more else None,
        partial_instant=more and entries[-len(shown) - 1].at == shown[0].at,
    )


def _entries(session: Session, registry: Registry | None, rows: Rows) -> list[Entry]:
    entries: list[Entry] = [_event_entry(e) for e in rows.events]
    entries.extend(_stage_entry(t) for t in rows.transitions)
    written: dict[int, list[Action]] = {e.id: [] for e in rows.enrollments if e.id is not None}
    for action in rows.actions:
        if action.enrollment_id in written:
            written[action.enrollment_id].append(action)
        else:  # outside any workflow (or its enrollment is gone)
            entries.append(_action_entry(action))
    # Step positions for the enrollments that wrote actions, whether read on this page or
    # not, so that an entry has the same place on every page.
    positions = _step_positions(
        session, registry, [e for e in rows.enrollments if e.id in rows.with_actions]
    )
    for enrollment in rows.enrollments:
        steps = positions.get((enrollment.workflow, enrollment.version))
        entries.extend(_enrollment_entries(enrollment, written.get(enrollment.id or 0, []), steps))
    entries.sort(key=lambda e: e.page_key)
    return entries


_LIVE = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)


def _live(session: Session, cid: int) -> list[LiveEnrollment]:
    query = select(Enrollment).where(
        Enrollment.contact_id == cid, col(Enrollment.status).in_(_LIVE)
    )
    live = sorted(session.exec(query), key=lambda e: e.id or 0)
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


def _step_positions(
    session: Session, registry: Registry | None, enrollments: list[Enrollment]
) -> dict[tuple[str, str], dict[str, int]]:
    """Where each step stands in the program of each (workflow, version) ``enrollments`` run
    on: a run only goes forward through it, so this is the order of its decisions and
    actions. Read only for enrollments with a decision noted; an unknown version has none."""
    wanted = {(e.workflow, e.version) for e in enrollments if e.context.get("trail")}
    found: dict[tuple[str, str], Workflow] = {}
    if registry is not None:  # the current versions, older ones cached in the registry
        for name, version in wanted:
            if (workflow := workflow_for(session, registry, name, version)) is not None:
                found[(name, version)] = workflow
    elif wanted:
        names = {name for name, _version in wanted}
        query = select(WorkflowVersion).where(col(WorkflowVersion.workflow).in_(names))
        for row in session.exec(query):
            if (row.workflow, row.version) not in wanted:
                continue
            try:
                found[(row.workflow, row.version)] = from_spec(row.spec)
            except (TypeError, ValueError, KeyError) as exc:  # decisions first, then
                log.info("workflow %s version %s does not load: %s", row.workflow, row.version, exc)
    return {
        key: {node.id: i for i, node in enumerate(workflow.program)}
        for key, workflow in found.items()
    }


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
        order=(event.id or 0, EVENT, event.id or 0),
    )


def _stage_entry(transition: StageTransition) -> Entry:
    source = transition.from_stage or "(new)"
    if transition.event_id is not None:
        group = transition.event_id
    else:  # a contact created without an event (imported) existed before anything else
        group = NO_CAUSE if transition.from_stage else CREATION
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
        order=(group, STAGE, transition.id or 0),
    )


def _enrollment_entries(
    enrollment: Enrollment, actions: list[Action], steps: dict[str, int] | None
) -> list[Entry]:
    """The enrollment's entry, its decisions, the actions it wrote and its end; ``steps``:
    the position of each step of its workflow, if known (``_step_positions``)."""
    row = enrollment.id or 0
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
    started = NO_CAUSE if enrollment.cause_event_id is None else enrollment.cause_event_id
    found = [
        Entry(
            kind="enrollment",
            at=enrollment.started_at,
            summary=f"entered workflow {enrollment.workflow}",
            details=details,
            cause_event_id=enrollment.cause_event_id,
            row_id=row,
            order=(started, ENROLLMENT, row, ENTERED),
        )
    ]
    runs = {enrollment.started_at: [(UNPLACED, started)]}
    found.extend(_note_entries(enrollment, details, runs, steps or {}))
    found.extend(_action_entry(a, enrollment=row, runs=runs, steps=steps) for a in actions)
    if enrollment.ended_at is not None:
        why = enrollment.context.get("end_reason")
        verb = f"{enrollment.status}" + (f": {why}" if why else "")
        found.append(
            Entry(
                kind="enrollment",
                at=enrollment.ended_at,
                summary=f"workflow {enrollment.workflow} {verb}",
                details={**details, "end_reason": why},
                row_id=row,
                order=(NO_CAUSE, ENROLLMENT, row, ENDED),
            )
        )
    return found


def _note_entries(
    enrollment: Enrollment, details: dict[str, Any], runs: Runs, steps: dict[str, int]
) -> list[Entry]:
    """The decisions the enrollment's trail notes (engine/trail.py): "workflow trial
    split: variant B", "workflow onboarding activated?: did product.activated since
    entering: then", "workflow drip 2-wait: wait extended to ... while email a was held
    until ...". Only the trail's last fifty notes are kept, so a long journey's oldest may
    have gone. Fills in ``runs`` for the actions written at the same instants.

    A note without a time (a migration's, engine/versions.py) stands at the latest instant
    known before it, and says so."""
    trail = [n for n in enrollment.context.get("trail", []) if isinstance(n, dict)]
    times = [_noted_at(n) for n in trail]
    found = []
    since = enrollment.started_at
    for index, (note, at) in enumerate(zip(trail, times, strict=True)):
        text = f"{note.get('note', '')}"
        marks = {k: v for k, v in note.items() if k not in ("at", "step", "note")}
        extra: dict[str, Any] = {"marks": marks} if marks else {}
        position = steps.get(str(note.get("step")), UNPLACED)
        if at is None:
            later = [t for t in times[index + 1 :] if t is not None]
            until = later[0] if later else enrollment.ended_at
            text += f" (time not recorded: after {since:%Y-%m-%d %H:%M} UTC" + (
                f", before {until:%Y-%m-%d %H:%M} UTC)" if until is not None else ")"
            )
            at, group, position = since, NO_CAUSE, LAST
            extra = {**extra, "time_recorded": False}
        elif note.get("kind") == "paused":  # written by the send that held the email
            group = NO_CAUSE
        else:
            bounds = runs.setdefault(at, [])
            group = run_of(note, bounds[-1][1] if bounds else None)
            if not bounds or group != bounds[-1][1]:  # a new run began at this step
                bounds.append((position, group))
        since = max(since, at)
        found.append(
            Entry(
                kind="enrollment",
                at=at,
                summary=f"workflow {enrollment.workflow} {note.get('step', '?')}: {text}",
                details={**details, "step": note.get("step"), "note": note.get("note"), **extra},
                row_id=enrollment.id or 0,
                order=(group, ENROLLMENT, enrollment.id or 0, RAN, position, index),
            )
        )
    return found


def _noted_at(note: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(note["at"]))
    except (KeyError, ValueError):
        return None


def _action_entry(
    action: Action,
    *,
    enrollment: int | None = None,
    runs: Runs | None = None,
    steps: dict[str, int] | None = None,
) -> Entry:
    """``enrollment``: the id of the enrollment that wrote it, ``runs`` the groups of the
    instants it ran at (``_note_entries``) and ``steps`` the positions of its workflow's
    steps, if known; without them, an action outside any workflow."""
    workflow = action.reason.get("workflow", "manual")
    step = action.reason.get("step", action.payload.get("template", "?"))
    summary = f"{action.kind} {workflow}/{step}: {action.status}"
    why = []
    if action.reason.get("skipped"):
        why.append(str(action.reason["skipped"]))
    elif action.error:
        why.append(action.error)
    if (held := hold_note(action) or past_holds(action)) is not None:
        why.append(held)
    if why:
        summary += f" ({'; '.join(why)})"
    at = action.completed_at or action.updated_at
    # Sent or skipped later than written (held, retried, withdrawn by a goal): not part of
    # its cause's group then, but after whatever happened at that instant (the goal's event).
    later = at != action.created_at
    cause = action.reason.get("cause_event_id")
    order: tuple[int, ...]
    if enrollment is None:
        group = NO_CAUSE if later or cause is None else cause
        order = (group, OTHER_ACTION, action.id or 0)
    elif later:
        order = (NO_CAUSE, ENROLLMENT, enrollment, LATER, 0, action.id or 0)
    else:  # with the run that wrote it (an enrollment writes at the instants it runs)
        position = (steps or {}).get(str(step))
        group = run_at(runs or {}, action.created_at, position)
        # An unknown step: after the decisions of its run (they lead to actions).
        order = (group, ENROLLMENT, enrollment, RAN, position or 0, action.id or 0)
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
            "skipped": action.reason.get("skipped"),
            "held": action.reason.get("held", []),
        },
        cause_event_id=None if later else cause,
        row_id=action.id or 0,
        order=order,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
