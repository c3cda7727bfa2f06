"""Consent and delivery feedback from any source, as the pipeline applies it.

SendGrid's webhook applies its unsubscribes, bounces, drops and spam reports as it records
them (``engine/inbound.py``), and so do an unsubscribe link, the contacts API and the CLI
(``engine/unsubscribe.py``). The same events can come from anywhere else too: the track API,
a generic webhook source, the test harness. The pipeline applies those when it processes
them (``apply_feedback``), with two rules:

- consent goes by the order events came in, not the order they are processed: an event is
  not applied when a later consent event of the contact (by id, any source) exists. A
  resubscribe still waiting in the queue does not undo the unsubscribe link the contact
  clicked after it was sent, nor a stale unsubscribe an operator's later resubscribe;
- a hard bounce (``email.bounced`` without a ``type``, or with ``"type": "bounce"``), a drop
  and a spam report suppress the address, as SendGrid's do; a spam report also
  unsubscribes. A drop suppresses only when it is about the address: SendGrid also drops
  for reasons of the message or the account ("Spam Content", "Invalid SMTPAPI header",
  "Recipient List over Package Quota"), and suppressing on those would silence every
  recipient of a step, or of the whole account once over its quota, for good.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from engine.contacts import CONSENT_SET_WHEN_RECORDED, SUBSCRIPTION_EVENTS, set_subscription
from engine.erasure import erased_since
from engine.models import Contact, Event, Suppression

if TYPE_CHECKING:
    from engine.registry import Registry


# SendGrid's drop reasons that are about the address (its bounce, spam report, unsubscribe
# and invalid lists): the message would be dropped again. Matched at the start, lower-cased.
_ADDRESS_DROPS = ("bounced address", "spam reporting address", "unsubscribed address")


def drop_is_about_the_address(reason: Any) -> bool:
    """Whether a drop with this ``reason`` says the address itself cannot take mail (no
    reason given counts as yes, the safe side); not for a message's or an account's fault."""
    if reason is None or not str(reason).strip():
        return True
    text = str(reason).strip().lower()
    return text == "invalid" or text.startswith(_ADDRESS_DROPS)


def suppression_reason(event_type: str, properties: dict[str, Any]) -> str | None:
    """Why this event suppresses the address (as SendGrid's webhook words it), or None."""
    if event_type == "email.bounced":
        return "bounce" if properties.get("type", "bounce") == "bounce" else None
    if event_type == "email.dropped":
        if not drop_is_about_the_address(properties.get("reason")):
            return None
        return f"dropped: {properties.get('reason') or 'no reason given'}"[:64]
    if event_type == "email.spam_reported":
        return "spam report"
    return None


def suppress(session: Session, email: str, reason: str, *, source: str, now: datetime) -> bool:
    """Suppress ``email`` unless it already is; whether this added it."""
    if session.exec(select(Suppression.id).where(Suppression.email == email)).first():
        return False
    session.add(Suppression(email=email, reason=reason, source=source, created_at=now))
    return True


CONSENT_IGNORED = "consent_ignored"
"""The property of a consent event recorded but ignored (a SendGrid resubscribe to another
team's group, or one older than a change already recorded), saying why."""


def consent_superseded(session: Session, contact_id: int, event_id: int) -> bool:
    """Whether a consent event of the contact that changed it came in after ``event_id``
    (one recorded but ignored, ``CONSENT_IGNORED``, does not count)."""
    later = session.exec(
        select(Event.id)
        .where(
            Event.contact_id == contact_id,
            col(Event.id) > event_id,
            col(Event.type).in_(list(SUBSCRIPTION_EVENTS)),
            col(Event.properties)[CONSENT_IGNORED].as_string().is_(None),
        )
        .limit(1)
    ).first()
    return later is not None


def apply_feedback(
    session: Session, registry: Registry, contact: Contact, event: Any, *, now: datetime
) -> None:
    """What a consent or delivery-feedback event does to its contact, unless its source
    applied it when recording it. ``event`` is an ``Event`` or a batch job's plain row."""
    if event.source in CONSENT_SET_WHEN_RECORDED:
        return
    reason = suppression_reason(event.type, event.properties)
    if reason is not None:
        suppress(session, contact.email, reason, source=event.source, now=now)
    status = SUBSCRIPTION_EVENTS.get(event.type)
    if status is None:
        return
    assert contact.id is not None
    if consent_superseded(session, contact.id, event.id):
        return
    if erased_since(session, contact.email, event.occurred_at):
        return  # a choice made before she was erased: the erasure withdrew it
    set_subscription(session, registry, contact, status, now=now)
