"""Everything recorded about one contact, for her request to see it (GDPR article 15).

``export_contact`` gathers, by her address, every row Journeyline holds about her: the
contact (attributes, consent, external ids), her suppression if any, and all her events,
stage transitions, enrollments and actions (with their payloads and reasons), oldest first.
What it cannot gather is said in ``held_elsewhere``: copies at the providers and in logs,
and mentions of her in other contacts' data, which only whoever sent that data can find.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from engine.models import Action, Contact, Enrollment, Event, StageTransition, Suppression

HELD_ELSEWHERE = (
    "Emails as sent and their delivery events are also held by the email provider "
    "(SendGrid's activity), CRM records by the CRM (HubSpot); the embedded outbox folders "
    "hold the files of her emails and CRM steps; logs name contacts by id, not by address. "
    "Other contacts' events may mention her in data their senders wrote: search for them "
    "where that data comes from."
)


def _row(item: SQLModel) -> dict[str, Any]:
    return item.model_dump(mode="json")


def _all_of(session: Session, model: Any, contact_id: int | None) -> list[dict[str, Any]]:
    """Every row of ``model`` (a table with ``contact_id``) of the contact, oldest first."""
    found = session.exec(
        select(model).where(model.contact_id == contact_id).order_by(col(model.id))
    )
    return [_row(item) for item in found]


def export_contact(session: Session, email: str, *, now: datetime) -> dict[str, Any] | None:
    """Her data as JSON-ready dicts, or None when there is no contact with ``email``
    (normalised)."""
    contact = session.exec(select(Contact).where(Contact.email == email)).first()
    if contact is None:
        return None
    suppression = session.exec(select(Suppression).where(Suppression.email == email)).first()
    return {
        "exported_at": now.isoformat(),
        "contact": _row(contact),
        "suppression": None if suppression is None else _row(suppression),
        "events": _all_of(session, Event, contact.id),
        "stage_transitions": _all_of(session, StageTransition, contact.id),
        "enrollments": _all_of(session, Enrollment, contact.id),
        "actions": _all_of(session, Action, contact.id),
        "held_elsewhere": HELD_ELSEWHERE,
    }
