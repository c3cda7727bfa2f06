"""Guard rails on marketing email, checked at the moment of sending: frequency caps, quiet
hours and send windows, all in the contact's time zone.

A held email is deferred, never dropped: ``defer_until`` says until when and by which rule,
and the action keeps that explanation in ``reason["held"]``. Transactional email (receipts,
confirmations) is never held by these rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, or_, select
from sqlmodel import Session

from engine.db import one_of_param
from engine.durations import describe_duration
from engine.localtime import in_window, next_time_of_day
from engine.models import Action, ActionStatus, Contact
from engine.registry import Registry
from engine.workflow import FrequencyCap, Window


def defer_until(
    session: Session,
    registry: Registry,
    action: Any,
    contact: Any,
    *,
    now: datetime,
    history: list[Any] | None = None,
) -> tuple[datetime, str] | None:
    """When this action may go out, if not now, and the rule that holds it.

    ``action`` needs ``id``, ``kind``, ``payload`` and ``reason``; ``contact`` ``id`` and
    ``timezone``. ``history`` is the contact's email rows from ``email_history`` when a
    batch read them for many contacts at once; without it they are queried here."""
    if action.kind != "email" or not action.payload.get("marketing", True):
        return None
    held = window_holds(registry, action, contact.timezone, now=now)
    caps = _caps(registry, action)
    since = min((now - cap.per for cap, _scope in caps), default=None)
    if history is None:
        others = _other_emails(session, action, contact, sent_since=since)
    else:
        others = _others_among(history, action, sent_since=since)
    behind = _behind_a_held_email(others, action, now=now)
    if behind is not None:
        held.append((behind, "queued behind an earlier held email to this contact"))
    for cap, scope in caps:
        freed = _cap_frees_at(others, cap, scope, now=now)
        if freed is not None:
            label = "frequency cap" + (f" of {scope}" if scope else "")
            held.append((freed, f"{label}: {cap.max} per {describe_duration(cap.per)}"))
    if not held:
        return None
    return max(held, key=lambda item: item[0])


def window_holds(
    registry: Registry, action: Any, timezone: str, *, now: datetime
) -> list[tuple[datetime, str]]:
    """The rules that depend only on the clock and the contact's time zone (quiet hours, the
    workflow's send window): no query, so a batch can check every contact cheaply. Each
    hold is (until when, which rule). ``action`` needs ``kind``, ``payload`` and ``reason``."""
    if action.kind != "email" or not action.payload.get("marketing", True):
        return []
    workflow = registry.workflows.get(str(action.reason.get("workflow", "")))
    held: list[tuple[datetime, str]] = []
    quiet = registry.guardrails.quiet_hours
    if quiet is not None and in_window(now, timezone, quiet.start, quiet.end):
        held.append(
            (
                next_time_of_day(now, timezone, quiet.end),
                f"quiet hours {quiet.start}-{quiet.end} ({timezone})",
            )
        )
    window = workflow.send_window if workflow is not None else None
    if window is not None and not _inside(window, now, timezone):
        held.append(
            (
                next_time_of_day(now, timezone, window.start, weekdays_only=window.weekdays_only),
                f"send window {window.start}-{window.end} ({timezone})",
            )
        )
    return held


class HistoryRow(NamedTuple):
    """What the rules read of one of a contact's other emails. ``marketing`` is None when
    the payload does not say (marketing, as for sending); ``held``: it was held before."""

    contact_id: int
    id: int
    status: str
    next_attempt_at: datetime
    completed_at: datetime | None
    updated_at: datetime
    marketing: bool | None
    workflow: str | None
    held: bool

    @classmethod
    def of(cls, action: Any) -> HistoryRow:
        """The same from a row that has ``payload`` and ``reason`` (a batch's own actions)."""
        return cls(
            action.contact_id,
            action.id,
            action.status,
            action.next_attempt_at,
            action.completed_at,
            action.updated_at,
            action.payload.get("marketing"),
            action.reason.get("workflow"),
            bool(action.reason.get("held")),
        )


# The three JSON fields the rules look at are read in SQL: a row of plain values, not two
# JSON documents to decode (most of the cost of a capped batch's history). Table columns,
# not ORM attributes: the rows need no ORM processing.
_A = Action.__table__  # type: ignore[attr-defined]
_HISTORY_COLUMNS: tuple[Any, ...] = (
    _A.c.contact_id,
    _A.c.id,
    _A.c.status,
    _A.c.next_attempt_at,
    _A.c.completed_at,
    _A.c.updated_at,
    _A.c.payload["marketing"].as_boolean().label("marketing"),
    _A.c.reason["workflow"].as_string().label("workflow"),
    _A.c.reason["held"].as_string().is_not(None).label("held"),
)


@cache
def _history_statement(dialect: str, *, capped: bool, excluding: bool) -> Any:
    """The history read, built once per dialect and shape: ``contact_ids``, and with
    ``capped`` ``sent_since``, with ``excluding`` ``excluded_ids`` as parameters."""
    wanted: Any = _A.c.status == ActionStatus.PENDING
    if capped:
        wanted = or_(
            wanted,
            and_(
                _A.c.status.in_([ActionStatus.SENT, ActionStatus.SENDING]),
                _A.c.updated_at >= bindparam("sent_since"),
            ),
        )
    query = select(*_HISTORY_COLUMNS).where(
        one_of_param(_A.c.contact_id, "contact_ids", dialect=dialect),
        _A.c.kind == "email",
        wanted,
    )
    if excluding:
        query = query.where(~one_of_param(_A.c.id, "excluded_ids", dialect=dialect))
    return query


def _caps(registry: Registry, action: Any) -> list[tuple[FrequencyCap, str | None]]:
    """The frequency caps over this email: the global one, then its workflow's."""
    workflow = registry.workflows.get(str(action.reason.get("workflow", "")))
    caps: list[tuple[FrequencyCap, str | None]] = []
    if registry.guardrails.cap is not None:
        caps.append((registry.guardrails.cap, None))
    if workflow is not None and workflow.cap is not None:
        caps.append((workflow.cap, workflow.name))
    return caps


def history_since(registry: Registry, actions: Sequence[Any], *, now: datetime) -> datetime | None:
    """How far back ``email_history`` must read for these actions' caps (None: no caps)."""
    return min(
        (now - cap.per for action in actions for cap, _scope in _caps(registry, action)),
        default=None,
    )


def email_history(
    session: Session,
    contact_ids: Sequence[int],
    *,
    sent_since: datetime | None,
    excluding: Sequence[int] = (),
) -> dict[int, list[Any]]:
    """For many contacts in one query, every row ``defer_until`` may need of their email
    actions (as ``HistoryRow``s): the pending ones, and (with caps) those sent or sending
    since ``sent_since``; never the actions ``excluding`` names. Each contact's rows go to
    ``defer_until(history=...)``, which keeps what its action's own rules look at."""
    query = _history_statement(
        session.get_bind().dialect.name, capped=sent_since is not None, excluding=bool(excluding)
    )
    params: dict[str, Any] = {"contact_ids": list(contact_ids)}
    if sent_since is not None:
        params["sent_since"] = sent_since
    if excluding:
        params["excluded_ids"] = list(excluding)
    found: dict[int, list[Any]] = {}
    for row in session.connection().execute(query, params):
        found.setdefault(row.contact_id, []).append(row)
    return found


def _others_among(history: list[Any], action: Any, *, sent_since: datetime | None) -> list[Any]:
    """The rows of ``history`` the rules look at for ``action``: the contact's other pending
    emails older than it, and (with caps) those sent or sending since ``sent_since``."""
    return [
        row
        for row in history
        if row.id != action.id
        and (
            (row.status == ActionStatus.PENDING and row.id < action.id)
            or (
                sent_since is not None
                and row.status in (ActionStatus.SENT, ActionStatus.SENDING)
                and row.updated_at >= sent_since
            )
        )
    ]


def _other_emails(
    session: Session, action: Action, contact: Contact, *, sent_since: datetime | None
) -> list[Any]:
    """The contact's other email actions the rules below look at: pending ones older than
    ``action``, and (with caps) those sent or sending since ``sent_since``."""
    assert contact.id is not None
    rows = email_history(session, [contact.id], sent_since=sent_since).get(contact.id, [])
    return _others_among(rows, action, sent_since=sent_since)


def _behind_a_held_email(others: list[Any], action: Action, *, now: datetime) -> datetime | None:
    """Keep held emails in order: while an earlier one to this contact is held, wait for it."""
    waits = [
        row.next_attempt_at
        for row in others
        if row.status == ActionStatus.PENDING
        and row.id < action.id  # type: ignore[operator]
        and row.marketing is not False
        and row.held
    ]
    if not waits:
        return None
    return max(min(waits), now) + timedelta(seconds=1)


def _inside(window: Window, now: datetime, tz: str) -> bool:
    return in_window(now, tz, window.start, window.end, weekdays_only=window.weekdays_only)


def _cap_frees_at(
    others: list[Any], cap: FrequencyCap, scope: str | None, *, now: datetime
) -> datetime | None:
    """None if another marketing email fits in the window; else when the oldest one leaves."""
    since = now - cap.per
    times = sorted(
        (row.completed_at or row.updated_at)
        for row in others
        if row.status in (ActionStatus.SENT, ActionStatus.SENDING)
        and row.updated_at >= since
        and row.marketing is not False
        and (scope is None or row.workflow == scope)
        and (row.completed_at or row.updated_at) > since
    )
    if len(times) < cap.max:
        return None
    return times[len(times) - cap.max] + cap.per
