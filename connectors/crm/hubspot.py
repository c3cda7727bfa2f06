"""HubSpot CRM v3 through one pooled ``httpx.Client``.

Contacts are upserted by email (``POST /crm/v3/objects/contacts/batch/upsert`` with
``idProperty: email``, 100 inputs a call); tasks and notes are created associated with the
contact, whose id is looked up by email. Requests are paced by a
:class:`~connectors.crm.rate_limit.HubSpotRateLimiter` (100 per rolling 10 s by default).

``lifecyclestage`` only moves forward in HubSpot; to go back it must be emptied first. Our
stages map onto HubSpot's values (:data:`DEFAULT_LIFECYCLE_MAP`, overridable per stage; map
a stage to ``""`` not to mirror it) and a backward move is skipped, with the reason, unless
the caller passes ``allow_backward=True``.

Errors are mapped here, at the boundary:

- 429: wait ``Retry-After`` if given, else the ``X-HubSpot-RateLimit-Interval-Milliseconds``
  window, else an exponential backoff; plus jitter; up to ``max_retries`` times, holding
  back every thread sharing the limiter; then ``TransientConnectorError(retry_after=...)``.
  A 429 for the DAILY policy is not retried here (it lasts until midnight).
- connection refused / connect timeout: the request never left, retried likewise, then
  ``TransientConnectorError``.
- 5xx, or a timeout after the request was sent: for idempotent calls (reads, upserts,
  property updates) retried likewise, then ``TransientConnectorError``; for creating a task
  or a note (HubSpot has no idempotency key) 5xx is ``TransientConnectorError`` at once and
  a timeout is ``DeliveryUnknownError``: it may exist already.
- other 4xx: ``PermanentConnectorError`` with HubSpot's ``message``, category and
  correlation id.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from connectors.crm.base import CRMConnector, CRMRecord, LifecycleUpdate, PropertyValue
from connectors.crm.batch import SPLITTABLE_STATUSES, CRMBatchResult, attribute
from connectors.crm.rate_limit import HubSpotRateLimiter
from engine.clock import Clock, SystemClock
from engine.errors import (
    ConfigurationError,
    ConnectorError,
    DeliveryUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

DEFAULT_BASE_URL = "https://api.hubapi.com"
BATCH_LIMIT = 100
LIFECYCLE_PROPERTY = "lifecyclestage"

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

_DAILY_RETRY_AFTER = timedelta(hours=1)  # a guess: the daily quota resets at midnight


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    what: str  # for messages: "upsert 3 contacts", "create a task"...
    idempotent: bool
    json: Any = None
    params: Mapping[str, str] | None = None


class HubSpotConnector(CRMConnector):
    name = "hubspot"

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
        self.base_url = base_url.rstrip("/")
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
        self.limiter = limiter or HubSpotRateLimiter()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock: Clock = clock or SystemClock()
        self._jitter = jitter
        self._headers = {"Authorization": f"Bearer {token.strip()}", "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout_s)
        self._owns_client = client is None
        # One pooled client per connector: a client per request costs a TLS handshake each.
        self.client = client or httpx.Client(timeout=self._timeout)

    # -- contacts ------------------------------------------------------------------------------

    def upsert_contact(self, email: str, properties: Mapping[str, PropertyValue]) -> CRMRecord:
        return self.batch_upsert_contacts([(email, properties)])[0]

    def batch_upsert_contacts(
        self, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
    ) -> list[CRMRecord]:
        merged: dict[str, dict[str, str]] = {}
        order: list[str] = []
        for raw_email, properties in contacts:
            address = _normalise_email(raw_email)
            order.append(address)
            # HubSpot refuses a batch naming one id twice: merge, later values winning.
            merged.setdefault(address, {}).update(_properties(properties))
        records: dict[str, CRMRecord] = {}
        addresses = list(merged)
        for start in range(0, len(addresses), BATCH_LIMIT):
            chunk = addresses[start : start + BATCH_LIMIT]
            records.update(self._upsert_chunk(chunk, merged))
        return [records[address] for address in order]

    def _upsert_chunk(
        self, chunk: list[str], properties: Mapping[str, Mapping[str, str]]
    ) -> dict[str, CRMRecord]:
        inputs = [
            {"id": address, "idProperty": "email", "properties": dict(properties[address])}
            for address in chunk
        ]
        response = self._send(
            _Call(
                "POST",
                "/crm/v3/objects/contacts/batch/upsert",
                what=f"upsert {len(chunk)} contact(s)",
                idempotent=True,
                json={"inputs": inputs},
            )
        )
        body = _json(response)
        errors = body.get("errors") or []
        if response.status_code == 207 or errors:
            raise PermanentConnectorError(
                f"hubspot upserted {len(body.get('results') or [])} of {len(chunk)} contacts; "
                f"errors: {_describe_batch_errors(errors)}"
            )
        results = [r for r in body.get("results") or [] if isinstance(r, dict)]
        by_email: dict[str, CRMRecord] = {}
        for result in results:
            props = result.get("properties") or {}
            address = str(props.get("email") or "").lower()
            by_email[address] = _record(result, address)
        if all(address in by_email for address in chunk):
            return {address: by_email[address] for address in chunk}
        # UNCONFIRMED that every result echoes the email; HubSpot answers in input order.
        if len(results) == len(chunk):
            return {a: _record(r, a) for a, r in zip(chunk, results, strict=True)}
        raise PermanentConnectorError(
            f"hubspot answered {len(results)} result(s) for {len(chunk)} upserted contacts"
        )

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
        keys, result = self._batch_keys(ids, id_property)
        names = sorted({*properties, "email", LIFECYCLE_PROPERTY})

        def body(chunk: Sequence[str]) -> dict[str, Any]:
            request: dict[str, Any] = {
                "inputs": [{"id": key} for key in chunk],
                "properties": names,
            }
            if id_property:
                request["idProperty"] = id_property
            return request

        result.merge(
            self._batch_each(
                "read", keys, body, by_email=id_property == "email", missing_is_error=False
            )
        )
        return result

    def batch_update_contacts(
        self,
        updates: Sequence[tuple[str, Mapping[str, PropertyValue]]],
        *,
        id_property: str | None = None,
    ) -> CRMBatchResult:
        """Set properties of existing contacts (``POST .../batch/update``, 100 a call), by
        HubSpot id (default) or by email; a contact named twice gets its properties merged,
        later values winning. A contact HubSpot does not know fails alone."""
        return self._batch_write("update", updates, id_property=id_property)

    def batch_upsert_contacts_each(
        self, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
    ) -> CRMBatchResult:
        """:meth:`batch_upsert_contacts` with an outcome per contact instead of one error
        for all: a contact HubSpot refuses fails alone, keyed by its email."""
        return self._batch_write("upsert", contacts, id_property="email")

    def property_strings(self, properties: Mapping[str, PropertyValue]) -> dict[str, str]:
        """``properties`` as HubSpot stores them (strings), to compare with what it holds."""
        return _properties(properties)

    def _batch_write(
        self,
        verb: str,
        items: Sequence[tuple[str, Mapping[str, PropertyValue]]],
        *,
        id_property: str | None,
    ) -> CRMBatchResult:
        keys, result = self._batch_keys([key for key, _ in items], id_property)
        merged: dict[str, dict[str, str]] = {key: {} for key in keys}
        for raw, properties in items:
            key = _batch_key(raw, id_property)
            if key in merged:  # HubSpot refuses a batch naming one id twice
                merged[key].update(_properties(properties))

        def body(chunk: Sequence[str]) -> dict[str, Any]:
            inputs = []
            for key in chunk:
                item: dict[str, Any] = {"id": key, "properties": merged[key]}
                if id_property:
                    item["idProperty"] = id_property
                inputs.append(item)
            return {"inputs": inputs}

        result.merge(
            self._batch_each(
                verb, keys, body, by_email=id_property == "email", missing_is_error=True
            )
        )
        return result

    def _batch_keys(
        self, ids: Sequence[str], id_property: str | None
    ) -> tuple[list[str], CRMBatchResult]:
        """Distinct keys in input order; an input that is not a key at all fails alone."""
        result = CRMBatchResult()
        keys: list[str] = []
        for raw in ids:
            try:
                key = _batch_key(raw, id_property)
            except PermanentConnectorError as exc:
                result.errors[str(raw)] = exc
                key = str(raw)
            else:
                keys.append(key)
            result.keys.append(key)
        keys = list(dict.fromkeys(keys))
        result.keys = list(dict.fromkeys(result.keys))
        return keys, result

    def _batch_each(
        self,
        verb: str,
        keys: list[str],
        body: Callable[[Sequence[str]], Any],
        *,
        by_email: bool,
        missing_is_error: bool,
    ) -> CRMBatchResult:
        result = CRMBatchResult()
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = keys[start : start + BATCH_LIMIT]
            result.merge(self._batch_call(verb, chunk, body, by_email, missing_is_error))
        return result

    def _batch_call(
        self,
        verb: str,
        chunk: list[str],
        body: Callable[[Sequence[str]], Any],
        by_email: bool,
        missing_is_error: bool,
    ) -> CRMBatchResult:
        out = CRMBatchResult(requests=1)
        call = _Call(
            "POST",
            f"/crm/v3/objects/contacts/batch/{verb}",
            what=f"{verb} {len(chunk)} contact(s)",
            idempotent=True,  # reads, and writes that set values: repeating one is harmless
            json=body(chunk),
        )
        try:
            response = self._request(call, not_found_ok=False, answer_statuses=SPLITTABLE_STATUSES)
        except ConnectorError as exc:  # for every input of the call (transient: retried)
            out.errors.update(dict.fromkeys(chunk, exc))
            return out
        assert response is not None  # a 404 raised: not_found_ok is False
        if response.status_code in SPLITTABLE_STATUSES:
            if len(chunk) == 1:
                out.errors[chunk[0]] = _refused(call, response)
                return out
            # HubSpot applied nothing; usually one input is at fault: find it by halves.
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                out.merge(self._batch_call(verb, part, body, by_email, missing_is_error))
            return out
        results, errors = attribute(
            _json(response),
            chunk,
            key_of="email" if by_email else "id",
            what=verb,
            missing_is_error=missing_is_error,
        )
        for key, found in results.items():
            address = key if by_email else str((found.get("properties") or {}).get("email") or "")
            out.records[key] = _record(found, address.lower())
        out.errors.update(errors)
        return out

    def find_contact(self, email: str, *properties: str) -> CRMRecord | None:
        """The contact with this email and the ``properties`` asked for, or None."""
        address = _normalise_email(email)
        params = {"idProperty": "email"}
        if properties:
            params["properties"] = ",".join(properties)
        response = self._request(
            _Call(
                "GET",
                f"/crm/v3/objects/contacts/{_quote(address)}",
                what=f"look up contact {address}",
                idempotent=True,
                params=params,
            ),
            not_found_ok=True,
        )
        if response is None:
            return None
        return _record(_json(response), address)

    def _contact_id(self, email: str) -> str:
        record = self.find_contact(email)
        if record is None:
            raise PermanentConnectorError(
                f"hubspot has no contact with email {_normalise_email(email)!r}; "
                "upsert the contact before creating tasks or notes for it"
            )
        return record.id

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
        address = _normalise_email(email)
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
        self._send(
            _Call(
                "PATCH",
                f"/crm/v3/objects/contacts/{_quote(contact_id)}",
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
            "hs_timestamp": _epoch_ms(due or self.clock.now()),
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
        properties = {"hs_timestamp": _epoch_ms(self.clock.now()), "hs_note_body": body}
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
        response = self._send(
            _Call(
                "POST",
                f"/crm/v3/objects/{kind}",
                what=f"create a {kind[:-1]} for contact {contact_id}",
                idempotent=False,
                json={"properties": dict(properties), "associations": [association]},
            )
        )
        created_id = _json(response).get("id")
        if not created_id:
            raise DeliveryUnknownError(f"hubspot created a {kind[:-1]} but returned no id")
        return str(created_id)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- transport -----------------------------------------------------------------------------

    def _send(self, call: _Call) -> httpx.Response:
        """Send ``call``, retrying what may be retried; a 2xx answer or an error."""
        response = self._request(call, not_found_ok=False)
        if response is None:  # not reached: a 404 raises unless not_found_ok
            raise PermanentConnectorError(f"hubspot found nothing to {call.what}")
        return response

    def _request(
        self,
        call: _Call,
        *,
        not_found_ok: bool,
        answer_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response | None:
        """A 2xx answer (or one whose status is in ``answer_statuses``), None for a 404 when
        ``not_found_ok``, or a ``ConnectorError``."""
        url = self.base_url + call.path
        attempt = 0
        while True:
            self.limiter.acquire()
            retry = attempt < self.max_retries
            attempt += 1
            try:
                response = self.client.request(
                    call.method,
                    url,
                    json=call.json,
                    params=call.params,
                    headers=self._headers,
                    timeout=self._timeout,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left this process: always safe to try again.
                if retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot unreachable ({call.what}): {exc!r}"
                ) from exc
            except httpx.HTTPError as exc:  # read/write timeout, dropped connection
                if not call.idempotent:
                    raise DeliveryUnknownError(
                        f"hubspot did not answer after the request was sent ({call.what}): "
                        f"{exc!r}; it may have been done, check before trying again"
                    ) from exc
                if retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot did not answer ({call.what}): {exc!r}"
                ) from exc
            self.limiter.observe(response.headers)
            status = response.status_code
            if 200 <= status < 300:
                return response
            if status == 404 and not_found_ok:
                return None
            if status == 429:
                body = _json(response)
                wait_s = _rate_limit_wait_s(response.headers)
                if body.get("policyName") == "DAILY":
                    raise TransientConnectorError(
                        f"hubspot daily API limit reached ({call.what}): {_describe(response)}",
                        retry_after=timedelta(seconds=wait_s) if wait_s else _DAILY_RETRY_AFTER,
                    )
                wait_s = wait_s if wait_s is not None else self._backoff(attempt, jitter=False)
                if retry:
                    # Every thread sharing the limiter waits: they would all get a 429 too.
                    self.limiter.pause(wait_s * (1 + 0.1 * self._jitter()))
                    continue
                raise TransientConnectorError(
                    f"hubspot rate limit (429) after {attempt} attempt(s) ({call.what}): "
                    f"{_describe(response)}",
                    retry_after=timedelta(seconds=wait_s),
                )
            if status >= 500:
                if call.idempotent and retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot server error {status} ({call.what}): {_describe(response)}"
                )
            if status in answer_statuses:
                return response
            raise _refused(call, response)

    def _backoff(self, attempt: int, *, jitter: bool = True) -> float:
        """Exponential, capped, with "equal jitter": half fixed, half random."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return delay / 2 + delay / 2 * self._jitter() if jitter else delay


