"""Claiming a batch of email actions: the first phase of ``perform_email_batch``.

In one transaction, the rules of ``actions._claim`` for many rows: lock the action rows and
their contacts; skip what is done, leased by a live worker or not yet due; mark ``unknown``
what a dead worker left mid-send (the provider cannot dedupe); re-check suppression and
consent for every contact *now* (one query for all suppressions); apply the guard rails
(caps, quiet hours, send windows) per contact where they can bind, pausing the workflows of
the emails they hold (pauses.py: one more read, only when something is held); render each
message (engine/batch_render.py); mark every claimed row ``sending`` with a lease and count
the attempt. The common case runs on plain rows in a few statements; the rare ones (skip,
unknown, fail) on the ORM row through the single path's own helpers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from connectors.email import EmailMessage
from engine.actions import CLAIM_COLUMNS, _finish, held_reason, hold_reason, mark_unknown
from engine.batch_render import BatchRenders
from engine.db import one_of_param
from engine.errors import ConnectorError
from engine.guardrails import (
    HistoryRow,
    defer_until,
    email_history,
    history_since,
    window_holds,
    workflow_of,
)
from engine.models import Action, ActionStatus, Contact, Suppression
from engine.pauses import Held, pause_workflows
from engine.registry import Registry
from engine.unsubscribe import UnsubscribeLinks
from engine.withdrawals import withdrawal_of, withdrawn_marks

if TYPE_CHECKING:  # engine/batch_send.py imports this module
    from engine.batch_send import BatchEmailConnector

# The batch sender's logger, as before the claim had a module of its own.
log = logging.getLogger("engine.batch_send")

_DONE = (ActionStatus.SENT, ActionStatus.SKIPPED, ActionStatus.FAILED, ActionStatus.UNKNOWN)


@dataclass(frozen=True)
class Claimed:
    """An email action claimed for sending, with its message."""

    action_id: int
    message: EmailMessage
    substitutions: Mapping[str, str] = field(default_factory=dict)  # put into ``message``


# What the claim reads of each action: the single path's columns, and the two times the
# cap rules read when a contact has two emails in the batch.
_BATCH_COLUMNS: tuple[Any, ...] = (
    *CLAIM_COLUMNS,
    col(Action.completed_at),
    col(Action.updated_at),
    col(Action.enrollment_id),  # with created_at: whether a goal withdrew it (withdrawals.py)
    col(Action.created_at),
)


@dataclass
class ClaimResult:
    """What a claim took (``items``, to send) and how many actions it left in each status."""

    items: list[Claimed] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


# Columns the claim reads of each contact: rows, not ORM objects (a batch reads a thousand).
_CONTACT_COLUMNS: tuple[Any, ...] = (
    col(Contact.id),
    col(Contact.email),
    col(Contact.stage),
    col(Contact.score),
    col(Contact.attributes),
    col(Contact.subscription_status),
    col(Contact.timezone),
)


def claim_batch(
    session: Session,
    registry: Registry,
    connector: BatchEmailConnector,
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    sender: str,
    links: UnsubscribeLinks | None = None,
) -> ClaimResult:
    """The rules of ``actions._claim`` for many rows: the common case (claim and render) on
    plain rows in a few statements; the rare ones (skip, unknown, fail) on the ORM row
    through the single path's own helpers."""
    result = ClaimResult()
    session.flush()  # the statements below are not ORM ones: nothing pending is flushed by them
    connection = session.connection()
    read_actions, read_contacts = _claim_reads(connection.dialect.name)
    rows = connection.execute(read_actions, {"action_ids": list(action_ids)}).all()
    if len(rows) < len(set(action_ids)):
        result.statuses["missing"] += len(set(action_ids)) - len(rows)
    contact_ids = sorted({r.contact_id for r in rows})
    # Contacts are locked in id order, like the single path locks one: caps stay serialised.
    # With each contact its suppression, if any (at most one per address): one statement.
    found = connection.execute(read_contacts, {"contact_ids": contact_ids}).all()
    contacts = {c.id: c for c in found}
    suppressed: dict[str, str] = {c.email: c.suppressed for c in found if c.suppressed}
    # Read after the contacts' locks: a goal reached while this claim waited for them is seen.
    marks = withdrawn_marks(session, rows)
    # Quiet hours and send windows are checked for everyone in Python; the rules that read
    # the contact's other emails (caps, held ones) only where such emails exist.
    windows = _window_rules_apply(session, registry, rows)
    history = _history(session, registry, rows, contact_ids, now=now)
    finished: set[int] = set()  # skipped or failed below: no longer pending for the others
    renders = BatchRenders(
        registry,
        sender=sender,
        now=now,
        substitute=getattr(connector, "substitutions", False),
        links=links,
    )
    claimed: list[int] = []
    holds_due: dict[int, tuple[datetime, str]] = {}
    for row in rows:
        if row.kind != "email":  # grouping only batches email; the sweeper sends the rest
            log.error("action %s (%s) reached an email batch: left alone", row.id, row.kind)
            result.statuses["not email"] += 1
            continue
        if row.status in _DONE:
            result.statuses[row.status] += 1
            continue
        if row.status == ActionStatus.SENDING:
            if row.lease_until and row.lease_until > now:
                result.statuses[ActionStatus.SENDING] += 1  # another worker is on it
                continue
            if not connector.dedupes:
                outcome = mark_unknown(
                    session,
                    _orm(session, row.id),
                    now=now,
                    error="a worker stopped during the send and the connector cannot dedupe: "
                    "check delivery events before sending again",
                )
                finished.add(row.id)
                result.statuses[outcome.status] += 1
                continue
        elif row.next_attempt_at > now:
            result.statuses[ActionStatus.PENDING] += 1
            continue
        contact = contacts.get(row.contact_id)
        if contact is None:
            _finish(
                session,
                _orm(session, row.id),
                ActionStatus.SKIPPED,
                now=now,
                error="contact erased",
            )
            finished.add(row.id)
            result.statuses[ActionStatus.SKIPPED] += 1
            continue
        suppression = suppressed.get(contact.email)
        held = hold_reason(row, contact, suppression) or withdrawal_of(row, marks)  # type: ignore[arg-type]
        if held:
            action = _orm(session, row.id)
            action.reason = {**action.reason, "skipped": held}
            _finish(session, action, ActionStatus.SKIPPED, now=now)
            finished.add(row.id)
            result.statuses[ActionStatus.SKIPPED] += 1
            continue
        deferral: tuple[datetime, str] | None = None
        if contact.id in history:
            rows_of = [r for r in history[contact.id] if r.id not in finished]
            deferral = defer_until(session, registry, row, contact, now=now, history=rows_of)
        elif windows:
            holds = window_holds(registry, row, contact.timezone, now=now, session=session)
            deferral = max(holds, key=lambda hold: hold[0]) if holds else None
        if deferral is not None:
            holds_due[row.id] = deferral
            _now_is(history, row, held=deferral[1], next_attempt_at=deferral[0])
            continue
        try:
            message, substitutions = renders.message(row, contact)
        except Exception as exc:  # cannot even be built (a broken template): failed, as
            # on the one-by-one path, not retried for ever
            if not isinstance(exc, ConnectorError):
                log.exception("action %s could not be built", row.id)
            _finish(
                session,
                _orm(session, row.id),
                ActionStatus.FAILED,
                now=now,
                error=f"permanent error: {type(exc).__name__}: {exc}",
            )
            finished.add(row.id)
            result.statuses[ActionStatus.FAILED] += 1
            continue
        claimed.append(row.id)
        _now_is(history, row, status=ActionStatus.SENDING, updated_at=now, completed_at=None)
        result.items.append(Claimed(row.id, message, substitutions))
    session.flush()  # the rare ORM changes above (skipped, failed, unknown) first
    if holds_due:  # from the rows already read, in one executemany
        held_rows = {row.id: row for row in rows if row.id in holds_due}
        reasons = {action_id: row.reason for action_id, row in held_rows.items()}
        session.connection().execute(
            _HELD,
            [
                {
                    "held_id": action_id,
                    "held_reason": held_reason(reasons[action_id], until, rule, now=now),
                    "held_until": until,
                    "held_at": now,
                }
                for action_id, (until, rule) in holds_due.items()
            ],
        )
        result.statuses[ActionStatus.PENDING] += len(holds_due)
        # Their workflows wait for them: each wait after one counts from when it goes.
        pause_workflows(
            session,
            registry,
            [
                Held(row, contacts[row.contact_id].timezone, *holds_due[action_id])
                for action_id, row in held_rows.items()
            ],
            now=now,
        )
    if claimed:
        # No ORM object of these rows is in the session: a plain UPDATE, nothing to sync.
        session.connection().execute(
            _claimed_statement(connection.dialect.name),
            {"claimed_ids": claimed, "claimed_until": now + lease, "claimed_at": now},
        )
    return result


