"""Erasing a contact, and remembering that her address asked not to be written to.

An erasure (``DELETE /v1/contacts/{email}``, a CRM's privacy deletion) removes the contact
and everything recorded about her. What it keeps is a SHA-256 digest of the address, with
the time: no name, no address, nothing readable. When the address comes back later (a
queued event, an import, a CRM sync), the new contact starts ``unsubscribed``, so she gets
no marketing email unless she opts in again (an explicit ``subscription_status:
subscribed``, as a signup form would send). Transactional email (receipts) still goes.
Bounces and complaints stay on the suppression list as before (``engine/feedback.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from engine.db import insert_new
from engine.models import Contact, ErasedAddress, SubscriptionStatus

log = logging.getLogger(__name__)

DIGEST_PREFIX = b"journeyline erased address\x00"
"""Set before the address in the digest, so the digests are Journeyline's own, not a list
of plain SHA-256 hashes of addresses to match against others'."""


def address_digest(email: str) -> str:
    """The digest kept for an erased address (already normalised)."""
    return hashlib.sha256(DIGEST_PREFIX + email.encode()).hexdigest()


def erase_contact(session: Session, contact: Contact, *, now: datetime) -> None:
    """Delete ``contact`` and what belongs to her, keeping her address's digest (an
    address erased again keeps its first time)."""
    table: Any = ErasedAddress.__table__  # type: ignore[attr-defined]
    row = {"digest": address_digest(contact.email), "erased_at": now}
    insert_new(session, table, row, unique=("digest",))
    session.delete(contact)


def erased_among(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of ``emails`` (normalised, of contacts about to be created) belonged to an
    erased contact."""
    by_digest = {address_digest(email): email for email in emails}
    if not by_digest:
        return set()
    found = session.exec(
        select(ErasedAddress.digest).where(col(ErasedAddress.digest).in_(list(by_digest)))
    )
    erased = {by_digest[digest] for digest in found}
    if erased:  # counted, never named: the addresses are what erasure forgets
        log.info("%d new contact(s) start unsubscribed: their address was erased", len(erased))
    return erased


def first_consent(session: Session, email: str) -> SubscriptionStatus:
    """The consent a new contact for ``email`` starts with."""
    if erased_among(session, [email]):
        return SubscriptionStatus.UNSUBSCRIBED
    return SubscriptionStatus.SUBSCRIBED
