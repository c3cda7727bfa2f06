"""``/v1/contacts/{email}``: create or update (PUT, including consent:
``subscription_status``), look up with the timeline (GET), erase (DELETE).

GET returns the newest ``limit`` entries of the timeline (200 unless asked, at most 1000);
``more`` says older ones were left out and ``next_before`` is the cursor that reads them
(``?before=``), page after page to the contact's creation.

A PUT that changes an existing contact's attributes records a ``contact.updated`` event
(``Runtime.upsert_contact``) and has it processed, so conditions on attributes (segments
joined, condition goals and exits) react to it as to a tracked event.

Erasure deletes the contact row; its events, stage transitions, enrollments and actions go
with it (foreign keys ``ON DELETE CASCADE``; SQLite connections turn ``foreign_keys`` on in
``engine.db``). Nothing identifying is written or logged about the erased contact; only a
digest of the address is kept, with why it was suppressed if it was (its plain suppression
row goes), so that if it comes back the new contact starts unsubscribed and suppressed as
before (``engine/erasure.py``). The embedded outboxes' files of her emails and CRM steps
are removed once the erasure is committed (``engine/erasure_files.py``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, select

from engine.api.auth import AuthenticatedRoute, require
from engine.api.deps import RuntimeDep
from engine.api.errors import (
    ERROR_RESPONSES,
    Conflict,
    ErrorResponse,
    Invalid,
    NotFound,
    Problem,
)
from engine.contacts import normalize_email
from engine.db import transaction
from engine.erasure import erase_contact
from engine.erasure_files import outbox_files, outboxes_of, remove_files
from engine.inbound_values import value_problems
from engine.models import Contact, SubscriptionStatus
from engine.subject_access import export_contact
from engine.timeline import Timeline, contact_timeline
from engine.unsubscribe import change_subscription

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/contacts", tags=["contacts"], route_class=AuthenticatedRoute)

EmailPath = Annotated[
    str, Path(description="The contact's email address.", examples=["ana@example.com"])
]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No contact with that email."}
}


class ContactUpsert(BaseModel):
    """Fields to set. ``stage`` only places a new contact (an import); an existing contact
    moves through the stage machine, never by this call. Changing an existing contact's
    attributes is recorded as a ``contact.updated`` event, which workflows react to
    (``on_segment_joined``, ``on_condition``, condition goals and exits, and
    ``on_event("contact.updated", plan="pro")``). ``subscription_status``
    "unsubscribed" ends the contact's marketing workflows, as a SendGrid unsubscribe does;
    "subscribed" lets marketing email reach them again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "attributes": {"first_name": "Ana", "plan": "pro"},
                    "timezone": "Europe/Madrid",
                    "stage": "onboarding",
                }
            ]
        },
    )

    attributes: dict[str, Any] | None = Field(
        default=None,
        description="Merged into the stored. A change to an existing contact is recorded as a "
        "'contact.updated' event, so segments and conditions on attributes react to it.",
    )
    timezone: str | None = Field(default=None, description="IANA time zone.")
    stage: str | None = Field(default=None, description="Initial stage of a new contact.")
    subscription_status: Literal["subscribed", "unsubscribed"] | None = Field(
        default=None,
        description="Consent to marketing email: 'unsubscribed' ends the contact's marketing "
        "workflows (transactional email still goes).",
    )


class ContactOut(BaseModel):
    id: int
    email: str
    stage: str
    score: int
    subscription_status: str
    timezone: str
    attributes: dict[str, Any]
    stage_entered_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, contact: Contact) -> ContactOut:
        assert contact.id is not None
        return cls(
            id=contact.id,
            email=contact.email,
            stage=contact.stage,
            score=contact.score,
            subscription_status=str(contact.subscription_status),
            timezone=contact.timezone,
            attributes=dict(contact.attributes),
            stage_entered_at=contact.stage_entered_at,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
        )


class TimelineEntry(BaseModel):
    kind: str = Field(description="event, stage, enrollment or action.")
    at: datetime
    summary: str = Field(examples=["awareness -> decision by evaluate"])
    details: dict[str, Any]


class LiveEnrollmentOut(BaseModel):
    id: int
    workflow: str
    version: str
    status: str = Field(description="active or waiting.")
    position: int = Field(description="The step it is at.")
    step: str | None = Field(
        description="That step's id: what runs when it wakes (the wait itself when it waits "
        "for an event)."
    )
    wake_at: datetime | None = Field(description="Its next wake-up, when waiting.")
    claimed_until: datetime | None = Field(
        description="Set when a scheduler pass handed that wake-up to a job: no other pass "
        "hands it out before then (after it, a lost job's wake-up is due again)."
    )


