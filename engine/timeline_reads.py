"""The rows a contact's timeline is built from (engine/timeline.py): all of them, or
enough for one page (``read_page``): the newest ``limit`` entries before a cursor, read
newest first from each table (ORDER BY its instant DESC, id DESC, LIMIT ``limit`` + 1) with
every row of the instants at the page's edges, so that same-instant groups are whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, func, or_
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select

from engine.models import Action, Enrollment, Event, StageTransition
from engine.timeline_cursor import PageKey


@dataclass(frozen=True)
class Rows:
    events: list[Event]
    transitions: list[StageTransition]
    enrollments: list[Enrollment]
    actions: list[Action]  # by id
    with_actions: set[int]  # the enrollments that wrote any action, read or not


def read_all(session: Session, cid: int) -> Rows:
    enrollments = list(session.exec(select(Enrollment).where(Enrollment.contact_id == cid)))
    actions = list(
        session.exec(select(Action).where(Action.contact_id == cid).order_by(col(Action.id)))
    )
    return Rows(
        events=list(session.exec(select(Event).where(Event.contact_id == cid))),
        transitions=list(
            session.exec(select(StageTransition).where(StageTransition.contact_id == cid))
        ),
        enrollments=enrollments,
        actions=actions,
        with_actions={a.enrollment_id for a in actions if a.enrollment_id is not None},
    )


# Each table's instant as its entries stand in the timeline (``_event_entry``,
# ``_action_entry``); an enrollment's entries spread from ``started_at`` to ``updated_at``
# (every write to it, a decision noted or its end, sets ``updated_at``).
_EVENT_AT = func.coalesce(col(Event.processed_at), col(Event.received_at))
_ACTION_AT = func.coalesce(col(Action.completed_at), col(Action.updated_at))


def read_page(session: Session, cid: int, *, limit: int, cursor: PageKey | None) -> Rows:
    """Enough rows to build the newest ``limit`` entries before ``cursor``, and no more than
    about that many of each table (``_newest``): all the rows at each instant at or after
    the oldest instant that can be on the page, so its groups are whole.

    Events, stage changes and actions: the newest ``limit`` + 1 of each. Enrollments: each
    whose span reaches the oldest instant those (and the newest enrollments' starts) leave
    on the page, and each that wrote an action read."""
    upto = None if cursor is None else cursor[0]
    assert upto is None or isinstance(upto, datetime)
    events = _newest(session, Event, _EVENT_AT, cid, upto, limit, _event_at)
    transitions = _newest(
        session, StageTransition, col(StageTransition.at), cid, upto, limit, _transition_at
    )
    actions = _newest(session, Action, _ACTION_AT, cid, upto, limit, _action_at)
    started = _newest(
        session, Enrollment, col(Enrollment.started_at), cid, upto, limit, _started_at
    )
    # The page's oldest instant is no older than the limit-th newest of these (each an entry
    # before the cursor): every entry from there on is read.
    times = sorted(
        (
            t
            for t in (
                *map(_event_at, events),
                *map(_transition_at, transitions),
                *map(_action_at, actions),
                *map(_started_at, started),
            )
            if upto is None or t < upto
        ),
        reverse=True,
    )
    since = times[limit - 1] if len(times) >= limit else None
    spans = select(Enrollment).where(Enrollment.contact_id == cid)
    if upto is not None:
        spans = spans.where(col(Enrollment.started_at) <= upto)
    if since is not None:
        spans = spans.where(
            or_(col(Enrollment.updated_at) >= since, col(Enrollment.ended_at) >= since)
        )
    enrollments = {e.id: e for e in (*started, *session.exec(spans))}
    wrote = {a.enrollment_id for a in actions if a.enrollment_id is not None} - set(enrollments)
    if wrote:
        query = select(Enrollment).where(col(Enrollment.id).in_(wrote))
        enrollments.update((e.id, e) for e in session.exec(query))
    ids = [i for i in enrollments if i is not None]
    with_actions = set(
        session.exec(
            select(Action.enrollment_id).where(col(Action.enrollment_id).in_(ids)).distinct()
        )
        if ids
        else ()
    )
    return Rows(
        events=events,
        transitions=transitions,
        enrollments=list(enrollments.values()),
        actions=sorted(actions, key=lambda a: a.id or 0),
        with_actions={i for i in with_actions if i is not None},
    )


Row = TypeVar("Row", Event, StageTransition, Action, Enrollment)


def _newest(
    session: Session,
    model: type[Row],
    at: ColumnElement[datetime] | Mapped[datetime],
    cid: int,
    upto: datetime | None,
    limit: int,
    at_of: Callable[[Row], datetime],
) -> list[Row]:
    """The contact's ``limit`` + 1 newest rows of ``model`` at or before ``upto`` by ``at``
    (ORDER BY at DESC, id DESC), with every row of the instant ``upto`` and of the oldest
    instant read: rows of one instant are not in timeline order by id."""
    mine = select(model).where(model.contact_id == cid)  # type: ignore[attr-defined]
    rows: dict[int | None, Row] = {}
    older = mine
    if upto is not None:
        rows.update((r.id, r) for r in session.exec(mine.where(at == upto)))
        older = mine.where(at < upto)
    newest = older.order_by(at.desc(), col(model.id).desc()).limit(limit + 1)
    read = list(session.exec(newest))
    rows.update((r.id, r) for r in read)
    if len(read) > limit:  # there are more: the oldest instant read may go on
        rows.update((r.id, r) for r in session.exec(mine.where(at == at_of(read[-1]))))
    return list(rows.values())


def _event_at(event: Event) -> datetime:
    return event.processed_at or event.received_at


def _transition_at(transition: StageTransition) -> datetime:
    return transition.at


def _action_at(action: Action) -> datetime:
    return action.completed_at or action.updated_at


def _started_at(enrollment: Enrollment) -> datetime:
    return enrollment.started_at