_ACTIONS = Action.__table__  # type: ignore[attr-defined]
_HELD = (
    _ACTIONS.update()
    .where(_ACTIONS.c.id == bindparam("held_id"))
    .values(
        reason=bindparam("held_reason"),
        next_attempt_at=bindparam("held_until"),
        lease_until=bindparam("held_until"),  # the sweeper hands it out again when it is due
        updated_at=bindparam("held_at"),
    )
)
"""A held email (``actions.hold_until`` for a row the claim read)."""


@cache
def _claimed_statement(dialect: str) -> Any:
    return (
        _ACTIONS.update()
        .where(one_of_param(_ACTIONS.c.id, "claimed_ids", dialect=dialect))
        .values(
            status=ActionStatus.SENDING,
            attempts=_ACTIONS.c.attempts + 1,
            lease_until=bindparam("claimed_until"),
            updated_at=bindparam("claimed_at"),
        )
    )


@cache
def _claim_reads(dialect: str) -> tuple[Any, Any]:
    """The claim's two reads, on table columns (plain rows, no ORM processing): the actions,
    locked, in id order; their contacts, locked in id order, each with its suppression."""
    actions = (
        select(*(_ACTIONS.c[c.key] for c in _BATCH_COLUMNS))
        .where(one_of_param(_ACTIONS.c.id, "action_ids", dialect=dialect))
        .order_by(_ACTIONS.c.id)
        .with_for_update()
    )
    contacts_table = Contact.__table__  # type: ignore[attr-defined]
    suppressions = Suppression.__table__  # type: ignore[attr-defined]
    contacts = (
        select(  # type: ignore[call-overload]  # more columns than select's overloads name
            *(contacts_table.c[c.key] for c in _CONTACT_COLUMNS),
            suppressions.c.reason.label("suppressed"),
        )
        .select_from(
            contacts_table.outerjoin(suppressions, suppressions.c.email == contacts_table.c.email)
        )
        .where(one_of_param(contacts_table.c.id, "contact_ids", dialect=dialect))
        .order_by(contacts_table.c.id)
        .with_for_update(of=contacts_table, key_share=True)
    )
    return actions, contacts


