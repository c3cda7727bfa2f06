"""Erasing a contact, and remembering that her address asked not to be written to.

An erasure (``DELETE /v1/contacts/{email}``, a CRM's privacy deletion) removes the contact
and everything recorded about her. What it keeps is a digest of the address (SHA-256, behind
a prefix of Journeyline's own), with the time, and, if the address was suppressed (a hard
bounce, a spam report), why: the plain suppression row goes with her. When the address comes
back later (a queued event, an import, a CRM sync), the new contact starts ``unsubscribed``,
so she gets no marketing email unless she opts in again (an explicit ``subscription_status:
subscribed``, as a signup form would send), and her suppression is put back. Transactional
email (receipts) still goes, unless she was suppressed.

A HubSpot privacy deletion also keeps a digest of the HubSpot object's id, with the time
(``remember_erased_object``): an email change of the object made before it and delivered
after it (HubSpot delivers out of order) names an address of hers the erasure did not know,
and is dropped, not made a new contact.

The digest is pseudonymous, not anonymous: whoever holds the database can test whether a
given address was erased, which is what it is for (honouring her objection); an operator's
privacy notice should say that it is kept, and for how long.

The files of the embedded outboxes are ``engine/erasure_files.py``'s.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from engine.db import insert_new
from engine.models import Contact, ErasedAddress, SubscriptionStatus, Suppression

log = logging.getLogger(__name__)

DIGEST_PREFIX = b"journeyline erased address\x00"
"""Set before the address in the digest, so the digests are Journeyline's own, not a list
of plain SHA-256 hashes of addresses to match against others'."""


def address_digest(email: str) -> str:
    """The digest kept for an erased address (already normalised)."""
    return hashlib.sha256(DIGEST_PREFIX + email.encode()).hexdigest()


def erase_contact(session: Session, contact: Contact, *, now: datetime) -> None:
    """Delete ``contact`` and what belongs to her, her suppression row included, keeping
    her address's digest, the time (the latest erasure's) and why it was suppressed."""
    suppression = session.exec(
        select(Suppression).where(Suppression.email == contact.email)
    ).first()
    reason = suppression.reason if suppression is not None else None
    _remember(session, address_digest(contact.email), reason, now=now)
    if suppression is not None:
        session.delete(suppression)
    session.delete(contact)


def _remember(session: Session, digest: str, reason: str | None, *, now: datetime) -> None:
    """Keep ``digest`` as erased at ``now`` (the latest erasure's time), with ``reason``."""
    table: Any = ErasedAddress.__table__  # type: ignore[attr-defined]
    row = {"digest": digest, "erased_at": now, "suppressed_for": reason}
    if insert_new(session, table, row, unique=("digest",)) is None:  # erased before
        again = {"erased_at": now, **({"suppressed_for": reason} if reason else {})}
        session.execute(table.update().where(table.c.digest == digest).values(**again))


def object_digest(source: str, object_id: str) -> str:
    """The digest kept for a CRM's object deleted on her request (a HubSpot privacy
    deletion), beside the addresses': with a NUL inside, never an address's."""
    return address_digest(f"{source} object\x00{object_id}")


def remember_erased_object(session: Session, source: str, object_id: str, *, now: datetime) -> None:
    """Remember that ``source``'s object ``object_id`` was deleted on her request at ``now``:
    its changes made before, delivered late (a CRM delivers out of order), are about her,
    under addresses the erasure may not have known yet."""
    _remember(session, object_digest(source, object_id), None, now=now)


def object_erased_at(session: Session, source: str, object_id: str) -> datetime | None:
    """When ``source``'s object ``object_id`` was deleted on her request, if it was."""
    digest = object_digest(source, object_id)
    return session.exec(
        select(ErasedAddress.erased_at).where(ErasedAddress.digest == digest)
    ).first()


def remember_suppression(session: Session, email: str, reason: str) -> bool:
    """Keep ``reason`` (a bounce, a complaint about ``email`` after its contact was erased)
    with the address's digest, if it is an erased one; whether it was."""
    table: Any = ErasedAddress.__table__  # type: ignore[attr-defined]
    done = session.execute(
        table.update()
        .where(table.c.digest == address_digest(email))
        .values(suppressed_for=reason[:64])
    )
    return bool(getattr(done, "rowcount", 0))


@dataclass(frozen=True)
class Erased:
    """What is remembered of an erased address."""

    erased_at: datetime
    suppressed_for: str | None


def erased_among(session: Session, emails: Iterable[str]) -> dict[str, Erased]:
    """Which of ``emails`` (normalised) belonged to an erased contact, and what is kept."""
    by_digest = {address_digest(email): email for email in emails}
    if not by_digest:
        return {}
    found = session.exec(
        select(ErasedAddress.digest, ErasedAddress.erased_at, ErasedAddress.suppressed_for).where(
            col(ErasedAddress.digest).in_(list(by_digest))
        )
    )
    return {by_digest[digest]: Erased(at, why) for digest, at, why in found}


def erased_since(session: Session, email: str, moment: datetime) -> bool:
    """Whether ``email`` was erased at or after ``moment``: what was done or chosen then
    (a consent, a CRM change) predates her erasure, which withdrew it."""
    kept = erased_among(session, [email]).get(email)
    return kept is not None and moment <= kept.erased_at


def returning(session: Session, emails: Iterable[str], *, now: datetime) -> set[str]:
    """Of ``emails`` (normalised, of contacts about to be created), those of erased
    contacts: they are to start unsubscribed. The suppression of each that had one is put
    back (a bounced address bounces again)."""
    erased = erased_among(session, emails)
    if not erased:
        return set()
    table: Any = Suppression.__table__  # type: ignore[attr-defined]
    for email, kept in erased.items():
        if kept.suppressed_for is not None:
            row = {
                "email": email,
                "reason": kept.suppressed_for,
                "source": "before erasure",
                "created_at": now,
            }
            insert_new(session, table, row, unique=("email",))
    # Counted, never named: the addresses are what erasure forgets.
    log.info("%d new contact(s) start unsubscribed: their address was erased", len(erased))
    return set(erased)


def first_consent(session: Session, email: str, *, now: datetime) -> SubscriptionStatus:
    """The consent a new contact for ``email`` starts with (``returning``)."""
    if returning(session, [email], now=now):
        return SubscriptionStatus.UNSUBSCRIBED
    return SubscriptionStatus.SUBSCRIBED
