"""Batched email sends: many email actions of one step in one provider request.

``perform_email_batch`` is ``perform_action`` (actions.py) for a group of email actions, with
the same three phases and the same exactly-once rules, done set-based:

1. **claim** (one transaction): lock the action rows and their contacts; skip what is done,
   leased by a live worker or not yet due; mark ``unknown`` what a dead worker left mid-send
   (the provider cannot dedupe); re-check suppression and consent for every contact *now*
   (one query for all suppressions); apply the guard rails (caps, quiet hours, send windows)
   per contact where they can bind, pausing the workflows of the emails they hold
   (pauses.py: one more read, only when something is held); render each message; mark
   every claimed row ``sending`` with a lease and count the attempt.
2. **send**, outside any transaction: one request per group of identical rendered content,
   up to the connector's ``batch_size`` recipients (SendGrid: 1,000 personalizations), each
   recipient carrying its own ``jl_action_id`` / ``jl_contact_id`` in ``custom_args``.
3. **record** (one transaction per request): the request succeeds or fails as a whole, so
   its outcome goes on every action in it: ``sent`` with the request's message id, or the
   single-send failure rule applied to each row (transient: retried with backoff by the
   sweeper; permanent: ``failed`` with the provider's reason; timeout: ``unknown``).

Which sends batch: marketing email actions dispatched together (a job's new actions, a
broadcast's page, a sweep) go in batches of up to ``batch_size``; transactional email that
one job dispatches together (receipts of many contacts processed in one transaction) goes
in batches of its own, on the transactional queue, never mixed with marketing email and
never held back for a batch. The actions of one
(workflow, version, step, template, data) next to each other; a request then carries actions
whose *rendered* subject and bodies are identical. A template that uses contact
fields (``{{ contact.first_name }}``) renders differently per contact; where the connector
takes substitution tags (SendGrid), a contact whose rendering is the template's tagged
skeleton with their own values put in shares the skeleton's request, the values in their
personalization (engine/substitutions.py); the others get a request per distinct rendering.
The batch never sends one contact another contact's text. A SendGrid dynamic template
step (``sendgrid_template``) batches by template id: one request carries up to
``batch_size`` contacts, each personalization with its own ``dynamic_template_data``, since
SendGrid does the rendering.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.email import EmailMessage, SendResult
from connectors.email.sendgrid import MAX_SUBSTITUTION_BYTES, Recipient, substitutions_size
from engine.actions import (
    CLAIM_COLUMNS,
    RetryPolicy,
    _finish,
    held_reason,
    hold_reason,
    record_failure_on,
)
from engine.db import one_of, one_of_param, transaction
from engine.errors import ConnectorError
from engine.guardrails import (
    HistoryRow,
    defer_until,
    email_history,
    history_since,
    window_holds,
)
from engine.models import Action, ActionStatus, Contact, Suppression
from engine.pauses import Held, pause_workflows
from engine.performers import build_message, contact_view, message_fields
from engine.registry import Registry
from engine.substitutions import Skeleton, fill, skeleton, substitutions_for, values_for
from engine.template_facts import TemplateFacts, facts_of
from engine.templates import RenderedEmail
from engine.unsubscribe import UnsubscribeLinks
from engine.withdrawals import withdrawal_of, withdrawn_marks

log = logging.getLogger(__name__)

_DONE = (ActionStatus.SENT, ActionStatus.SKIPPED, ActionStatus.FAILED, ActionStatus.UNKNOWN)
_IN_CHUNKS_OF = 1000  # ids per IN (...) list


@runtime_checkable
class BatchEmailConnector(Protocol):
    """An email connector that can send one message to many recipients in one request."""

    name: str
    dedupes: bool
    batch_size: int

    def send_batch(self, message: EmailMessage, recipients: Sequence[Recipient]) -> SendResult: ...


def batch_size_of(connector: object) -> int:
    """How many recipients ``connector`` takes per request (1: it cannot batch)."""
    if isinstance(connector, BatchEmailConnector):
        return max(1, int(connector.batch_size))
    return 1


@dataclass
class BatchOutcome:
    """What one batch job did: requests made and the resulting status of each action."""

    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


# --- grouping ---------------------------------------------------------------------------


def batch_key(
    kind: str,
    payload: Mapping[str, Any],
    reason: Mapping[str, Any],
    *,
    transactional: bool = False,
) -> tuple | None:
    """Actions with the same key are likely to share a request; None: this one goes alone.
    Marketing and transactional email never share a batch: transactional email keeps its
    own queue and batches only with transactional email dispatched at the same moment
    (``transactional=True``); it is never held back to wait for one."""
    if kind != "email" or bool(payload.get("marketing", True)) == transactional:
        return None
    data = json.dumps(payload.get("data", {}), sort_keys=True, default=str)
    return (
        reason.get("workflow"),
        reason.get("version"),
        reason.get("step"),
        payload.get("template"),
        payload.get("sendgrid_template"),
        data,
    )


def group_for_batches(
    db: Engine,
    action_ids: Sequence[int],
    *,
    size: int,
    described: Mapping[int, tuple[str, Mapping[str, Any], Mapping[str, Any]]] | None = None,
    transactional: bool = False,
) -> tuple[list[list[int]], list[int]]:
    """Split due actions into batches (lists of at most ``size`` marketing emails, or with
    ``transactional`` of transactional ones, those sharing a batch key next to each other)
    and singles (everything else, and a lone email, sent one by one). ``described`` gives
    the (kind, payload, reason) of actions already known (``Effects.described``); the
    others are read."""
    if size <= 1 or len(action_ids) < 2:
        return [], list(action_ids)
    described = described or {}
    rows: list[tuple[Any, ...]] = [
        (action_id, *described[action_id]) for action_id in action_ids if action_id in described
    ]
    unknown = [action_id for action_id in action_ids if action_id not in described]
    if unknown:
        with Session(db) as session:
            for chunk in _chunks_of(unknown, _IN_CHUNKS_OF):
                rows += session.exec(
                    select(Action.id, Action.kind, Action.payload, Action.reason).where(
                        col(Action.id).in_(chunk)
                    )
                ).all()
    groups: dict[tuple, list[int]] = {}
    singles: list[int] = []
    for action_id, kind, payload, reason in sorted(rows, key=lambda row: row[0]):
        key = batch_key(kind, payload or {}, reason or {}, transactional=transactional)
        if key is None:
            singles.append(action_id)
        else:
            groups.setdefault(key, []).append(action_id)
    # Every email of the kind goes in a batch, whatever its step: a request still carries only
    # identical renderings (``_requests``), and a job per step would cost a claim per step.
    # Groups stay together, so a step's emails share as few batches as they can.
    batchable = [action_id for ids in groups.values() for action_id in ids]
    if len(batchable) == 1:
        return [], sorted(singles + batchable)
    return list(_chunks_of(batchable, size)), singles


# --- performing a batch -----------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    action_id: int
    message: EmailMessage
    substitutions: Mapping[str, str] = field(default_factory=dict)  # put into ``message``


def perform_email_batch(
    db: Engine,
    registry: Registry,
    connector: BatchEmailConnector,
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    policy: RetryPolicy,
    sender: str,
    links: UnsubscribeLinks | None = None,
) -> BatchOutcome:
    outcome = BatchOutcome()
    with transaction(db) as session:
        claimed = _claim_batch(
            session,
            registry,
            connector,
            action_ids,
            now=now,
            lease=lease,
            sender=sender,
            links=links,
        )
        outcome.statuses.update(claimed.statuses)
    sent: list[tuple[int, str | None]] = []  # (action id, provider id) accepted so far
    try:
        for chunk in _requests(claimed.items, connector.batch_size):
            outcome.requests += 1
            recipients = [
                Recipient(
                    c.message.to,
                    c.message.custom_args,
                    c.message.template_data,
                    c.substitutions,
                    unsubscribe_url=c.message.unsubscribe_url,
                )
                for c in chunk
            ]
            ids = [c.action_id for c in chunk]
            try:
                result = connector.send_batch(chunk[0].message, recipients)
            except ConnectorError as exc:
                outcome.statuses.update(_record_failures(db, ids, exc, now=now, policy=policy))
                continue
            except Exception as exc:  # a connector bug: retry like a transient error, loudly
                log.exception("%s raised unexpectedly for %s actions", connector.name, len(ids))
                outcome.statuses.update(_record_failures(db, ids, exc, now=now, policy=policy))
                continue
            sent.extend((action_id, result.provider_id) for action_id in ids)
    finally:
        # Every accepted request is recorded, in one transaction for the batch (personalised
        # content makes a request per recipient). Until then the actions are ``sending``
        # under their lease: a worker that dies here leaves them to the sweeper's rule for
        # a stopped send, exactly as if it had died during the request.
        if sent:
            _record_sent(db, sent, now=now)
            outcome.statuses[ActionStatus.SENT] += len(sent)
    return outcome


_SENT = (
    Action.__table__.update()  # type: ignore[attr-defined]
    .where(
        Action.__table__.c.id == bindparam("sent_id"),  # type: ignore[attr-defined]
        Action.__table__.c.status == ActionStatus.SENDING,  # type: ignore[attr-defined]
    )
    .values(
        status=ActionStatus.SENT,
        provider_id=bindparam("sent_provider_id"),
        error=None,
        lease_until=None,
        completed_at=bindparam("sent_at"),
        updated_at=bindparam("sent_at"),
    )
)


def _record_sent(db: Engine, sent: list[tuple[int, str | None]], *, now: datetime) -> None:
    """Mark accepted actions sent: one UPDATE run for every row (an executemany)."""
    with transaction(db) as session:
        session.connection().execute(
            _SENT,
            [
                {"sent_id": action_id, "sent_provider_id": provider_id, "sent_at": now}
                for action_id, provider_id in sent
            ],
        )


# What the claim reads of each action: the single path's columns, and the two times the
# cap rules read when a contact has two emails in the batch.
_BATCH_COLUMNS = (
    *CLAIM_COLUMNS,
    col(Action.completed_at),
    col(Action.updated_at),
    col(Action.enrollment_id),  # with created_at: whether a goal withdrew it (withdrawals.py)
    col(Action.created_at),
)


@dataclass
class _ClaimResult:
    items: list[_Claimed] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


# Columns the claim reads of each contact: rows, not ORM objects (a batch reads a thousand).
_CONTACT_COLUMNS = (
    col(Contact.id),
    col(Contact.email),
    col(Contact.stage),
    col(Contact.score),
    col(Contact.attributes),
    col(Contact.subscription_status),
    col(Contact.timezone),
)


def _claim_batch(
    session: Session,
    registry: Registry,
    connector: BatchEmailConnector,
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    sender: str,
    links: UnsubscribeLinks | None = None,
) -> _ClaimResult:
    """The rules of ``actions._claim`` for many rows: the common case (claim and render) on
    plain rows in a few statements; the rare ones (skip, unknown, fail) on the ORM row
    through the single path's own helpers."""
    result = _ClaimResult()
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
    windows = _window_rules_apply(registry, rows)
    history = _history(session, registry, rows, contact_ids, now=now)
    finished: set[int] = set()  # skipped or failed below: no longer pending for the others
    renders = _Renders(
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
                _finish(
                    session,
                    _orm(session, row.id),
                    ActionStatus.UNKNOWN,
                    now=now,
                    error="a worker stopped during the send and the connector cannot dedupe: "
                    "check delivery events before sending again",
                )
                finished.add(row.id)
                result.statuses[ActionStatus.UNKNOWN] += 1
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
            holds = window_holds(registry, row, contact.timezone, now=now)
            deferral = max(holds, key=lambda hold: hold[0]) if holds else None
        if deferral is not None:
            holds_due[row.id] = deferral
            _now_is(history, row, held=deferral[1], next_attempt_at=deferral[0])
            continue
        try:
            message, substitutions = renders.message(row, contact)
        except ConnectorError as exc:  # cannot even be built (a broken template)
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
        result.items.append(_Claimed(row.id, message, substitutions))
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
        select(
            *(contacts_table.c[c.key] for c in _CONTACT_COLUMNS),
            suppressions.c.reason.label("suppressed"),
        )
        .select_from(
            contacts_table.outerjoin(suppressions, suppressions.c.email == contacts_table.c.email)
        )
        .where(one_of_param(contacts_table.c.id, "contact_ids", dialect=dialect))
        .order_by(contacts_table.c.id)
        .with_for_update(of=contacts_table)
    )
    return actions, contacts


