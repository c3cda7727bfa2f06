"""HubSpot CRM v3 contacts, lifecycle stages, tasks and notes.

Contacts are upserted by email (``POST /crm/v3/objects/contacts/batch/upsert`` with
``idProperty: email``, 100 inputs a call); tasks and notes are created associated with the
contact, whose id is looked up by email. The connector composes three parts:

- :class:`~connectors.crm.hubspot_transport.HubSpotTransport`: one pooled ``httpx.Client``,
  paced by a :class:`~connectors.crm.rate_limit.HubSpotRateLimiter` (100 per rolling 10 s
  by default), with retries and HubSpot's errors mapped to ``ConnectorError`` at the
  boundary (429, 5xx, timeouts; its docstring lists the rules);
- connectors/crm/hubspot_wire.py: property values as HubSpot's strings, emails as its keys;
- connectors/crm/hubspot_batch.py: the contact batch endpoints (read, update, upsert).

``lifecyclestage`` only moves forward in HubSpot; to go back it must be emptied first. Our
stages map onto HubSpot's values (:data:`DEFAULT_LIFECYCLE_MAP`, overridable per stage; map
a stage to ``""`` not to mirror it) and a backward move is skipped, with the reason, unless
the caller passes ``allow_backward=True``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import httpx

from connectors.crm import hubspot_batch as batches
from connectors.crm import hubspot_wire as wire
from connectors.crm.base import CRMConnector, CRMRecord, LifecycleUpdate, PropertyValue
from connectors.crm.batch import CRMBatchResult
from connectors.crm.hubspot_batch import BATCH_LIMIT
from connectors.crm.hubspot_transport import DEFAULT_BASE_URL, Call, HubSpotTransport, json_body
from connectors.crm.hubspot_wire import LIFECYCLE_PROPERTY
from connectors.crm.rate_limit import HubSpotRateLimiter
from engine.clock import Clock, SystemClock
from engine.errors import ConfigurationError, DeliveryUnknownError, PermanentConnectorError

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_BASE_URL",
    "DEFAULT_LIFECYCLE_MAP",
    "HUBSPOT_LIFECYCLE_ORDER",
    "LIFECYCLE_PROPERTY",
    "NOTE_TO_CONTACT",
    "TASK_TO_CONTACT",
    "HubSpotConnector",
]

#: HubSpot's default ``lifecyclestage`` values, earliest first: the order "forward" follows.
HUBSPOT_LIFECYCLE_ORDER: tuple[str, ...] = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)

#: Our stages -> HubSpot ``lifecyclestage``. "decision" could as well be "opportunity" (a
#: deal exists); override it with ``lifecycle_map={"decision": "opportunity"}``.
DEFAULT_LIFECYCLE_MAP: Mapping[str, str] = {
    "awareness": "subscriber",
    "consideration": "marketingqualifiedlead",
    "decision": "salesqualifiedlead",
    "purchase": "customer",
    "onboarding": "customer",
    "engagement": "customer",
    "retention": "customer",
    "loyalty": "customer",
    "advocacy": "evangelist",
    "churned": "other",
}

# HubSpot-defined association type ids (v4 "default" associations).
TASK_TO_CONTACT = 204
NOTE_TO_CONTACT = 202


class HubSpotConnector(CRMConnector):
    name = "hubspot"
    html_bodies = True  # hs_task_body and hs_note_body are rich text; the subject is plain

    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.Client | None = None,
        timeout_s: float = 10.0,
        lifecycle_map: Mapping[str, str] | None = None,
        lifecycle_order: Sequence[str] = HUBSPOT_LIFECYCLE_ORDER,
        limiter: HubSpotRateLimiter | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not token or not token.strip():
            raise ConfigurationError("the HubSpot connector needs an access token")
        self.lifecycle_order = tuple(lifecycle_order)
        self.lifecycle_map = {**DEFAULT_LIFECYCLE_MAP, **(lifecycle_map or {})}
        problems = [
            f"{stage!r} -> {value!r}"
            for stage, value in self.lifecycle_map.items()
            if value and value not in self.lifecycle_order
        ]
        if problems:
            raise ConfigurationError(
                "HubSpot lifecycle map uses values not in the lifecycle order "
                f"{list(self.lifecycle_order)}: {', '.join(problems)}"
            )
        self.clock: Clock = clock or SystemClock()
        self.transport = HubSpotTransport(
            token=token,
            base_url=base_url,
            client=client,
            timeout_s=timeout_s,
            limiter=limiter,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            jitter=jitter,
        )

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    @property
    def client(self) -> httpx.Client:
        return self.transport.client

    @property
    def limiter(self) -> HubSpotRateLimiter:
        return self.transport.limiter

    # -- contacts ------------------------------------------------------------------------------

    def upsert_contact(self, email: str, properties: Mapping[str, PropertyValue]) -> CRMRecord:
        return self.batch_upsert_contacts([(email, properties)])[0]

    def batch_upsert_contacts(
        self, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
    ) -> list[CRMRecord]:
        return batches.upsert_contacts(self.transport, contacts)

    def find_contact(self, email: str, *properties: str) -> CRMRecord | None:
        """The contact with this email and the ``properties`` asked for, or None."""
        address = wire.normalise_email(email)
        params = {"idProperty": "email"}
        if properties:
            params["properties"] = ",".join(properties)
        response = self.transport.request(
            Call(
                "GET",
                f"/crm/v3/objects/contacts/{wire.quote(address)}",
                what=f"look up contact {address}",
                idempotent=True,
                params=params,
            ),
            not_found_ok=True,
        )
        if response is None:
            return None
        return wire.record(json_body(response), address)

    def _contact_id(self, email: str) -> str:
        record = self.find_contact(email)
        if record is None:
            raise PermanentConnectorError(
                f"hubspot has no contact with email {wire.normalise_email(email)!r}; "
                "upsert the contact before creating tasks or notes for it"
            )
        return record.id

    # -- batches with an outcome per input (connectors/crm/batch.py) -------------------------

    def batch_read_contacts(
        self,
        ids: Sequence[str],
        properties: Sequence[str] = (),
        *,
        id_property: str | None = "email",
    ) -> CRMBatchResult:
        """Read many contacts with the ``properties`` asked for (``POST .../batch/read``,
        100 a call), by email (``id_property="email"``) or by HubSpot id (``None``).
        Contacts HubSpot does not know are in ``missing``."""
        return batches.read_contacts(self.transport, ids, properties, id_property=id_property)

    def batch_update_contacts(
        self,
        updates: Sequence[tuple[str, Mapping[str, PropertyValue]]],
        *,
        id_property: str | None = None,
    ) -> CRMBatchResult:
        """Set properties of existing contacts (``POST .../batch/update``, 100 a call), by
        HubSpot id (default) or by email; a contact named twice gets its properties merged,
        later values winning. A contact HubSpot does not know fails alone."""
        return batches.write_contacts(self.transport, "update", updates, id_property=id_property)

    def batch_upsert_contacts_each(
        self, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
    ) -> CRMBatchResult:
        """:meth:`batch_upsert_contacts` with an outcome per contact instead of one error
        for all: a contact HubSpot refuses fails alone, keyed by its email."""
        return batches.write_contacts(self.transport, "upsert", contacts, id_property="email")

    def property_strings(self, properties: Mapping[str, PropertyValue]) -> dict[str, str]:
        """``properties`` as HubSpot stores them (strings), to compare with what it holds."""
        return wire.properties(properties)

    # -- lifecycle stage -----------------------------------------------------------------------

    def lifecycle_value(self, stage: str) -> str:
        """The HubSpot ``lifecyclestage`` for our ``stage`` ("" = not mirrored)."""
        if stage in self.lifecycle_map:
            return self.lifecycle_map[stage]
        if stage in self.lifecycle_order:  # already a HubSpot value
            return stage
        raise PermanentConnectorError(
            f"no HubSpot lifecycle stage for {stage!r}: add it to the connector's lifecycle_map"
        )

    def set_lifecycle_stage(
        self, email: str, stage: str, *, allow_backward: bool = False
    ) -> LifecycleUpdate:
        address = wire.normalise_email(email)
        value = self.lifecycle_value(stage)
        if not value:
            return LifecycleUpdate(
                email=address,
                stage=stage,
                value="",
                previous="",
                outcome="skipped",
                reason=f"stage {stage!r} is not mirrored to HubSpot (mapped to '')",
            )
        current = self.find_contact(address, LIFECYCLE_PROPERTY)
        if current is None:
            created = self.upsert_contact(address, {LIFECYCLE_PROPERTY: value})
            return LifecycleUpdate(
                email=address,
                stage=stage,
                value=value,
                previous="",
                outcome="set",
                contact_id=created.id,
            )
        previous = str(current.properties.get(LIFECYCLE_PROPERTY) or "")
        result = LifecycleUpdate(
            email=address,
            stage=stage,
            value=value,
            previous=previous,
            outcome="set",
            contact_id=current.id,
        )
        if previous == value:
            return replace(result, outcome="unchanged")
        backward = self.backward_reason(previous, value)
        if backward and not allow_backward:
            return replace(result, outcome="skipped", reason=backward)
        if backward:
            # HubSpot refuses to move back; emptying the property first is its documented way.
            # If the second call fails the stage is left empty, and a retry sets it forwards.
            self._patch_contact(current.id, {LIFECYCLE_PROPERTY: ""})
        self._patch_contact(current.id, {LIFECYCLE_PROPERTY: value})
        return replace(result, cleared_first=bool(backward))

    def backward_reason(self, previous: str, value: str) -> str:
        """Why ``previous -> value`` is not a forward move, or "" if it is one."""
        if not previous:
            return ""
        if previous not in self.lifecycle_order:
            return (
                f"current lifecyclestage {previous!r} is not in the known order, so moving "
                f"to {value!r} may be backward; pass allow_backward=True to clear it first"
            )
        if self.lifecycle_order.index(value) < self.lifecycle_order.index(previous):
            return (
                f"{previous!r} -> {value!r} is a backward move and HubSpot only moves "
                "lifecyclestage forward; pass allow_backward=True to clear it first"
            )
        return ""

    def _patch_contact(self, contact_id: str, properties: Mapping[str, str]) -> None:
        self.transport.send(
            Call(
                "PATCH",
                f"/crm/v3/objects/contacts/{wire.quote(contact_id)}",
                what=f"update contact {contact_id}",
                idempotent=True,
                json={"properties": dict(properties)},
            )
        )

    # -- tasks and notes -----------------------------------------------------------------------

    def create_task(
        self,
        email: str,
        subject: str,
        body: str,
        *,
        due: datetime | None = None,
        owner_id: str | None = None,
    ) -> str:
        contact_id = self._contact_id(email)
        properties = {
            "hs_timestamp": wire.epoch_ms(due or self.clock.now()),
            "hs_task_subject": subject,
            "hs_task_body": body,
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO",
        }
        if owner_id:
            properties["hubspot_owner_id"] = str(owner_id)
        return self._create_engagement("tasks", properties, contact_id, TASK_TO_CONTACT)

    def create_note(self, email: str, body: str) -> str:
        contact_id = self._contact_id(email)
        properties = {"hs_timestamp": wire.epoch_ms(self.clock.now()), "hs_note_body": body}
        return self._create_engagement("notes", properties, contact_id, NOTE_TO_CONTACT)

    def _create_engagement(
        self, kind: str, properties: Mapping[str, str], contact_id: str, association_type: int
    ) -> str:
        association = {
            "to": {"id": contact_id},
            "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": association_type}
            ],
        }
        response = self.transport.send(
            Call(
                "POST",
                f"/crm/v3/objects/{kind}",
                what=f"create a {kind[:-1]} for contact {contact_id}",
                idempotent=False,
                json={"properties": dict(properties), "associations": [association]},
            )
        )
        created_id = json_body(response).get("id")
        if not created_id:
            raise DeliveryUnknownError(f"hubspot created a {kind[:-1]} but returned no id")
        return str(created_id)

    def close(self) -> None:
        self.transport.close()