def _orm(session: Session, action_id: int) -> Action:
    action = session.get(Action, action_id)
    assert action is not None  # locked by this transaction
    return action


def _window_rules_apply(session: Session, registry: Registry, actions: Sequence[Any]) -> bool:
    """Whether quiet hours or a send window (of the version that wrote each email) could
    hold any of these emails."""
    if registry.guardrails.quiet_hours is not None:
        return True
    workflows = [workflow_of(registry, a, session=session) for a in actions]
    return registry.guardrails.quiet_hours is not None or any(
        w is not None and w.send_window is not None for w in workflows
    )


def _history(
    session: Session,
    registry: Registry,
    rows: Sequence[Any],
    contact_ids: Sequence[int],
    *,
    now: datetime,
) -> dict[int, list[Any]]:
    """The other emails of the batch's contacts that could hold one of its actions, in one
    query: pending (held) ones, and with caps those sent since the longest cap's window.
    The batch's own actions are left out of the query (a campaign's batch would read back a
    thousand rows to find nothing) and added back for a contact with more than one of them.
    Only contacts with something here need ``defer_until``; the window rules do for the rest."""
    history = email_history(
        session,
        contact_ids,
        sent_since=history_since(registry, rows, now=now, session=session),
        excluding=[row.id for row in rows],
    )
    per_contact = Counter(row.contact_id for row in rows)
    for row in rows:
        if per_contact[row.contact_id] > 1 and row.kind == "email":
            history.setdefault(row.contact_id, []).append(HistoryRow.of(row))
    return history


def _now_is(history: dict[int, list[Any]], row: Any, **changes: Any) -> None:
    """What the claim just decided for ``row``, where its contact's later actions in this
    batch read it: a claimed email counts against their caps, a held one keeps them behind
    it (they are in the history only when the contact has more than one in the batch)."""
    mine = history.get(row.contact_id)
    if mine is None:
        return
    for n, other in enumerate(mine):
        if other.id == row.id:
            mine[n] = other._replace(**changes)
            return
