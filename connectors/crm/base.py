"""The CRM connector interface.

A CRM connector mirrors what the engine knows about a contact into a CRM: properties, the
lifecycle stage, tasks for a salesperson and notes on the timeline. Every method either
returns a result or raises a ``ConnectorError`` that says whether retrying can help
(``TransientConnectorError``, ``PermanentConnectorError``, ``DeliveryUnknownError``).

Contacts are addressed by email, the one identity both sides share; the CRM's own record
id comes back in a :class:`CRMRecord`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

#: A property value as callers give it; connectors turn it into the CRM's string form.
PropertyValue = str | int | float | bool | datetime | None


@dataclass(frozen=True)
class CRMRecord:
    """A contact as the CRM answered: its id, and whether this call created it."""

    id: str
    email: str = ""
    created: bool | None = None  # None when the CRM did not say
    properties: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LifecycleUpdate:
    """What :meth:`CRMConnector.set_lifecycle_stage` did.

    ``outcome`` is ``"set"`` (the CRM now holds ``value``), ``"unchanged"`` (it already did)
    or ``"skipped"`` (a backward move that was not allowed; ``reason`` says why).
    """

    email: str
    stage: str  # ours, as asked
    value: str  # the CRM's value ``stage`` maps to
    previous: str  # the CRM's value before the call ("" when unset or a new contact)
    outcome: Literal["set", "unchanged", "skipped"]
    contact_id: str = ""
    cleared_first: bool = False  # a backward move: the value was emptied, then set
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.outcome == "skipped"


class CRMConnector(ABC):
    name: str = "crm"
    #: Whether the CRM shows a task's or a note's body as HTML (HubSpot's ``hs_task_body``
    #: and ``hs_note_body``). The engine then HTML-escapes the contact's fields it prints
    #: into a body, so a name holding markup shows as text in the CRM, not as a link.
    html_bodies: bool = False

    @abstractmethod
    def upsert_contact(self, email: str, properties: Mapping[str, PropertyValue]) -> CRMRecord:
        """Create the contact with this email, or update its properties."""

    def batch_upsert_contacts(
        self, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
    ) -> list[CRMRecord]:
        """Upsert many contacts in as few calls as the CRM allows; one record per input, in
        input order (an email given twice is one contact, its properties merged in order).
        By default one ``upsert_contact`` per distinct email; a CRM with a batch endpoint
        overrides it (HubSpot's, which the engine's batched CRM updates use)."""
        merged: dict[str, dict[str, PropertyValue]] = {}
        for email, properties in contacts:
            merged.setdefault(email, {}).update(properties)
        records = {email: self.upsert_contact(email, props) for email, props in merged.items()}
        return [records[email] for email, _properties in contacts]

    @abstractmethod
    def set_lifecycle_stage(
        self, email: str, stage: str, *, allow_backward: bool = False
    ) -> LifecycleUpdate:
        """Mirror our lifecycle ``stage`` into the CRM. A move backwards is skipped unless
        ``allow_backward``."""

    @abstractmethod
    def create_task(
        self,
        email: str,
        subject: str,
        body: str,
        *,
        due: datetime | None = None,
        owner_id: str | None = None,
    ) -> str:
        """Create a task associated with the contact; return the task's id."""

    @abstractmethod
    def create_note(self, email: str, body: str) -> str:
        """Add a note to the contact's timeline; return the note's id."""

    def close(self) -> None:  # noqa: B027 - a hook, a no-op by default
        """Release connections; called once when the runtime shuts down."""
