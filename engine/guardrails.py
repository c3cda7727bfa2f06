"""Guard rails on marketing email, checked at the moment of sending: frequency caps, quiet
hours and send windows, all in the contact's time zone.

A held email is deferred, never dropped: ``defer_until`` says until when and by which rule,
and the action keeps that explanation in ``reason["held"]``. The workflow that wrote it
pauses with it: the relative wait after it counts from when it goes (pauses.py, applied by
the claim that holds it). A later marketing email to the
same contact waits behind a held one only when the rule that holds it applies to the later
email too: quiet hours and the global cap hold every marketing email, a workflow's send
window and its own cap only that workflow's. Transactional email (receipts, confirmations)
is never held by these rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, func, literal_column, or_, select
from sqlmodel import Session

from engine.db import one_of_param
from engine.durations import describe_duration
from engine.enrollments import known_version, workflow_for
from engine.localtime import in_window, next_time_of_day
from engine.models import Action, ActionStatus, Contact
from engine.registry import Registry
from engine.workflow import FrequencyCap, Window, Workflow


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
    held = window_holds(registry, action, contact.timezone, now=now, session=session)
    caps = _caps(registry, action, session=session)
    since = min((now - cap.per for cap, _scope in caps), default=None)
    if history is None:
        others = _other_emails(session, action, contact, sent_since=since)
    else:
        others = _others_among(history, action, sent_since=since)
    behind = _behind_a_held_email(others, action, now=now)
    if behind is not None:
        held.append(behind)
    for cap, scope in caps:
        freed = _cap_frees_at(others, cap, scope, now=now)
        if freed is not None:
            label = "frequency cap" + (f" of {scope}" if scope else "")
            held.append((freed, f"{label}: {cap.max} per {describe_duration(cap.per)}"))
    if not held:
        return None
    return max(held, key=lambda item: item[0])


def window_holds(
    registry: Registry,
    action: Any,
    timezone: str,
    *,
    now: datetime,
    session: Session | None = None,
) -> list[tuple[datetime, str]]:
    """The rules that depend only on the clock and the contact's time zone (quiet hours, the
    send window of the workflow version that wrote the email): no query for a current
    version, so a batch can check every contact cheaply. Each hold is (until when, which
    rule). ``action`` needs ``kind``, ``payload`` and ``reason``."""
    if action.kind != "email" or not action.payload.get("marketing", True):
        return []
    workflow = workflow_of(registry, action, session=session)
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
    the payload does not say (marketing, as for sending); ``held``: the rule of its latest
    hold (``reason["held"][-1]["rule"]``), None if it was never held."""

    contact_id: int
    id: int
    status: str
    next_attempt_at: datetime
    completed_at: datetime | None
    updated_at: datetime
    marketing: bool | None
    workflow: str | None
    held: str | None

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
            _last_hold_rule(action.reason),
        )


def _last_hold_rule(reason: Any) -> str | None:
    """The rule of a reason's latest hold, None if it was never held."""
    holds = reason.get("held") if isinstance(reason, dict) else None
    if not holds or not isinstance(holds[-1], dict):
        return None
    return str(holds[-1].get("rule", ""))


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
)


def _last_hold_rule_column(dialect: str) -> Any:
    """``reason["held"][-1]["rule"]`` in SQL (NULL when never held): SQLite's JSON paths
    count from the end with ``#-1``; PostgreSQL's ``#>>`` takes ``-1``."""
    if dialect == "sqlite":
        return func.json_extract(_A.c.reason, literal_column("'$.held[#-1].rule'")).label("held")
    return _A.c.reason[("held", -1, "rule")].as_string().label("held")


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
    query = select(*_HISTORY_COLUMNS, _last_hold_rule_column(dialect)).where(
        one_of_param(_A.c.contact_id, "contact_ids", dialect=dialect),
        _A.c.kind == "email",
        wanted,
    )
    if excluding:
        query = query.where(~one_of_param(_A.c.id, "excluded_ids", dialect=dialect))
    return query


def workflow_of(
    registry: Registry, action: Any, *, session: Session | None = None
) -> Workflow | None:
    """The workflow, at the version that wrote ``action`` (``reason["version"]``), whose
    send window and cap hold it: an enrollment finishes on its own version (DESIGN.md,
    principle 5), so a release that drops a window does not send its in-flight emails at
    night. An older version is read from the stored specs (with ``session``), else from
    those this process has already read; the current one when neither has it."""
    name = str(action.reason.get("workflow", ""))
    version = action.reason.get("version")
    current = registry.workflows.get(name)
    if not version or (current is not None and current.version == version):
        return current
    if session is not None:
        found = workflow_for(session, registry, name, str(version))
    else:
        found = known_version(registry, name, str(version))
    return found if found is not None else current


def _caps(
    registry: Registry, action: Any, *, session: Session | None = None
) -> list[tuple[FrequencyCap, str | None]]:
    """The frequency caps over this email: the global one, then its workflow's (at the
    version that wrote it)."""
    workflow = workflow_of(registry, action, session=session)
    caps: list[tuple[FrequencyCap, str | None]] = []
    if registry.guardrails.cap is not None:
        caps.append((registry.guardrails.cap, None))
    if workflow is not None and workflow.cap is not None:
        caps.append((workflow.cap, workflow.name))
    return caps


def history_since(
    registry: Registry,
    actions: Sequence[Any],
    *,
    now: datetime,
    session: Session | None = None,
) -> datetime | None:
    """How far back ``email_history`` must read for these actions' caps (None: no caps)."""
    return min(
        (
            now - cap.per
            for action in actions
            for cap, _scope in _caps(registry, action, session=session)
        ),
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


_QUEUED = "queued behind an earlier held email to this contact"


def _behind_a_held_email(
    others: list[Any], action: Any, *, now: datetime
) -> tuple[datetime, str] | None:
    """Keep held emails in order where the hold applies to both: while an earlier email to
    this contact is held by a rule that holds this one too, wait for it. The hold names
    the rule it waits behind, so an email queued behind this one can tell in turn."""
    workflow = action.reason.get("workflow")
    waits = [
        (row.next_attempt_at, _root_rule(row.held))
        for row in others
        if row.status == ActionStatus.PENDING
        and row.id < action.id
        and row.marketing is not False
        and row.held is not None
        and _holds_it_too(row.held, row.workflow, workflow)
    ]
    if not waits:
        return None
    until, rule = min(waits, key=lambda wait: wait[0])
    return max(until, now) + timedelta(seconds=1), f"{_QUEUED} ({rule})"


def _root_rule(rule: str) -> str:
    """The rule an email was held by, or, if it was queued behind another, that one's."""
    prefix = f"{_QUEUED} ("
    if rule.startswith(prefix) and rule.endswith(")"):
        return rule[len(prefix) : -1]
    return rule


# Rules of one workflow: they hold its own emails, not other workflows'.
_WORKFLOW_RULES = ("send window ", "frequency cap of ")


def _holds_it_too(rule: str, held_workflow: str | None, workflow: Any) -> bool:
    """Whether the rule that holds an email of ``held_workflow`` applies to an email of
    ``workflow``: quiet hours, the global cap (and any rule not recognised, to keep the
    order) apply to all marketing email; a send window or a workflow's cap to that
    workflow's emails."""
    if _root_rule(rule).startswith(_WORKFLOW_RULES):
        return held_workflow is not None and held_workflow == workflow
    return True


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
