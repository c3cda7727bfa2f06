"""The tables. Alembic owns the schema (``alembic/versions``); only tests call ``create_all``.

Model families follow SQLModel's pattern: ``ContactBase`` holds the fields a user may set,
``Contact`` is the table, ``ContactCreate`` / ``ContactRead`` are the API shapes.
All datetimes are stored as UTC (``UTCDateTime``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint
from sqlalchemy.orm import relationship
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Field, SQLModel

from engine.db import UTCDateTime


class SubscriptionStatus(StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class EventStatus(StrEnum):
    PENDING = "pending"  # recorded, not yet processed
    PROCESSED = "processed"  # a rule or a workflow reacted to it
    UNMAPPED = "unmapped"  # kept, but nothing knows this event type
    LATE = "late"  # kept as history: it arrived too long after it occurred to be applied
    FAILED = "failed"  # processing raised; see ``error``


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"  # running steps now
    WAITING = "waiting"  # asleep until ``wake_at``
    COMPLETED = "completed"  # ran off the end of its steps
    CONVERTED = "converted"  # reached one of the workflow's goals
    EXITED = "exited"  # left early (exit condition, exit step, operator)


class ActionStatus(StrEnum):
    PENDING = "pending"  # written, waiting for a worker (or for its next attempt)
    SENDING = "sending"  # a worker holds the lease and is calling the connector
    SENT = "sent"  # the connector accepted it; ``provider_id`` says where
    SKIPPED = "skipped"  # deliberately not performed; ``reason`` says why
    FAILED = "failed"  # gave up; ``error`` says why (the operators' dead-letter view)
    UNKNOWN = "unknown"  # a worker died mid-send and the connector cannot dedupe: check first


class ColumnsSetFast:
    """Table models set a column attribute through SQLAlchemy alone.

    SQLModel's ``__setattr__`` writes every assignment twice: SQLAlchemy's instrumented
    attribute (history, the unit of work) and then pydantic's, which stores the same value
    in the same ``__dict__`` and notes the field as set. Table models never validate on
    assignment, so this does the first and only notes the second: about 2 µs instead of 9
    for each of the hundreds of thousands of assignments a busy pipeline makes. Anything
    that is not a column (a relationship, pydantic's own attributes) goes the usual way.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _COLUMNS.get(type(self), ()):
            set_attribute(self, name, value)
            self.__pydantic_fields_set__.add(name)  # type: ignore[attr-defined]
        else:
            super().__setattr__(name, value)


_COLUMNS: dict[type, frozenset[str]] = {}
"""Each table model's column attributes, filled in below once the classes exist."""


# --- contacts ---------------------------------------------------------------------------


class ContactBase(SQLModel):
    email: str = Field(max_length=320, unique=True, index=True)
    timezone: str = Field(default="UTC", max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    external_ids: dict[str, str] = Field(default_factory=dict, sa_type=JSON)


class Contact(ColumnsSetFast, ContactBase, table=True):
    __tablename__ = "contacts"
    # Schedule triggers fan out per time zone: list the zones in use and walk one zone's
    # contacts in id order without scanning the others.
    __table_args__ = (Index("ix_contacts_timezone_id", "timezone", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    stage: str = Field(max_length=64, index=True)
    score: int = Field(default=0)
    subscription_status: str = Field(default=SubscriptionStatus.SUBSCRIBED, max_length=32)
    version: int = Field(default=1, description="Bumped on every change (optimistic checks).")
    stage_entered_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    hubspot_id: str | None = Field(
        default=None,
        max_length=64,
        index=True,
        description="The HubSpot object linked to the contact (also in external_ids), indexed: "
        "every HubSpot webhook event looks its contact up by it.",
    )


class ContactCreate(ContactBase):
    stage: str | None = None


class ContactRead(ContactBase):
    id: int
    stage: str
    score: int
    subscription_status: str
    version: int
    stage_entered_at: datetime
    created_at: datetime
    updated_at: datetime


# --- events -----------------------------------------------------------------------------


class Event(ColumnsSetFast, SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_contact_status", "contact_id", "status", "id"),
        Index("ix_events_due", "status", "lease_until"),
        # A contact's events of a type since a time (did_event, opened, clicked): without
        # it the read goes through every event the contact ever had.
        Index("ix_events_contact_type", "contact_id", "type", "occurred_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", ondelete="CASCADE")
    type: str = Field(max_length=128)
    properties: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    source: str = Field(default="api", max_length=64)
    idempotency_key: str = Field(max_length=255, unique=True)
    status: str = Field(default=EventStatus.PENDING, max_length=16)
    error: str | None = Field(default=None)
    lease_until: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="The sweeper re-dispatches after this."
    )
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # What recording this event replaced in its contact's attributes (engine/attribute_changes.py):
    # ``{"was": {key: old value}, "absent": [added keys]}``; NULL when it changed nothing.
    attributes_before: dict[str, Any] | None = Field(default=None, sa_type=JSON(none_as_null=True))


# --- stage transitions ------------------------------------------------------------------


class StageTransition(ColumnsSetFast, SQLModel, table=True):
    __tablename__ = "stage_transitions"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", ondelete="CASCADE", index=True)
    from_stage: str = Field(max_length=64)
    to_stage: str = Field(max_length=64)
    trigger: str = Field(max_length=64)
    event_id: int | None = Field(default=None, foreign_key="events.id", ondelete="SET NULL")
    at: datetime = Field(sa_type=UTCDateTime)


# --- workflow enrollments ---------------------------------------------------------------


class Enrollment(ColumnsSetFast, SQLModel, table=True):
    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("contact_id", "workflow", "entry", name="uq_enrollments_entry"),
        # The scheduler's due read; ``id`` in the key lets PostgreSQL answer it from the
        # index alone (claims live in ``enrollment_claims``, not on these pages).
        Index("ix_enrollments_due", "status", "wake_at", "id"),
        # A batch of contacts' live enrollments: led by the contact, so SQLite's planner
        # does not walk every live enrollment of the table through the due index instead.
        Index("ix_enrollments_contact_status", "contact_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", ondelete="CASCADE")
    workflow: str = Field(max_length=128)
    version: str = Field(max_length=32)
    entry: int = Field(default=1, description="1 for the first entry, 2 for a re-entry...")
    status: str = Field(default=EnrollmentStatus.ACTIVE, max_length=16)
    position: int = Field(default=0, description="Index of the next step to run.")
    wake_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    cause_event_id: int | None = Field(default=None, foreign_key="events.id", ondelete="SET NULL")
    started_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EnrollmentClaim(SQLModel, table=True):
    """A scheduler pass's claim on a due enrollment: its wake-up was handed to a job, and no
    other pass hands it out again before ``until`` (the lease; a lost job's wake-up is due
    again after it). A claim is for one wake-up: once the enrollment moves on (another
    ``wake_at``, or not waiting) it no longer hides it, and a pass deletes it once it lapses.

    Kept apart from ``enrollments`` so that claiming writes a few pages of this small table,
    not the page of every due row of a large one. No foreign key: its check would lock (and
    so write) the enrollment's row, which is what this table avoids; a claim on a deleted
    enrollment is harmless and goes when it lapses."""

    __tablename__ = "enrollment_claims"
    __table_args__ = (Index("ix_enrollment_claims_until", "until"),)

    enrollment_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    wake_at: datetime = Field(sa_type=UTCDateTime)
    until: datetime = Field(sa_type=UTCDateTime)


# --- actions ----------------------------------------------------------------------------


class Action(ColumnsSetFast, SQLModel, table=True):
    __tablename__ = "actions"
    __table_args__ = (
        Index("ix_actions_due", "status", "lease_until"),
        # A contact's emails by status (the guard rails' history, read for a batch of
        # contacts): led by the contact, so no planner, with statistics or without (SQLite
        # has none until ANALYZE), reads every sent action of the table for it.
        Index("ix_actions_contact_kind_status", "contact_id", "kind", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", ondelete="CASCADE")
    enrollment_id: int | None = Field(
        default=None, foreign_key="enrollments.id", ondelete="SET NULL", index=True
    )
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    idempotency_key: str = Field(max_length=255, unique=True)
    status: str = Field(default=ActionStatus.PENDING, max_length=16)
    reason: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSON, description="Why it was written, or why skipped."
    )
    attempts: int = Field(default=0)
    provider_id: str | None = Field(default=None, max_length=255)
    error: str | None = Field(default=None)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A row left ``sending`` (its worker stopped mid-send) keeps its expired ``lease_until``:
    # that is how the next claim knows the send may have been cut short. When the sweeper
    # hands such a row out again, its own lease goes here: not again before this instant.
    dispatch_lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# Set only by the executor, on an action written in the same flush as its new enrollment:
# the unit of work then inserts the enrollment first and fills in ``enrollment_id`` (see
# ``executor.action_key``). Never loaded: reading it raises.
Action.__mapper__.add_property(  # type: ignore[attr-defined]
    "enrollment", relationship(Enrollment, lazy="raise")
)


# --- workflow versions ------------------------------------------------------------------


class WorkflowVersion(ColumnsSetFast, SQLModel, table=True):
    """Every version of every workflow that ever ran, as its spec: in-flight enrollments
    finish on the version they started with, rebuilt from here after the code moved on."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow", "version", name="uq_workflow_versions"),)

    id: int | None = Field(default=None, primary_key=True)
    workflow: str = Field(max_length=128)
    version: str = Field(max_length=32)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)


# --- schedule triggers ------------------------------------------------------------------


class ScheduleSlotStatus(StrEnum):
    PENDING = "pending"  # due at ``slot_at``; contacts not all enrolled yet
    DONE = "done"  # every contact of the time zone was offered the workflow
    SKIPPED = "skipped"  # not fired: found too late, or a later slot superseded it


class ScheduleSlot(ColumnsSetFast, SQLModel, table=True):
    """One firing of a schedule trigger for the contacts of one time zone.

    The unique key makes a slot happen once however many schedulers plan it; the cursor
    (``after_contact_id``) advances in the same transaction as the enrollments it starts, so
    each contact is offered the workflow once per slot even if a worker dies mid-way.
    """

    __tablename__ = "schedule_slots"
    __table_args__ = (
        UniqueConstraint("workflow", "timezone", "slot_at", name="uq_schedule_slots"),
        Index("ix_schedule_slots_due", "status", "slot_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workflow: str = Field(max_length=128)
    timezone: str = Field(max_length=64)
    slot_at: datetime = Field(sa_type=UTCDateTime, description="The local slot time, in UTC.")
    status: str = Field(default=ScheduleSlotStatus.PENDING, max_length=16)
    after_contact_id: int = Field(default=0, description="Contacts up to this id are done.")
    contacts_seen: int = Field(default=0)
    errors: int = Field(default=0)
    last_error: str | None = Field(default=None)
    note: str = Field(default="", max_length=255, description="Why it was skipped.")
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PeriodicTick(ColumnsSetFast, SQLModel, table=True):
    """When a self-re-enqueuing periodic job (``scheduler_tick``) should next run, and which
    chain of it owns that run (engine/periodic.py): other copies stop."""

    __tablename__ = "periodic_ticks"

    name: str = Field(primary_key=True, max_length=64)
    token: str = Field(default="", max_length=32, description="The chain that owns next_at.")
    next_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


# --- suppressions -----------------------------------------------------------------------


class Suppression(ColumnsSetFast, SQLModel, table=True):
    """An address that must never receive marketing email (bounce, complaint, request)."""

    __tablename__ = "suppressions"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    reason: str = Field(max_length=64)
    source: str = Field(default="manual", max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ErasedAddress(SQLModel, table=True):
    """An address whose contact was erased, kept only as a digest (``engine/erasure.py``):
    when it comes back (an event, an import, a CRM sync), the new contact starts
    unsubscribed, as the person asked to be forgotten, not written to again, and a
    suppression it had is put back."""

    __tablename__ = "erased_addresses"

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(max_length=64, unique=True)
    erased_at: datetime = Field(sa_type=UTCDateTime)
    suppressed_for: str | None = Field(
        default=None, max_length=64, description="Why the address was suppressed, if it was."
    )


metadata = SQLModel.metadata


for _model in (
    Contact,
    Event,
    StageTransition,
    Enrollment,
    Action,
    WorkflowVersion,
    ScheduleSlot,
    PeriodicTick,
    Suppression,
):
    _COLUMNS[_model] = frozenset(_model.__table__.columns.keys())  # type: ignore[union-attr]

# The API keys' table lives beside the code that checks keys; importing it here puts it on
# ``metadata`` for everyone who reads the schema from this module (migrations, create_all).
import engine.api_keys  # noqa: E402, F401
