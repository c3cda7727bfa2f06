"""Batched email sends: many email actions of one step in one provider request.

``perform_email_batch`` is ``perform_action`` (actions.py) for a group of email actions, with
the same three phases and the same exactly-once rules, done set-based:

1. **claim** (one transaction, engine/batch_claim.py): lock the action rows and their
   contacts; skip what is done, leased by a live worker or not yet due; mark ``unknown``
   what a dead worker left mid-send (the provider cannot dedupe); re-check suppression and
   consent for every contact *now* (one query for all suppressions); apply the guard rails
   (caps, quiet hours, send windows) per contact where they can bind, pausing the workflows
   of the emails they hold (pauses.py: one more read, only when something is held); render
   each message (engine/batch_render.py); mark every claimed row ``sending`` with a lease
   and count the attempt.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.email import EmailMessage, SendResult
from connectors.email.sendgrid import Recipient
from engine.actions import RetryPolicy, record_failure_on
from engine.batch_claim import Claimed, claim_batch
from engine.db import one_of, transaction
from engine.errors import ConnectorError, unexpected_failure
from engine.models import Action, ActionStatus
from engine.registry import Registry
from engine.unsubscribe import UnsubscribeLinks

log = logging.getLogger(__name__)

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
        claimed = claim_batch(
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
            except Exception as exc:  # a connector bug: said loudly; retried only if harmless
                log.exception("%s raised unexpectedly for %s actions", connector.name, len(ids))
                failure = unexpected_failure(exc, dedupes=connector.dedupes)
                outcome.statuses.update(_record_failures(db, ids, failure, now=now, policy=policy))
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


def _requests(items: Sequence[Claimed], size: int) -> Iterator[list[Claimed]]:
    """Requests of at most ``size`` recipients with identical rendered content (or the same
    dynamic template), each address at most once per request (SendGrid refuses a request
    naming an address twice)."""
    groups: dict[tuple, list[Claimed]] = {}
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
            chunk: list[Claimed] = []
            seen: set[str] = set()
            rest: list[Claimed] = []
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
