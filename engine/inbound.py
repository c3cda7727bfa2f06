"""Delivery and engagement feedback from email providers, into the one event path.

``record_sendgrid_events`` takes the parsed JSON array of a SendGrid Event Webhook POST (the
signature is checked by the HTTP layer first) and, per event, in one transaction:

- dedupes on ``sg_event_id`` (or its fallback key): a redelivered batch records nothing twice;
- records it as an ``email.*`` event on the contact (``email.opened`` carries ``action_id``
  from our ``custom_args``, so ``opened()`` conditions and reports can use it);
- makes bounces, drops and spam reports a suppression, and unsubscribes an unsubscription
  or a spam report (``engine.contacts.set_subscription``, as for an ``email.unsubscribed``
  event from any other source), effective for every workflow at once (sends re-check them
  at the moment of sending);
- reconciles an action left ``unknown`` (a send that timed out): SendGrid's word that it
  was processed or delivered marks it sent, a drop marks it failed.

Events for addresses we do not know are not turned into contacts; they are counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from connectors.webhooks.dedupe import sendgrid_event_key
from engine.contacts import SUBSCRIPTION_EVENTS, normalize_email, set_subscription
from engine.db import transaction
from engine.errors import ValidationError
from engine.event_input import occurred_at_problem
from engine.executor import exit_unsubscribed
from engine.feedback import suppress, suppression_reason
from engine.models import Action, ActionStatus, Contact, SubscriptionStatus
from engine.recording import record_event

log = logging.getLogger(__name__)

SENDGRID_EVENTS = {
    "processed": "email.processed",
    "delivered": "email.delivered",
    "deferred": "email.deferred",
    "open": "email.opened",
    "click": "email.clicked",
    "bounce": "email.bounced",
    "dropped": "email.dropped",
    "spamreport": "email.spam_reported",
    "unsubscribe": "email.unsubscribed",
    "group_unsubscribe": "email.group_unsubscribed",
    "group_resubscribe": "email.group_resubscribed",
}
_DELIVERED = {
    "processed",
    "delivered",
    "deferred",
    "open",
    "click",
    "bounce",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
}


@dataclass
class InboundResult:
    recorded: int = 0
    duplicates: int = 0
    unknown_contacts: int = 0
    rejected: list[str] = field(default_factory=list)  # "index N: why"
    contacts: set[int] = field(default_factory=set)  # to process after commit


def record_sendgrid_events(runtime: Any, events: Sequence[Any]) -> InboundResult:
    """Record a batch; enqueue processing for the contacts it touched."""
    result = InboundResult()
    for index, raw in enumerate(events):
        try:
            _one(runtime, raw, result)
        except ValidationError as exc:
            result.rejected.append(f"index {index}: {exc}")
            log.warning("SendGrid event %s rejected: %s", index, exc)
    runtime.enqueue_or_leave(sorted(result.contacts), what="SendGrid events")
    return result


def _one(runtime: Any, raw: Any, result: InboundResult) -> None:
    if not isinstance(raw, Mapping):
        raise ValidationError("an event must be a JSON object", field="event")
    kind = raw.get("event")
    if kind not in SENDGRID_EVENTS:
        raise ValidationError(f"unknown SendGrid event {kind!r}", field="event")
    key = sendgrid_event_key(raw)
    email = normalize_email(str(raw.get("email", "")))
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        contact = session.exec(select(Contact).where(Contact.email == email)).first()
        if contact is None:
            result.unknown_contacts += 1
            log.info("SendGrid %s for unknown address %s: not recorded", kind, email)
            return
        properties = _properties(raw)
        occurred = _timestamp(raw.get("timestamp"), now)
        if occurred is None:
            # Unreadable, before 2000 or more than a day ahead: refusing it would have SendGrid
            # resend the same value for a day and then drop the batch, so it is kept as of
            # now, with the value SendGrid gave beside.
            log.warning(
                "SendGrid %s: timestamp %r is not a plausible time; kept as of now",
                kind,
                raw.get("timestamp"),
            )
            properties["reported_timestamp"] = raw.get("timestamp")
            occurred = now
        recorded = record_event(
            session,
            runtime.registry,
            now=now,
            email=email,
            event_type=SENDGRID_EVENTS[kind],
            properties=properties,
            source="sendgrid",
            idempotency_key=key,
            occurred_at=occurred,
        )
        if recorded.duplicate:
            result.duplicates += 1
            return
        # The same rules as for these events from any other source (engine/feedback.py),
        # applied here, as recorded: a hard bounce, a drop or a spam report suppresses.
        suppressed_for = suppression_reason(SENDGRID_EVENTS[kind], properties)
        if suppressed_for is not None:
            suppress(session, contact.email, suppressed_for, source="sendgrid", now=now)
        status = SUBSCRIPTION_EVENTS.get(SENDGRID_EVENTS[kind])
        if status is not None:
            set_subscription(session, runtime.registry, contact, status, now=now)
        elif contact.subscription_status != SubscriptionStatus.SUBSCRIBED:
            exit_unsubscribed(session, runtime.registry, contact, now=now)
        _reconcile(session, properties.get("action_id"), kind, raw, now=now)
        result.recorded += 1
        result.contacts.add(contact.id)  # type: ignore[arg-type]


def _properties(raw: Mapping[str, Any]) -> dict[str, Any]:
    keep = (
        "sg_message_id",
        "sg_event_id",
        "url",
        "reason",
        "type",
        "status",
        "category",
        "asm_group_id",
        "useragent",
        "ip",
    )
    properties: dict[str, Any] = {k: raw[k] for k in keep if k in raw}
    if "jl_action_id" in raw:
        properties["action_id"] = str(raw["jl_action_id"])
    return properties


def _reconcile(
    session: Session, action_id: Any, kind: str, raw: Mapping[str, Any], *, now: datetime
) -> None:
    if action_id is None or not str(action_id).isdigit():
        return
    action = session.get(Action, int(action_id))
    if action is None or action.status != ActionStatus.UNKNOWN:
        return
    if kind in _DELIVERED:
        action.status = ActionStatus.SENT
        action.provider_id = str(raw.get("sg_message_id") or action.provider_id or "")
        action.error = f"reconciled: SendGrid reported {kind}"
    elif kind == "dropped":
        action.status = ActionStatus.FAILED
        action.error = f"reconciled: SendGrid dropped it ({raw.get('reason', '')})"
    else:
        return
    action.updated_at = now
    action.completed_at = now
    session.add(action)


def _timestamp(value: Any, now: datetime) -> datetime | None:
    """SendGrid's ``timestamp`` (seconds since the epoch) as a time, or None when it is not
    a plausible event time (``engine.event_input.occurred_at_problem``)."""
    try:
        when = datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return None if occurred_at_problem(when, now=now) else when
