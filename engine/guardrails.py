"""Guard rails on marketing email, checked at the moment of sending: frequency caps, quiet
hours and send windows, all in the contact's time zone.

A held email is deferred, never dropped: ``defer_until`` says until when and by which rule,
and the action keeps that explanation in ``reason["held"]``. Transactional email (receipts,
confirmations) is never held by these rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from engine.localtime import in_window, next_time_of_day
from engine.models import Action, ActionStatus, Contact
from engine.registry import Registry
from engine.workflow import FrequencyCap, Window


def defer_until(
    session: Session, registry: Registry, action: Action, contact: Contact, *, now: datetime
) -> tuple[datetime, str] | None:
    """When this action may go out, if not now, and the rule that holds it."""
    if action.kind != "email" or not action.payload.get("marketing", True):
        return None
    workflow = registry.workflows.get(str(action.reason.get("workflow", "")))
    held = window_holds(registry, action, contact.timezone, now=now)
    behind = _behind_a_held_email(session, action, contact, now=now)
    if behind is not None:
        held.append((behind, "queued behind an earlier held email to this contact"))
    caps = [(registry.guardrails.cap, None)]
    if workflow is not None:
        caps.append((workflow.cap, workflow.name))
    for cap, scope in caps:
        if cap is not None:
            freed = _cap_frees_at(session, action, contact, cap, scope, now=now)
            if freed is not None:
                label = "frequency cap" + (f" of {scope}" if scope else "")
                held.append((freed, f"{label}: {cap.max} per {cap.per}"))
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


def _behind_a_held_email(
    session: Session, action: Action, contact: Contact, *, now: datetime
) -> datetime | None:
    """Keep held emails in order: while an earlier one to this contact is held, wait for it."""
    rows = session.exec(
        select(Action.next_attempt_at, Action.payload, Action.reason).where(
            Action.contact_id == contact.id,
            Action.kind == "email",
            Action.status == ActionStatus.PENDING,
            col(Action.id) < action.id,
        )
    ).all()
    waits = [
        at for at, payload, reason in rows if payload.get("marketing", True) and reason.get("held")
    ]
    if not waits:
        return None
    return max(min(waits), now) + timedelta(seconds=1)


def _inside(window: Window, now: datetime, tz: str) -> bool:
    return in_window(now, tz, window.start, window.end, weekdays_only=window.weekdays_only)


def _cap_frees_at(
    session: Session,
    action: Action,
    contact: Contact,
    cap: FrequencyCap,
    scope: str | None,
    *,
    now: datetime,
) -> datetime | None:
    """None if another marketing email fits in the window; else when the oldest one leaves."""
    since = now - cap.per
    rows = session.exec(
        select(
            Action.completed_at, Action.updated_at, Action.payload, Action.reason, Action.status
        ).where(
            Action.contact_id == contact.id,
            Action.kind == "email",
            Action.id != action.id,
            col(Action.status).in_([ActionStatus.SENT, ActionStatus.SENDING]),
            col(Action.updated_at) >= since,
        )
    ).all()
    times = sorted(
        (completed or updated)
        for completed, updated, payload, reason, _status in rows
        if payload.get("marketing", True)
        and (scope is None or reason.get("workflow") == scope)
        and (completed or updated) > since
    )
    if len(times) < cap.max:
        return None
    return times[len(times) - cap.max] + cap.per