class _Renders:
    """Messages for a batch. A template that never reads ``contact`` renders the same for
    everyone: it is rendered once per (template, data, workflow, step) and addressed per
    action; any other template is rendered for each contact, exactly as the single path.
    With ``substitute`` (the connector takes substitution tags), a contact's rendering that
    is a skeleton with their own values put in goes out as that skeleton plus the values
    (engine/substitutions.py), so that such emails share requests.

    With ``links``, each marketing email carries its contact's unsubscribe link. Templates
    then render with ``UNSUBSCRIBE_TAG`` as ``unsubscribe_url`` (the same for everyone, so
    content is still shared), and the link goes in as one more substitution of the
    contact's personalization, or is put in here when the connector takes none (then that
    email's content is its own)."""

    def __init__(
        self,
        registry: Registry,
        *,
        sender: str,
        now: datetime,
        substitute: bool = False,
        links: UnsubscribeLinks | None = None,
    ) -> None:
        self.registry = registry
        self.sender = sender
        self.now = now
        self.substitute = substitute
        self.links = links
        self._shared: dict[tuple, EmailMessage] = {}
        self._skeleton_messages: dict[tuple, EmailMessage] = {}
        self._facts: dict[str, TemplateFacts] = {}
        self._tagged: dict[tuple, Any] = {}  # renderings with UNSUBSCRIBE_TAG, this batch

    def facts(self, template: str) -> TemplateFacts:
        """``template_facts.facts_of``, once per template and batch (looking up the loaded
        template checks its file)."""
        found = self._facts.get(template)
        if found is None:
            found = self._facts[template] = facts_of(self.registry, template)
        return found

    def message(self, action: Any, contact: Any) -> tuple[EmailMessage, Mapping[str, str]]:
        """The message for ``action`` and, when it is a skeleton, this contact's values."""
        message, substitutions = self._message(action, contact)
        return self._with_link(message, substitutions)

    def _message(self, action: Any, contact: Any) -> tuple[EmailMessage, Mapping[str, str]]:
        template = str(action.payload["template"])
        # A SendGrid dynamic template is not rendered here: its per-contact data is the message.
        if action.payload.get("sendgrid_template"):
            return self._own(action, contact), {}
        data = json.dumps(action.payload.get("data", {}), sort_keys=True, default=str)
        linked = self._linked(action)
        key = (template, data, action.reason.get("workflow"), action.reason.get("step"), linked)
        if self.facts(template).reads_contact:
            if not self.substitute:
                return self._own(action, contact), {}
            return self._personalised(action, contact, key)
        shared = self._shared.get(key)
        if shared is None:
            if linked:
                content = self._rendered_for_all(template, data, action.payload.get("data", {}))
            else:
                content = self.facts(template).rendered_for_all(
                    self.registry, template, data_key=data, data=action.payload.get("data", {})
                )
            shared = self._around(content, action, contact)
            self._shared[key] = shared
        return self._addressed(shared, action, contact), {}

    def _linked(self, action: Any) -> bool:
        """Whether ``action``'s email carries an unsubscribe link (and renders the tag)."""
        return self.links is not None and bool(action.payload.get("marketing", True))

    def _rendered_for_all(self, template: str, data_key: str, data: Any) -> RenderedEmail:
        """``TemplateFacts.rendered_for_all`` with the unsubscribe tag, once per batch."""
        key = ("all", template, data_key)
        if key not in self._tagged:
            self._tagged[key] = self.registry.templates.render(
                template, contact={}, data=dict(data), unsubscribe_url=UNSUBSCRIBE_TAG
            )
        rendered: RenderedEmail = self._tagged[key]
        return rendered

    def _skeleton(
        self, template: str, data_key: str, data: Any, fields: tuple[str, ...]
    ) -> Skeleton | None:
        """``TemplateFacts.skeleton`` with the unsubscribe tag, once per batch."""
        key = ("skeleton", template, data_key, fields)
        if key not in self._tagged:
            render = self.registry.templates.render
            self._tagged[key] = skeleton(
                lambda tagged: render(
                    template, contact=tagged, data=dict(data), unsubscribe_url=UNSUBSCRIBE_TAG
                ),
                fields,
            )
        found: Skeleton | None = self._tagged[key]
        return found

    def _with_link(
        self, message: EmailMessage, substitutions: Mapping[str, str]
    ) -> tuple[EmailMessage, Mapping[str, str]]:
        """Put the contact's unsubscribe link where its content has the tag: as one more
        substitution when the connector takes them and SendGrid's size limit allows, else
        into the content itself (the contact's values with it)."""
        link = message.unsubscribe_url
        if not link or not any(
            UNSUBSCRIBE_TAG in part for part in (message.subject, message.text, message.html)
        ):
            return message, substitutions
        with_link = {**substitutions, UNSUBSCRIBE_TAG: link}
        if self.substitute and substitutions_size(with_link) <= MAX_SUBSTITUTION_BYTES:
            return message, with_link
        return replace(
            message,
            subject=_filled(message.subject, substitutions, link),
            text=_filled(message.text, substitutions, link),
            html=_filled(message.html, substitutions, link),
        ), {}

    def _around(self, content: RenderedEmail, action: Any, contact: Any) -> EmailMessage:
        """The email of ``action`` to ``contact`` with ``content`` already rendered."""
        return EmailMessage(
            subject=content.subject,
            text=content.text,
            html=content.html,
            **message_fields(action, contact, now=self.now, sender=self.sender, links=self.links),
        )

    def _own(self, action: Any, contact: Any, view: dict[str, Any] | None = None) -> EmailMessage:
        return build_message(
            self.registry,
            action,
            contact,
            now=self.now,
            sender=self.sender,
            view=view,
            links=self.links,
            link_as=UNSUBSCRIBE_TAG,
        )

    def _personalised(
        self, action: Any, contact: Any, key: tuple
    ) -> tuple[EmailMessage, Mapping[str, str]]:
        view = contact_view(contact)
        fields = tuple(sorted(view))
        shape = (*key, fields)
        template = str(action.payload["template"])
        facts = self.facts(template)
        if self._linked(action):
            shaped = self._skeleton(template, key[1], action.payload.get("data", {}), fields)
        else:
            shaped = facts.skeleton(
                self.registry,
                template,
                data_key=key[1],
                data=action.payload.get("data", {}),
                fields=fields,
            )
        if shaped is not None and facts.prints_fields_only:
            # Exact by the template's syntax: the skeleton plus these values is what
            # rendering for this contact would give, so it is not rendered to compare.
            values = values_for(shaped, view)
            if values is not None:
                base = self._skeleton_messages.get(shape)
                if base is None:
                    base = self._around(shaped.rendered, action, contact)
                    self._skeleton_messages[shape] = base
                return self._addressed(base, action, contact), values
        own = self._own(action, contact, view)
        if shaped is None:
            return own, {}
        real = RenderedEmail(own.subject, own.text, own.html)
        values = substitutions_for(shaped, view, real)
        if values is None:
            return own, {}
        content = shaped.rendered
        return replace(own, subject=content.subject, text=content.text, html=content.html), values

    def _addressed(self, shared: EmailMessage, action: Any, contact: Any) -> EmailMessage:
        return replace(
            shared,
            to=contact.email,
            idempotency_key=action.idempotency_key,
            custom_args={"jl_action_id": str(action.id), "jl_contact_id": str(contact.id)},
            unsubscribe_url=(
                self.links.url(contact.id, contact.email) if shared.unsubscribe_url else ""
            ),
        )