class ContactWithTimeline(BaseModel):
    contact: ContactOut
    timeline: list[TimelineEntry] = Field(
        description="What happened, oldest first: the newest 'limit' entries (older than "
        "'before', if given)."
    )
    live: list[LiveEnrollmentOut] = Field(
        description="Enrollments still running or waiting: what comes next."
    )
    more: bool = Field(
        default=False, description="Older entries were left out: read them with next_before."
    )
    next_before: str | None = Field(
        default=None,
        description="When 'more': the cursor to pass as 'before' for the next (older) page.",
    )
    partial_instant: bool = Field(
        default=False,
        description="When 'more': the oldest instant shown goes on in the next page (entries "
        "of one instant stand in causal order, cut in two there).",
    )

    @classmethod
    def of(cls, timeline: Timeline) -> ContactWithTimeline:
        who = timeline.contact
        contact = ContactOut(
            id=who.id,
            email=who.email,
            stage=who.stage,
            score=who.score,
            subscription_status=who.subscription_status,
            timezone=who.timezone,
            attributes=who.attributes,
            stage_entered_at=who.stage_entered_at,
            created_at=who.created_at,
            updated_at=who.updated_at,
        )
        entries = [TimelineEntry.model_validate(e.to_dict()) for e in timeline.entries]
        live = [LiveEnrollmentOut.model_validate(e.__dict__) for e in timeline.live]
        return cls(
            contact=contact,
            timeline=entries,
            live=live,
            more=timeline.more,
            next_before=timeline.next_before,
            partial_instant=timeline.partial_instant,
        )


DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


def _find(session: Session, email: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email == email)).first()


def _not_found(email: str) -> NotFound:
    return NotFound(f"no contact with email {email!r}", field="email")


@router.put(
    "/{email}",
    summary="Create or update a contact",
    responses={
        **ERROR_RESPONSES,
        409: {
            "model": ErrorResponse,
            "description": "A stage was given for an existing contact in another stage.",
        },
    },
    dependencies=[Depends(require("contacts:write"))],
)
def put_contact(
    runtime: RuntimeDep, email: EmailPath, body: Annotated[ContactUpsert, Body()]
) -> ContactOut:
    email = normalize_email(email)
    # Lone surrogates and NaN / Infinity: PostgreSQL refuses them (a 500), and SQLite keeps
    # them where the contact's timeline cannot show them (engine/inbound_values.py).
    unstorable = value_problems(body.attributes, "attributes") if body.attributes else []
    if unstorable:
        raise Invalid([Problem(field=path, message=why) for path, why in unstorable])
    if body.stage is not None:
        with Session(runtime.db) as session:
            existing = _find(session, email)
        if existing is not None and existing.stage != body.stage:
            raise Conflict(
                f"contact {email!r} exists in stage {existing.stage!r}; an existing contact "
                "moves through the stage machine, not by setting its stage",
                field="stage",
            )
    contact = runtime.upsert_contact(
        email, stage=body.stage, timezone=body.timezone, attributes=body.attributes
    )
    if body.subscription_status is not None:
        status = SubscriptionStatus(body.subscription_status)
        change_subscription(runtime, status, via="api", contact_id=contact.id)
        with Session(runtime.db) as session:
            contact = session.get(Contact, contact.id) or contact
    return ContactOut.of(contact)


@router.get(
    "/{email}",
    summary="A contact and its timeline",
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    dependencies=[Depends(require("contacts:read"))],
)
def get_contact(
    runtime: RuntimeDep,
    email: EmailPath,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="How many of the newest entries to return.")
    ] = DEFAULT_LIMIT,
    before: Annotated[
        str | None,
        Query(description="Only entries older than this cursor (a response's next_before)."),
    ] = None,
) -> ContactWithTimeline:
    with Session(runtime.db) as session:
        timeline = contact_timeline(session, email, runtime.registry, limit=limit, before=before)
    if timeline is None:
        raise _not_found(email)
    return ContactWithTimeline.of(timeline)


@router.get(
    "/{email}/export",
    summary="Everything recorded about a contact (a subject access request)",
    description="Her contact row (attributes, consent, external ids), her suppression if "
    "any, and all her events, stage transitions, enrollments and actions with their "
    "payloads, oldest first; `held_elsewhere` says what only the providers, the outbox "
    "folders or other data's senders hold. Give her this, and erase her with DELETE.",
    response_class=JSONResponse,
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    dependencies=[Depends(require("contacts:read"))],
)
def export_contact_data(runtime: RuntimeDep, email: EmailPath) -> Response:
    email = normalize_email(email)
    with Session(runtime.db) as session:
        found = export_contact(session, email, now=runtime.clock.now())
    if found is None:
        raise _not_found(email)
    # Already JSON-ready: written as it is, not walked again by FastAPI's encoder (a
    # contact with 100,000 events took 2.9 s more that way)
    return Response(json.dumps(found), media_type="application/json")


@router.delete(
    "/{email}",
    status_code=204,
    summary="Erase a contact and everything recorded about it",
    response_class=Response,
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    dependencies=[Depends(require("contacts:write"))],
)
def delete_contact(runtime: RuntimeDep, email: EmailPath) -> Response:
    email = normalize_email(email)
    with transaction(runtime.db) as session:
        contact = _find(session, email)
        if contact is None:
            raise _not_found(email)
        contact_id = contact.id
        files = outbox_files(session, contact, outboxes_of(runtime))
        erase_contact(session, contact, now=runtime.clock.now())
    removed = remove_files(files)
    log.info("erased contact %s on request (%d outbox file(s) removed)", contact_id, removed)
    return Response(status_code=204)
