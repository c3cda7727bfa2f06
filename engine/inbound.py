"""Delivery and engagement feedback from email providers, into the one event path.

``record_sendgrid_events`` takes the parsed JSON array of a SendGrid Event Webhook POST (the
signature is checked by the HTTP layer first) and, per event, in one transaction:

- dedupes on ``sg_event_id`` (or its fallback key): a redelivered batch records nothing twice;
- records it as an ``email.*`` event on the contact (``email.opened`` carries ``action_id``
  from our ``custom_args``, so ``opened()`` conditions and reports can use it);
- makes bounces, drops and spam reports a suppression, and unsubscribes an unsubscription
  or a spam report (``engine.contacts.set_subscription``, as for an ``email.unsubscribed``
  event from any other source), effective for every workflow at once (sends re-check them
  at the moment of sending); a consent event older than one already recorded, or a
  resubscribe to an unsubscribe group not ours, is recorded but changes nothing
  (``_consent_ignored``);
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

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from connectors.webhooks.dedupe import sendgrid_event_key
from engine.contacts import SUBSCRIPTION_EVENTS, normalize_email, set_subscription
from engine.db import transaction
from engine.db_errors import contact_went_missing
from engine.erasure import erased_since, remember_suppression
from engine.errors import ValidationError
from engine.event_input import occurred_at_problem
from engine.executor import exit_unsubscribed
from engine.feedback import CONSENT_IGNORED, suppress, suppression_reason
from engine.models import Action, ActionStatus, Contact, Event, SubscriptionStatus
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


class _ErasedMeanwhile(Exception):
    """The event's contact was erased between reading her and recording the event."""


def record_sendgrid_events(
    runtime: Any, events: Sequence[Any], positions: Sequence[int] | None = None
) -> InboundResult:
    """Record a batch; enqueue processing for the contacts it touched. ``positions`` are
    the events' places in the delivered batch, which rejections name (by default their
    places in ``events``)."""
    result = InboundResult()
    for index, raw in zip(positions or range(len(events)), events, strict=True):
        try:
            _one(runtime, raw, result)
        except ValidationError as exc:
            result.rejected.append(f"index {index}: {exc}")
            log.warning("SendGrid event %s rejected: %s", index, exc)
        except (IntegrityError, _ErasedMeanwhile) as exc:
            if isinstance(exc, IntegrityError) and not contact_went_missing(exc):
                raise
            # Erased while this event was being recorded: as for an address we do not know
            result.unknown_contacts += 1
            log.info("SendGrid event %s: its contact was erased meanwhile; not recorded", index)
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
        # A consent event locks its contact: SendGrid posts batches concurrently, and two
        # consent events of one contact must not interleave (each reads what the other
        # wrote, by event time below). Opens, clicks and deliveries need no lock (they
        # would wait behind pipeline jobs holding a hundred contacts' locks).
        found = select(Contact).where(Contact.email == email)
        if SENDGRID_EVENTS[kind] in SUBSCRIPTION_EVENTS:
            found = found.with_for_update(key_share=True)
        contact = session.exec(found).first()
        if contact is None:
            result.unknown_contacts += 1
            # Not named: SendGrid's opens and clicks go on for days after an erasure.
            log.info("SendGrid %s for an address we do not know: not recorded", kind)
            # A bounce or a complaint about an erased address is kept with its digest, so
            # the address is suppressed if it comes back.
            why = suppression_reason(SENDGRID_EVENTS[kind], _properties(raw))
            if why is not None:
                remember_suppression(session, email, why)
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
        if recorded.contact_id != contact.id:  # she was erased since she was read, and
            raise _ErasedMeanwhile  # recording made her anew: rolled back, never created
        if recorded.duplicate:
            result.duplicates += 1
            return
        # The same rules as for these events from any other source (engine/feedback.py),
        # applied here, as recorded: a hard bounce, a drop or a spam report suppresses.
        suppressed_for = suppression_reason(SENDGRID_EVENTS[kind], properties)
        if suppressed_for is not None:
            suppress(session, contact.email, suppressed_for, source="sendgrid", now=now)
        status = SUBSCRIPTION_EVENTS.get(SENDGRID_EVENTS[kind])
        ignored = (
            None
            if status is None
            else _consent_ignored(session, runtime, contact, raw, recorded.event_id, occurred)
        )
        if ignored is not None:
            log.info(
                "SendGrid %s for contact %s recorded, consent unchanged: %s",
                kind,
                contact.id,
                ignored,
            )
            # Marked on the event: one that changed nothing supersedes no other source's
            # consent event still waiting for the pipeline (``feedback.consent_superseded``).
            session.execute(
                update(Event)
                .where(col(Event.id) == recorded.event_id)
                .values(properties={**properties, CONSENT_IGNORED: ignored})
            )
        if status is not None and ignored is None:
            set_subscription(session, runtime.registry, contact, status, now=now)
        elif contact.subscription_status != SubscriptionStatus.SUBSCRIBED:
            exit_unsubscribed(session, runtime.registry, contact, now=now)
        _reconcile(session, contact, properties.get("action_id"), kind, raw, now=now)
        result.recorded += 1
        result.contacts.add(contact.id)  # type: ignore[arg-type]