UNSUBSCRIBE_TAG = "-jlunsub-"
"""What templates print as ``unsubscribe_url`` in a batch, replaced per recipient by their
link. Not shaped like a contact field's tag (engine/substitutions.py), and without anything
HTML escapes, like the link itself (``JOURNEYLINE_PUBLIC_URL`` is checked for that)."""


def _filled(text: str, substitutions: Mapping[str, str], link: str) -> str:
    """``text`` as the contact gets it: their values and their unsubscribe link put in."""
    return fill(text, substitutions).replace(UNSUBSCRIBE_TAG, link)


def _orm(session: Session, action_id: int) -> Action:
    action = session.get(Action, action_id)
    assert action is not None  # locked by this transaction
    return action


def _window_rules_apply(registry: Registry, actions: Sequence[Action]) -> bool:
    """Whether quiet hours or a send window could hold any of these emails."""
    workflows = [registry.workflows.get(str(a.reason.get("workflow", ""))) for a in actions]
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
        sent_since=history_since(registry, rows, now=now),
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


def _requests(items: Sequence[_Claimed], size: int) -> Iterator[list[_Claimed]]:
    """Requests of at most ``size`` recipients with identical rendered content (or the same
    dynamic template), each address at most once per request (SendGrid refuses a request
    naming an address twice)."""
    groups: dict[tuple, list[_Claimed]] = {}
    for item in items:
        m = item.message
        key = (
            m.sender,
            m.subject,
            m.text,
            m.html,
            m.template_id,
            m.marketing,
            m.categories,
            tuple(sorted(m.headers.items())),
        )
        groups.setdefault(key, []).append(item)
    for group in groups.values():
        pending = group
        while pending:
            chunk: list[_Claimed] = []
            seen: set[str] = set()
            rest: list[_Claimed] = []
            for item in pending:
                address = item.message.to.lower()
                if len(chunk) < size and address not in seen:
                    chunk.append(item)
                    seen.add(address)
                else:
                    rest.append(item)
            yield chunk
            pending = rest


def _record_failures(
    db: Engine, ids: Sequence[int], exc: Exception, *, now: datetime, policy: RetryPolicy
) -> Counter[str]:
    """The single-send failure rule, applied to every action of a failed request."""
    statuses: Counter[str] = Counter()
    with transaction(db) as session:
        for action in _load(session, ids):
            statuses[record_failure_on(session, action, exc, now=now, policy=policy).status] += 1
    return statuses


def _load(session: Session, ids: Sequence[int]) -> list[Action]:
    return list(
        session.exec(
            select(Action).where(one_of(session, col(Action.id), ids)).order_by(col(Action.id))
        ).all()
    )


def _chunks_of(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
