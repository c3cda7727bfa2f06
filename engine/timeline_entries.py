"""The entries of a contact's timeline, one builder per kind of row.

An event, a stage transition, an enrollment (entered, each decision on its trail, ended)
and an action (with every rule that held it back) each become ``Entry`` rows: kind,
instant, one-line summary, details, and their place in their instant (engine/
timeline_order.py). engine/timeline.py reads the rows and merges the entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.attribute_changes import describe_change
from engine.hold_notes import hold_note, past_holds
from engine.models import Action, Enrollment, Event, StageTransition
from engine.recording import CONTACT_UPDATED
from engine.timeline_cursor import PageKey
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
            "details": jsonable(self.details),
        }


_KIND_RANK = {"event": 0, "stage": 1, "enrollment": 2, "action": 3}


_NOTED_EARLIER = timedelta(minutes=1)


def event_entry(event: Event) -> Entry:
    # Processed (or failed) at that instant; still pending: where it waits since it came in.
    at = event.processed_at or event.received_at
    status = f"{event.status}"
    # Sent late or backdated by its source, or dated ahead of its arrival (a client's clock
    # running fast): either way its time is not the one it is shown at.
    if (
        event.occurred_at <= at - _NOTED_EARLIER
        or event.occurred_at >= event.received_at + _NOTED_EARLIER
    ):
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


def stage_entry(transition: StageTransition) -> Entry:
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


def enrollment_entries(
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
    found.extend(action_entry(a, enrollment=row, runs=runs, steps=steps) for a in actions)
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


def action_entry(
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


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