def _consent_ignored(
    session: Session,
    runtime: Any,
    contact: Contact,
    raw: Mapping[str, Any],
    event_id: int,
    occurred: datetime,
) -> str | None:
    """Why this SendGrid consent event must not change the contact's consent, or None.

    - A ``group_resubscribe`` counts only for our own unsubscribe group
      (``JOURNEYLINE_SENDGRID_UNSUBSCRIBE_GROUP``): the Event Webhook is account-wide, and a
      resubscribe to another team's group is no consent to our marketing (it would lift an
      unsubscribe made with our own link). A ``group_unsubscribe`` from any group is honoured.
    - SendGrid batches from many servers and retries a batch for 24 hours, so its events come
      out of order: one older than a consent change already recorded (from any source) is
      stale and changes nothing, or a late resubscribe would undo a newer unsubscribe.
      Another source's event counts as of when it reached us at the latest (its time may
      be a client's clock, ahead), and a resubscribe to another group, which changed
      nothing, makes nothing stale.
    """
    ours = getattr(runtime.settings, "sendgrid_unsubscribe_group", None)
    if erased_since(session, contact.email, occurred):
        return "older than the erasure of the address, which withdrew every consent"
    if raw.get("event") == "group_resubscribe" and not _our_group(raw.get("asm_group_id"), ours):
        group = raw.get("asm_group_id")
        return f"a resubscribe to unsubscribe group {group!r}, not ours ({ours!r})"
    later = session.exec(
        select(Event.id, Event.type, Event.source, Event.properties)
        .where(
            Event.contact_id == contact.id,
            col(Event.type).in_(list(SUBSCRIPTION_EVENTS)),
            col(Event.occurred_at) > occurred,
            # Another source's time may be its client's, ahead of ours: never later than
            # when it reached us (a form's resubscribe must not outlast a real unsubscribe).
            or_(Event.source == "sendgrid", col(Event.received_at) > occurred),
            Event.id != event_id,
        )
        .order_by(col(Event.id))
    ).all()
    for later_id, later_type, source, properties in later:
        # A resubscribe to another group was recorded but changed nothing: it makes no
        # choice of ours older than it stale (an unsubscribe of ours delivered after it).
        foreign = (
            source == "sendgrid"
            and later_type == SENDGRID_EVENTS["group_resubscribe"]
            and not _our_group((properties or {}).get("asm_group_id"), ours)
        )
        if not foreign:
            return f"older than {later_type} (event {later_id}) already recorded"
    return None


def _our_group(group: Any, ours: int | None) -> bool:
    """Whether an unsubscribe group id (as SendGrid sends it) is ours."""
    return ours is not None and str(group) == str(ours)


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
    session: Session,
    contact: Contact,
    action_id: Any,
    kind: str,
    raw: Mapping[str, Any],
    *,
    now: datetime,
) -> None:
    if action_id is None or not str(action_id).isdigit():
        return
    action = session.get(Action, int(action_id))
    if action is None or action.status != ActionStatus.UNKNOWN:
        return
    if action.contact_id != contact.id:
        # The Event Webhook is account-wide: another deployment sharing the SendGrid account
        # (staging, a second region) numbers its actions too. Its event is not about ours.
        log.warning(
            "SendGrid %s for contact %s names action %s of another contact: not reconciled",
            kind,
            contact.id,
            action_id,
        )
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


_KIND_OF = {event_type: kind for kind, event_type in SENDGRID_EVENTS.items()}


def reconcile_from_recorded(session: Session, action: Action, *, now: datetime) -> bool:
    """Apply to an action just marked ``unknown`` the SendGrid events about it that came
    while it was still ``sending`` (a worker died after SendGrid accepted it: the events
    arrive within a minute, the lease expires later), which ``_reconcile`` passed over
    then; whether one settled it. For whoever marks an action ``unknown``."""
    if action.status != ActionStatus.UNKNOWN or action.id is None:
        return False
    wanted = [SENDGRID_EVENTS[kind] for kind in (*sorted(_DELIVERED), "dropped")]
    found = session.exec(
        select(Event.type, Event.properties)
        .where(
            Event.contact_id == action.contact_id,
            col(Event.type).in_(wanted),
            Event.source == "sendgrid",
            col(Event.properties)["action_id"].as_string() == str(action.id),
        )
        .order_by(col(Event.id))
    ).all()
    # SendGrid's word that it took the message wins over a drop of it (as in _reconcile).
    settled = [(_KIND_OF[t], p) for t, p in found if _KIND_OF[t] in _DELIVERED] or [
        (_KIND_OF[t], p) for t, p in found
    ]
    if not settled:
        return False
    kind, raw = settled[0]
    contact = session.get(Contact, action.contact_id)
    if contact is None:
        return False
    _reconcile(session, contact, action.id, kind, raw, now=now)
    return True


def _timestamp(value: Any, now: datetime) -> datetime | None:
    """SendGrid's ``timestamp`` (seconds since the epoch) as a time, or None when it is not
    a plausible event time (``engine.event_input.occurred_at_problem``)."""
    try:
        when = datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return None if occurred_at_problem(when, now=now) else when
