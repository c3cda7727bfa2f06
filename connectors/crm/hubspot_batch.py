"""HubSpot's contact batch endpoints (``POST /crm/v3/objects/contacts/batch/{verb}``).

Each call takes at most :data:`BATCH_LIMIT` inputs, and HubSpot refuses a batch naming one
contact twice, so inputs are merged per contact and sent in chunks. Two shapes of result:

- :func:`upsert_contacts`: one record per input, or one ``PermanentConnectorError`` for the
  whole call if HubSpot refused any input (the connector's ``batch_upsert_contacts``);
- :func:`read_contacts` and :func:`write_contacts`: a
  :class:`~connectors.crm.batch.CRMBatchResult` with an outcome per input, a batch refused
  whole being split down to the input at fault (see connectors/crm/batch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.crm import hubspot_wire as wire
from connectors.crm.base import CRMRecord, PropertyValue
from connectors.crm.batch import SPLITTABLE_STATUSES, CRMBatchResult, attribute
from connectors.crm.hubspot_transport import Call, HubSpotTransport, json_body, refused
from engine.errors import ConnectorError, PermanentConnectorError

BATCH_LIMIT = 100

Body = Callable[[Sequence[str]], Any]


def upsert_contacts(
    transport: HubSpotTransport, contacts: Sequence[tuple[str, Mapping[str, PropertyValue]]]
) -> list[CRMRecord]:
    """Upsert by email; one record per input, in input order (an email given twice is one
    contact, its properties merged, later values winning)."""
    merged: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for raw_email, values in contacts:
        address = wire.normalise_email(raw_email)
        order.append(address)
        # HubSpot refuses a batch naming one id twice: merge, later values winning.
        merged.setdefault(address, {}).update(wire.properties(values))
    records: dict[str, CRMRecord] = {}
    addresses = list(merged)
    for start in range(0, len(addresses), BATCH_LIMIT):
        chunk = addresses[start : start + BATCH_LIMIT]
        records.update(_upsert_chunk(transport, chunk, merged))
    return [records[address] for address in order]


def _upsert_chunk(
    transport: HubSpotTransport, chunk: list[str], properties: Mapping[str, Mapping[str, str]]
) -> dict[str, CRMRecord]:
    inputs = [
        {"id": address, "idProperty": "email", "properties": dict(properties[address])}
        for address in chunk
    ]
    response = transport.send(
        Call(
            "POST",
            "/crm/v3/objects/contacts/batch/upsert",
            what=f"upsert {len(chunk)} contact(s)",
            idempotent=True,
            json={"inputs": inputs},
        )
    )
    body = json_body(response)
    errors = body.get("errors") or []
    if response.status_code == 207 or errors:
        raise PermanentConnectorError(
            f"hubspot upserted {len(body.get('results') or [])} of {len(chunk)} contacts; "
            f"errors: {wire.describe_batch_errors(errors)}"
        )
    results = [r for r in body.get("results") or [] if isinstance(r, dict)]
    by_email: dict[str, CRMRecord] = {}
    for result in results:
        props = result.get("properties") or {}
        address = str(props.get("email") or "").lower()
        by_email[address] = wire.record(result, address)
    if all(address in by_email for address in chunk):
        return {address: by_email[address] for address in chunk}
    # UNCONFIRMED that every result echoes the email; HubSpot answers in input order.
    if len(results) == len(chunk):
        return {a: wire.record(r, a) for a, r in zip(chunk, results, strict=True)}
    raise PermanentConnectorError(
        f"hubspot answered {len(results)} result(s) for {len(chunk)} upserted contacts"
    )


def read_contacts(
    transport: HubSpotTransport,
    ids: Sequence[str],
    properties: Sequence[str],
    *,
    id_property: str | None,
) -> CRMBatchResult:
    """``batch/read`` with ``properties`` plus email and lifecyclestage; unknown contacts
    are in the result's ``missing``."""
    keys, result = _keys(ids, id_property)
    names = sorted({*properties, "email", wire.LIFECYCLE_PROPERTY})

    def body(chunk: Sequence[str]) -> dict[str, Any]:
        request: dict[str, Any] = {"inputs": [{"id": key} for key in chunk], "properties": names}
        if id_property:
            request["idProperty"] = id_property
        return request

    result.merge(
        _each(
            transport, "read", keys, body, by_email=id_property == "email", missing_is_error=False
        )
    )
    return result