# -- helpers -----------------------------------------------------------------------------------


def _refused(call: _Call, response: httpx.Response) -> PermanentConnectorError:
    return PermanentConnectorError(
        f"hubspot refused to {call.what} ({response.status_code}): {_describe(response)}"
    )


def _batch_key(raw: str, id_property: str | None) -> str:
    if id_property == "email":
        return _normalise_email(raw)
    key = str(raw).strip()
    if not key:
        raise PermanentConnectorError("an empty HubSpot id")
    return key


def _normalise_email(value: str) -> str:
    address = (value or "").strip().lower()
    if "@" not in address or address.startswith("@") or address.endswith("@"):
        raise PermanentConnectorError(f"not an email address: {value!r}")
    return address


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="@")


def _properties(properties: Mapping[str, PropertyValue]) -> dict[str, str]:
    return {str(name): _property_value(name, value) for name, value in properties.items()}


def _property_value(name: str, value: PropertyValue) -> str:
    """HubSpot takes property values as strings: booleans as true/false, datetimes as epoch
    milliseconds, dates as YYYY-MM-DD, None as "" (which clears the property)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _epoch_ms(value, name=name)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _epoch_ms(moment: datetime, *, name: str = "hs_timestamp") -> str:
    if moment.tzinfo is None:
        raise PermanentConnectorError(f"{name}: a naive datetime is ambiguous; give a time zone")
    return str(int(moment.astimezone(UTC).timestamp() * 1000))


def _record(result: Mapping[str, Any], address: str) -> CRMRecord:
    created = result.get("new")
    return CRMRecord(
        id=str(result.get("id", "")),
        email=address,
        created=created if isinstance(created, bool) else None,
        properties=dict(result.get("properties") or {}),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(response: httpx.Response) -> str:
    """HubSpot's error body, ``{"status":"error","message",..,"category","correlationId"}``."""
    body = _json(response)
    message = body.get("message")
    if not message:
        return response.text[:500] or "(no body)"
    parts = [str(message)]
    kind = body.get("category") or body.get("errorType")
    if kind:
        parts.append(f"category {kind}")
    if body.get("correlationId"):
        parts.append(f"correlationId {body['correlationId']}")
    return "; ".join(parts)


def _describe_batch_errors(errors: Sequence[Any]) -> str:
    messages = [
        str(error.get("message") or error) if isinstance(error, dict) else str(error)
        for error in errors[:5]
    ]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(messages) + more


def _rate_limit_wait_s(headers: httpx.Headers) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or an HTTP date), else the
    rolling window's length, else None."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        with contextlib.suppress(ValueError):
            return max(0.0, float(retry_after))
        with contextlib.suppress(TypeError, ValueError):
            moment = email.utils.parsedate_to_datetime(retry_after)
            return max(0.0, moment.timestamp() - time.time())
    interval_ms = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    if interval_ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(interval_ms) / 1000)
    return None
