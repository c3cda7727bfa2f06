"""A contact's timeline: everything that happened to one contact, in one chronological list.

Events, stage transitions, workflow enrollments (entered, each decision its trail keeps:
a variant drawn, a branch taken, a wait over or an event arrived first, a stage move held
back, a wait paused while an email was held, a migration; ended) and actions (with every
rule that held them back) each become ``Entry`` rows (kind, instant, one-line summary,
details; engine/timeline_entries.py builds them) merged by time, so an operator can
answer "why did this person get that email?" with one query (DESIGN.md section 9);
entries of one instant in causal order (engine/timeline_order.py). An event stands at
the instant the engine took it in (processed it, or received it while it waits), the
instant of everything it caused; when it happened by its source's clock is in its
details (and its summary when that was a minute or more earlier). Beside them, the
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
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from engine.contacts import normalize_email
from engine.enrollments import workflow_for
from engine.errors import ValidationError
from engine.models import (
    Action,
    Contact,
    Enrollment,
    EnrollmentStatus,
    WorkflowVersion,
)
from engine.registry import Registry
from engine.scheduler import current_claims
from engine.spec import from_spec
from engine.timeline_cursor import decode, encode
from engine.timeline_entries import (
    Entry,
    action_entry,
    enrollment_entries,
    event_entry,
    jsonable,
    stage_entry,
)
from engine.timeline_reads import Rows, read_all, read_page
from engine.workflow import Workflow

log = logging.getLogger(__name__)

__all__ = [
    "ContactSummary",
    "Entry",
    "LiveEnrollment",
    "Timeline",
    "contact_timeline",
    "name_steps",
]


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
        return jsonable(self.__dict__)


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
        return jsonable(self.__dict__)


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
    entries: list[Entry] = [event_entry(e) for e in rows.events]
    entries.extend(stage_entry(t) for t in rows.transitions)
    written: dict[int, list[Action]] = {e.id: [] for e in rows.enrollments if e.id is not None}
    for action in rows.actions:
        if action.enrollment_id in written:
            written[action.enrollment_id].append(action)
        else:  # outside any workflow (or its enrollment is gone)
            entries.append(action_entry(action))
    # Step positions for the enrollments that wrote actions, whether read on this page or
    # not, so that an entry has the same place on every page.
    positions = _step_positions(
        session, registry, [e for e in rows.enrollments if e.id in rows.with_actions]
    )
    for enrollment in rows.enrollments:
        steps = positions.get((enrollment.workflow, enrollment.version))
        entries.extend(enrollment_entries(enrollment, written.get(enrollment.id or 0, []), steps))
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
