"""Unsubscribe links, and changing a contact's consent on someone's request.

One-click unsubscribe (RFC 8058, which Gmail and Yahoo require of bulk senders) needs a URL
per recipient: ``<public URL>/v1/unsubscribe/<token>``. The token names the contact by id,
not by address, so the link does not leak it; it is ``<id>.<signature>``, the signature an
HMAC-SHA256 of the id and the contact's address under ``JOURNEYLINE_UNSUBSCRIBE_SECRET`` (128
bits, URL-safe base64): an id reused after an erasure does not make an old link name someone
else, and a contact whose address changed gets new links. It does not expire (an unsubscribe
link must keep working), and one with a wrong signature is refused. Changing the secret
invalidates every link already sent.

Links exist only when both ``JOURNEYLINE_PUBLIC_URL`` and ``JOURNEYLINE_UNSUBSCRIBE_SECRET``
are set (``unsubscribe_links``; the URL alone is logged as a warning, the secret alone
refused); then every marketing email carries ``List-Unsubscribe`` and
``List-Unsubscribe-Post`` headers and its template an ``unsubscribe_url``. Without them
nothing changes: no header, an empty ``unsubscribe_url``, and the unsubscribe route answers
404. Transactional email (``marketing=False``) never carries a link.

``change_subscription`` is what an unsubscribe link, the contacts API and the CLI call: the
contact's row lock, ``engine.contacts.set_subscription`` (the same change a SendGrid
unsubscribe event makes), and for a change an ``email.unsubscribed`` or
``email.resubscribed`` event in the contact's timeline saying how (``via``), processed like
any other so workflows triggered by it run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel import select

from engine.contacts import normalize_email, set_subscription
from engine.db import transaction
from engine.errors import ConfigurationError
from engine.models import Contact, SubscriptionStatus
from engine.pipeline import lock_contact
from engine.recording import INTERNAL_SOURCE, record_event

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from engine.settings import Settings

log = logging.getLogger(__name__)

ROUTE = "/v1/unsubscribe"
_PURPOSE = b"journeyline unsubscribe v2:"
_SIGNATURE_BYTES = 16
_TOKEN = re.compile(r"([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{22})")
UNSUBSCRIBED_EVENT = "email.unsubscribed"
RESUBSCRIBED_EVENT = "email.resubscribed"


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Signed unsubscribe URLs under ``base_url`` (the service's public URL)."""

    base_url: str
    secret: str = field(repr=False)

    def token(self, contact_id: int, email: str) -> str:
        """The URL-safe token naming ``contact_id``, signed with its address: an id reused
        after an erasure (SQLite reuses the highest) does not make an old link name someone
        else."""
        return f"{contact_id}.{self._signature(contact_id, email)}"

    def parse(self, token: str) -> tuple[int, str] | None:
        """The contact id and signature a well-formed token holds, or None (not yet checked:
        ``signed`` needs the contact's address)."""
        found = _TOKEN.fullmatch(token)
        if found is None:
            return None
        return int(found.group(1)), found.group(2)

    def signed(self, contact_id: int, email: str, signature: str) -> bool:
        """Whether ``signature`` is this contact's (compared in constant time)."""
        return hmac.compare_digest(signature, self._signature(contact_id, email))

    def url(self, contact_id: int, email: str) -> str:
        """The one-click unsubscribe URL of the contact."""
        return f"{self.base_url.rstrip('/')}{ROUTE}/{self.token(contact_id, email)}"

    def _signature(self, contact_id: int, email: str) -> str:
        signed = _PURPOSE + f"{contact_id}:{email}".encode()
        digest = hmac.new(self.secret.encode(), signed, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_SIGNATURE_BYTES]).rstrip(b"=").decode()


def unsubscribe_links(settings: Settings) -> UnsubscribeLinks | None:
    """The links ``settings`` configure, or None (no links, nothing changes).

    The public URL has other uses (HubSpot signs the URL it called, behind a proxy), so one
    set without the secret only logs a warning that marketing email goes without links; the
    secret without the URL is a ``ConfigurationError`` (it can do nothing alone)."""
    url, secret = settings.public_url, settings.unsubscribe_secret
    if url and secret:
        return UnsubscribeLinks(url, secret)
    if secret:
        raise ConfigurationError(
            "JOURNEYLINE_UNSUBSCRIBE_SECRET is set but JOURNEYLINE_PUBLIC_URL is not: "
            "unsubscribe links need the service's public URL; set it, or unset the secret"
        )
    if url:
        log.warning(
            "JOURNEYLINE_PUBLIC_URL is set but JOURNEYLINE_UNSUBSCRIBE_SECRET is not: "
            "marketing email goes out without one-click unsubscribe links"
        )
    return None


@dataclass(frozen=True)
class SubscriptionChange:
    """What ``change_subscription`` did."""

    contact_id: int
    email: str
    status: SubscriptionStatus
    changed: bool  # False: the contact already had that status (nothing else happened)

    def describe(self) -> str:
        if not self.changed:
            return f"{self.email} was already {self.status}: nothing changed"
        if self.status == SubscriptionStatus.UNSUBSCRIBED:
            return f"{self.email} unsubscribed: their marketing workflows ended"
        return f"{self.email} subscribed again: marketing email may be sent to them"


def change_subscription(
    runtime: Runtime,
    status: SubscriptionStatus,
    *,
    via: str,
    email: str | None = None,
    contact_id: int | None = None,
) -> SubscriptionChange | None:
    """Set the consent of the contact named by ``email`` or ``contact_id``, as asked ``via``
    ("link", "api", "cli"); None when there is no such contact. Idempotent: a repeat
    changes nothing and records nothing."""
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        if contact_id is None:
            address = normalize_email(email or "")
            contact_id = session.exec(select(Contact.id).where(Contact.email == address)).first()
            if contact_id is None:
                return None
        contact = lock_contact(session, contact_id)
        if contact is None:
            return None
        changed = set_subscription(session, runtime.registry, contact, status, now=now)
        recorded = changed
        if recorded:
            # Applied above, in this transaction: the pipeline only runs what the event
            # triggers (``engine.contacts.CONSENT_SET_WHEN_RECORDED``). Recorded both ways:
            # the timeline says when and how, and a consent event still queued from before
            # this one is not applied over it (``engine.feedback``).
            record_event(
                session,
                runtime.registry,
                now=now,
                email=contact.email,
                event_type=(
                    UNSUBSCRIBED_EVENT
                    if status == SubscriptionStatus.UNSUBSCRIBED
                    else RESUBSCRIBED_EVENT
                ),
                properties={"via": via},
                source=INTERNAL_SOURCE,
            )
        done = SubscriptionChange(contact_id, contact.email, status, changed)
    if changed:
        log.info("contact %s %s (via %s)", contact_id, status, via)
    if recorded:
        runtime.enqueue_or_leave([contact_id], what=f"consent change via {via}")
    return done