def write_contacts(
    transport: HubSpotTransport,
    verb: str,
    items: Sequence[tuple[str, Mapping[str, PropertyValue]]],
    *,
    id_property: str | None,
) -> CRMBatchResult:
    """``batch/update`` or ``batch/upsert``; a contact named twice gets its properties
    merged, later values winning; a contact HubSpot refuses or does not know fails alone."""
    keys, result = _keys([key for key, _ in items], id_property)
    merged: dict[str, dict[str, str]] = {key: {} for key in keys}
    for raw, values in items:
        key = wire.batch_key(raw, id_property)
        if key in merged:  # HubSpot refuses a batch naming one id twice
            merged[key].update(wire.properties(values))

    def body(chunk: Sequence[str]) -> dict[str, Any]:
        inputs = []
        for key in chunk:
            item: dict[str, Any] = {"id": key, "properties": merged[key]}
            if id_property:
                item["idProperty"] = id_property
            inputs.append(item)
        return {"inputs": inputs}

    result.merge(
        _each(transport, verb, keys, body, by_email=id_property == "email", missing_is_error=True)
    )
    return result


def _keys(ids: Sequence[str], id_property: str | None) -> tuple[list[str], CRMBatchResult]:
    """Distinct keys in input order; an input that is not a key at all fails alone."""
    result = CRMBatchResult()
    keys: list[str] = []
    for raw in ids:
        try:
            key = wire.batch_key(raw, id_property)
        except PermanentConnectorError as exc:
            result.errors[str(raw)] = exc
            key = str(raw)
        else:
            keys.append(key)
        result.keys.append(key)
    keys = list(dict.fromkeys(keys))
    result.keys = list(dict.fromkeys(result.keys))
    return keys, result


def _each(
    transport: HubSpotTransport,
    verb: str,
    keys: list[str],
    body: Body,
    *,
    by_email: bool,
    missing_is_error: bool,
) -> CRMBatchResult:
    result = CRMBatchResult()
    for start in range(0, len(keys), BATCH_LIMIT):
        chunk = keys[start : start + BATCH_LIMIT]
        result.merge(_call(transport, verb, chunk, body, by_email, missing_is_error))
    return result


def _call(
    transport: HubSpotTransport,
    verb: str,
    chunk: list[str],
    body: Body,
    by_email: bool,
    missing_is_error: bool,
) -> CRMBatchResult:
    out = CRMBatchResult(requests=1)
    call = Call(
        "POST",
        f"/crm/v3/objects/contacts/batch/{verb}",
        what=f"{verb} {len(chunk)} contact(s)",
        idempotent=True,  # reads, and writes that set values: repeating one is harmless
        json=body(chunk),
    )
    try:
        response = transport.request(call, not_found_ok=False, answer_statuses=SPLITTABLE_STATUSES)
    except ConnectorError as exc:  # for every input of the call (transient: retried)
        out.errors.update(dict.fromkeys(chunk, exc))
        return out
    assert response is not None  # a 404 raised: not_found_ok is False
    if response.status_code in SPLITTABLE_STATUSES:
        if len(chunk) == 1:
            out.errors[chunk[0]] = refused(call, response)
            return out
        # HubSpot applied nothing; usually one input is at fault: find it by halves.
        half = len(chunk) // 2
        for part in (chunk[:half], chunk[half:]):
            out.merge(_call(transport, verb, part, body, by_email, missing_is_error))
        return out
    results, errors = attribute(
        json_body(response),
        chunk,
        key_of="email" if by_email else "id",
        what=verb,
        missing_is_error=missing_is_error,
    )
    for key, found in results.items():
        address = key if by_email else str((found.get("properties") or {}).get("email") or "")
        out.records[key] = wire.record(found, address.lower())
    out.errors.update(errors)
    return out
