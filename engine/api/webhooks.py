"""Inbound webhooks: ``POST /v1/webhooks/sendgrid``, ``/hubspot`` and ``/{source}``.

Webhooks authenticate by their signature alone (no API key), checked over the raw body
exactly as received, before anything is parsed. Then, in order, every request goes through:

    /v1/webhooks/<name> for an undeclared source    404
    no key or secret configured for the endpoint    503  (the operator's fault, logged; the
                                                          sender retries until it is fixed)
    body over JOURNEYLINE_API_MAX_BODY_BYTES        413  (BodyLimit, as the body is read)
    no signature or timestamp header                401
    malformed, wrong or stale signature             403  (stale: outside the tolerance window)
    body nested too deeply to parse                 400  (as /v1/events answers)
    body not JSON (SendGrid, HubSpot: not an array)  422  naming every field at fault
    a generic source's event missing a field        422  naming every field at fault
    otherwise                                       200  with what was recorded

A generic source's request is recorded whole or not at all. From SendGrid and HubSpot, an
event that cannot be used (not an object, a field missing, an address that is not one) is
rejected alone: named in the answer's ``rejected`` and logged as a warning, while the
batch's good events are recorded. Refusing the whole batch would have the provider retry it
unchanged, refused again, for a day, and then drop it, good events and all.

Deliveries are deduplicated (SendGrid on ``sg_event_id``, HubSpot on its event identity,
generic sources on the declared key), so a retried or replayed request is answered 200 and
records nothing new. SendGrid and HubSpot
events are then committed one by one (``record_sendgrid_events``, ``record_hubspot_events``):
if the process dies midway, no answer goes out, the provider retries, and the retry records
only what is missing. A generic source's events commit in one transaction. Events of kinds we do
not handle (a HubSpot ``deal.*`` subscription, a SendGrid event type added after this code)
are acknowledged and counted as ``ignored``, so the provider does not retry them for a day.

Text holding U+0000 (which PostgreSQL cannot store) is kept from SendGrid and HubSpot with
the character replaced by U+FFFD and a warning logged: the text is a third party's (a bounce
reason, a user agent, a CRM value), and refusing it would lose the batch's good events with
it. From a generic source, whose sender is the operator's own system, it is refused (422,
named by its path) like any payload a rule cannot map. A lone UTF-16 surrogate, NaN and
Infinity (which no database or JSON client can hold either) follow the same split: marked
(U+FFFD, null) from SendGrid and HubSpot, refused from a generic source
(``engine/inbound_values.py``). Event times follow the same split: an implausible one
(before 2000, more than a day ahead) is refused from a generic source and replaced by the
time received, the reported value kept, from HubSpot.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from connectors.webhooks.dedupe import hubspot_event_key, sendgrid_event_key
from connectors.webhooks.signatures import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_SIGNATURE_V3_HEADER,
    HUBSPOT_SIGNATURE_VERSION_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    JOURNEYLINE_SIGNATURE_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    SignatureError,
    verify_hmac,
    verify_hubspot,
    verify_sendgrid,
)
from engine.api.deps import RuntimeDep
from engine.api.errors import (
    NESTED_TOO_DEEPLY,
    BadBody,
    ErrorResponse,
    Invalid,
    Problem,
    field_path,
)
from engine.contacts import normalize_email, validate_stage
from engine.errors import ConfigurationError, ValidationError
from engine.event_input import nul_problems, without_nul
from engine.inbound import SENDGRID_EVENTS, InboundResult, record_sendgrid_events
from engine.inbound_crm import HUBSPOT_TO_STAGE, record_hubspot_events
from engine.inbound_generic import (
    MappingProblems,
    WebhookSource,
    map_payload,
    record_generic_events,
)
from engine.inbound_values import holds_unstorable, without_unstorable
from engine.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_HUBSPOT_BATCH = 100
"""HubSpot sends at most 100 events per request; a larger batch is not HubSpot's."""


# --- what the endpoints take and give (also the OpenAPI document) --------------------------


class SendGridEvent(BaseModel):
    """One SendGrid Event Webhook event; other keys (your ``custom_args``) are kept."""

    model_config = ConfigDict(extra="allow")

    email: str = Field(min_length=1, max_length=320)
    event: str = Field(description="delivered, open, click, bounce, dropped, spamreport...")
    timestamp: int | None = Field(default=None, description="Unix seconds.")
    sg_event_id: str | None = Field(default=None, description="SendGrid's id: the dedupe key.")
    sg_message_id: str | None = None


class HubSpotEvent(BaseModel):
    """One HubSpot webhook event."""

    model_config = ConfigDict(extra="allow")

    subscriptionType: str = Field(examples=["contact.propertyChange"])
    objectId: int | str
    occurredAt: int = Field(description="Milliseconds since the epoch.")
    eventId: int | str | None = None
    portalId: int | str | None = None
    propertyName: str | None = None
    propertyValue: str | int | float | bool | None = None


class WebhookResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "recorded": 2,
                    "duplicates": 0,
                    "ignored": 0,
                    "unknown_contacts": 0,
                    "rejected": [],
                }
            ]
        }
    )

    recorded: int = Field(description="Events recorded now.")
    duplicates: int = Field(description="Events recorded by an earlier delivery.")
    ignored: int = Field(description="Events of a kind Journeyline does not act on.")
    unknown_contacts: int = Field(description="Events about contacts we do not know.")
    rejected: list[str] = Field(default_factory=list, description="Events refused, and why.")

    @classmethod
    def of(cls, result: InboundResult, *, ignored: int = 0) -> WebhookResult:
        return cls(
            recorded=result.recorded,
            duplicates=result.duplicates,
            ignored=ignored,
            unknown_contacts=result.unknown_contacts,
            rejected=result.rejected,
        )


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body is nested too deeply to parse."),
    401: _error("No signature (or no timestamp) header."),
    403: _error("The signature is malformed, does not match the body, or is stale."),
    413: _error("The body is larger than JOURNEYLINE_API_MAX_BODY_BYTES."),
    422: _error("The body is not JSON of the expected shape; every field at fault named."),
    503: _error("The endpoint's verification key or secret is not configured."),
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    # The body is read raw (its signature is over the bytes), so describe it by hand.
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


# --- shared steps --------------------------------------------------------------------------


def _tolerance(runtime: Runtime) -> timedelta:
    return timedelta(seconds=runtime.settings.webhook_tolerance_seconds)


def _refused(exc: SignatureError) -> HTTPException:
    status = 401 if exc.reason == "missing" else 403
    log.warning("webhook refused (%s, %s): %s", exc.scheme, exc.reason, exc)
    return HTTPException(status, f"{exc.scheme} signature refused ({exc.reason}): {exc}")


def _unconfigured(what: str) -> HTTPException:
    log.error("webhook refused: %s is not configured", what)
    return HTTPException(503, f"this webhook endpoint is not configured: set {what}")


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise Invalid([Problem(field="body", message=f"not valid JSON: {exc}")]) from exc
    except RecursionError as exc:
        # 400, as /v1/events answers the same body (FastAPI's parser meets the same limit).
        raise BadBody(NESTED_TOO_DEEPLY) from exc


def _kept_without_nul(provider: str, index: int, event: Any) -> Any:
    """A provider's event with U+0000 and lone surrogates replaced by U+FFFD (NaN and
    Infinity by null), logged when there was one.

    The text comes from third parties (a remote mail server's bounce reason, a recipient's
    user agent, a value typed into the CRM), the event is genuine, and refusing it would
    cost the batch: both providers retry a refusal for a day (HubSpot up to 10 times), the
    same text each time, then drop the batch, bounces and good events with it. So the event
    is kept, the character marked."""
    if holds_unstorable(event):
        # A lone UTF-16 surrogate, or NaN / Infinity: no database and no JSON client can
        # hold them either (engine/inbound_values.py).
        log.warning(
            "%s event %s: lone surrogates replaced with U+FFFD, NaN or Infinity with null",
            provider,
            index,
        )
        event = without_unstorable(event)
    found = nul_problems(event, f"[{index}]")
    if not found:
        return event
    log.warning(
        "%s event %s: U+0000 replaced with U+FFFD in %s",
        provider,
        index,
        ", ".join(path for path, _ in found),
    )
    return without_nul(event)


def _array(events: Any, *, max_items: int | None = None) -> list[Any]:
    if not isinstance(events, list):
        raise Invalid([Problem(field="body", message="body must be a JSON array of events")])
    if max_items is not None and len(events) > max_items:
        raise Invalid(
            [
                Problem(
                    field="body",
                    message=f"{len(events)} events in one request; at most {max_items}",
                )
            ]
        )
    return events


def _rejected(provider: str, index: int, problems: list[Problem]) -> list[str]:
    """One event of a provider's batch refused: named in the answer's ``rejected`` and
    logged, while the batch's good events are recorded. Refusing the whole batch would
    have the provider retry it, unchanged and refused again, for a day, and then drop it,
    its good events with it."""
    own = f"[{index}]"
    why = "; ".join(
        f"{(p.field or '').removeprefix(own).lstrip('.') or 'event'}: {p.message}" for p in problems
    )
    log.warning("%s event %s rejected: %s", provider, index, why)
    return [f"index {index}: {why}"]


def _shape(model: type[BaseModel], index: int, event: Any) -> list[Problem]:
    """Every problem with one event's shape, each named like ``[3].email``."""
    try:
        model.model_validate(event)
    except PydanticValidationError as exc:
        return [
            Problem(field=field_path(("body", index, *e["loc"])), message=e["msg"])
            for e in exc.errors()
        ]
    return []


# --- SendGrid ------------------------------------------------------------------------------


@router.post(
    "/sendgrid",
    summary="SendGrid Event Webhook (signed)",
    description="Delivery and engagement events, verified with the Event Webhook's ECDSA "
    "signature (`JOURNEYLINE_SENDGRID_WEBHOOK_PUBLIC_KEY`) and timestamp window. Bounces, "
    "drops and spam reports suppress the contact; unsubscribes end its marketing.",
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_json_body(
        {"type": "array", "items": SendGridEvent.model_json_schema(ref_template="{model}")}
    ),
)
async def sendgrid_webhook(
    request: Request,
    runtime: RuntimeDep,
    signature: Annotated[
        str | None,
        Header(alias=SENDGRID_SIGNATURE_HEADER, description="Base64 DER ECDSA signature."),
    ] = None,
    timestamp: Annotated[
        str | None, Header(alias=SENDGRID_TIMESTAMP_HEADER, description="Unix seconds.")
    ] = None,
) -> WebhookResult:
    key = runtime.settings.sendgrid_webhook_public_key
    if not key:
        raise _unconfigured("JOURNEYLINE_SENDGRID_WEBHOOK_PUBLIC_KEY")
    body = await request.body()
    try:
        verify_sendgrid(
            public_key_b64=key,
            body=body,
            signature=signature,
            timestamp=timestamp,
            now=runtime.clock.now(),
            tolerance=_tolerance(runtime),
        )
    except SignatureError as exc:
        raise _refused(exc) from exc
    except ConfigurationError as exc:
        raise _unconfigured(f"a valid JOURNEYLINE_SENDGRID_WEBHOOK_PUBLIC_KEY ({exc})") from exc
    events = _array(_parse_json(body))
    rejected: list[str] = []
    known: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            rejected += _rejected("SendGrid", index, _shape(SendGridEvent, index, event))
            continue
        if event["event"] not in SENDGRID_EVENTS:
            continue  # a kind we do not handle (SendGrid adds some): acknowledged, ignored
        found = _shape(SendGridEvent, index, event)
        if not found:
            try:
                normalize_email(event["email"])
            except ValidationError as exc:
                found.append(Problem(field=f"[{index}].email", message=str(exc)))
            try:
                sendgrid_event_key(event)
            except ValidationError as exc:
                found.append(Problem(field=f"[{index}].{exc.field}", message=str(exc)))
        if found:
            rejected += _rejected("SendGrid", index, found)
            continue
        known.append(_kept_without_nul("SendGrid", index, event))
        positions.append(index)
    result = await run_in_threadpool(record_sendgrid_events, runtime, known, positions)
    result.rejected[:0] = rejected
    return WebhookResult.of(result, ignored=len(events) - len(known) - len(rejected))


# --- HubSpot -------------------------------------------------------------------------------


def hubspot_stage_map(runtime: Runtime) -> dict[str, str]:
    """HubSpot ``lifecyclestage`` value -> our stage: the defaults, then
    ``JOURNEYLINE_HUBSPOT_INBOUND_STAGE_MAP`` (accounts customise their values). Raises
    ``ConfigurationError`` naming every stage the journey does not have."""
    overrides = {
        k.strip().lower(): v for k, v in runtime.settings.hubspot_inbound_stage_map.items()
    }
    wrong = []
    for value, stage in overrides.items():
        try:
            validate_stage(runtime.registry.journey, stage)
        except ValidationError as exc:
            wrong.append(f"{value!r} -> {exc}")
    if wrong:
        raise ConfigurationError("JOURNEYLINE_HUBSPOT_INBOUND_STAGE_MAP: " + "; ".join(wrong))
    return {**HUBSPOT_TO_STAGE, **overrides}


def _signed_uri(request: Request) -> str:
    """The URI HubSpot signed: ``JOURNEYLINE_API_PUBLIC_URL`` + path when set (behind a
    proxy the URL we see is not the one HubSpot called), else the URL as requested. Not
    ``JOURNEYLINE_PUBLIC_URL``: unsubscribe links may live on another host than the one
    HubSpot calls."""
    public_url = request.app.state.api_settings.public_url
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


@router.post(
    "/hubspot",
    summary="HubSpot app webhooks (signed)",
    description="Batches of up to 100 contact events, verified with signature v3 "
    "(`X-HubSpot-Signature-v3`, 5-minute window; v1/v2 only with "
    "`JOURNEYLINE_HUBSPOT_ACCEPT_V1_V2`), keyed with the app's client "
    "secret (`JOURNEYLINE_HUBSPOT_CLIENT_SECRET`). `lifecyclestage` changes move the contact "
    "forward through the stage machine; deletions erase it. Non-contact events are ignored.",
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_json_body(
        {
            "type": "array",
            "maxItems": MAX_HUBSPOT_BATCH,
            "items": HubSpotEvent.model_json_schema(ref_template="{model}"),
        }
    ),
)
async def hubspot_webhook(
    request: Request,
    runtime: RuntimeDep,
    signature_v3: Annotated[
        str | None,
        Header(alias=HUBSPOT_SIGNATURE_V3_HEADER, description="Base64 HMAC-SHA256 (v3)."),
    ] = None,
    request_timestamp: Annotated[
        str | None,
        Header(alias=HUBSPOT_TIMESTAMP_HEADER, description="Milliseconds (v3)."),
    ] = None,
    signature: Annotated[
        str | None, Header(alias=HUBSPOT_SIGNATURE_HEADER, description="Hex SHA-256 (v1/v2).")
    ] = None,
    signature_version: Annotated[
        str | None, Header(alias=HUBSPOT_SIGNATURE_VERSION_HEADER, description="v1 or v2.")
    ] = None,
) -> WebhookResult:
    secret = runtime.settings.hubspot_client_secret
    if not secret:
        raise _unconfigured("JOURNEYLINE_HUBSPOT_CLIENT_SECRET")
    body = await request.body()
    try:
        verify_hubspot(
            client_secret=secret,
            method=request.method,
            uri=_signed_uri(request),
            body=body,
            headers=request.headers,
            now=runtime.clock.now(),
            tolerance=_tolerance(runtime),
            accept_v1_v2=runtime.settings.hubspot_accept_v1_v2,
        )
    except SignatureError as exc:
        raise _refused(exc) from exc
    events = _array(_parse_json(body), max_items=MAX_HUBSPOT_BATCH)
    rejected: list[str] = []
    contact_events: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("subscriptionType"), str):
            rejected += _rejected("HubSpot", index, _shape(HubSpotEvent, index, event))
            continue
        if not event["subscriptionType"].startswith("contact."):
            continue  # deals, companies...: acknowledged, ignored
        found = _shape(HubSpotEvent, index, event)
        if not found:
            try:
                hubspot_event_key(event)
            except ValidationError as exc:
                found.append(Problem(field=f"[{index}].{exc.field}", message=str(exc)))
            if event.get("propertyName") == "email":
                try:
                    normalize_email(str(event.get("propertyValue") or ""))
                except ValidationError as exc:
                    found.append(Problem(field=f"[{index}].propertyValue", message=str(exc)))
        if found:
            rejected += _rejected("HubSpot", index, found)
            continue
        contact_events.append(_kept_without_nul("HubSpot", index, event))
        positions.append(index)
    mapping = request.app.state.hubspot_stage_map
    result = await run_in_threadpool(
        lambda: record_hubspot_events(runtime, contact_events, positions, mapping=mapping)
    )
    result.rejected[:0] = rejected
    return WebhookResult.of(result, ignored=len(events) - len(contact_events) - len(rejected))


# --- generic HMAC sources ------------------------------------------------------------------


def _source(request: Request, name: str) -> WebhookSource:
    sources: dict[str, WebhookSource] = request.app.state.webhook_sources
    source = sources.get(name)
    if source is None:
        raise HTTPException(404, f"no webhook source {name!r} is declared")
    return source


@router.post(
    "/{source}",
    summary="A generic webhook source (HMAC-SHA256 signed)",
    description="Any JSON payload from a declared source (`SOURCES` in `workflows/inbound.py`),"
    " signed with `X-Journeyline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
    '"<t>." + body>` and the source\'s secret from `JOURNEYLINE_INBOUND_WEBHOOK_SECRETS`. '
    "The source's rules map the payload to events; a payload no rule matches is ignored.",
    responses={**WEBHOOK_RESPONSES, 404: _error("No such source is declared.")},
    openapi_extra=_json_body({"type": "object", "description": "The source's own payload."}),
)
async def generic_webhook(
    request: Request,
    runtime: RuntimeDep,
    source: Annotated[str, Path(description="The declared source's name.", examples=["pipedrive"])],
    signature: Annotated[
        str | None,
        Header(alias=JOURNEYLINE_SIGNATURE_HEADER, description="t=<unix seconds>,v1=<hex>"),
    ] = None,
) -> WebhookResult:
    declared = _source(request, source)
    secret = runtime.settings.inbound_webhook_secrets.get(declared.name)
    if not secret:
        raise _unconfigured(
            f'a secret for "{declared.name}" in JOURNEYLINE_INBOUND_WEBHOOK_SECRETS'
        )
    body = await request.body()
    try:
        verify_hmac(
            secret=secret,
            body=body,
            signature=signature,
            now=runtime.clock.now(),
            tolerance=_tolerance(runtime),
        )
    except SignatureError as exc:
        raise _refused(exc) from exc
    payload = _parse_json(body)
    try:
        events = map_payload(declared, payload, now=runtime.clock.now())
    except MappingProblems as exc:
        raise Invalid([Problem(field=f, message=m) for f, m in exc.problems]) from exc
    if not events:
        return WebhookResult(recorded=0, duplicates=0, ignored=1, unknown_contacts=0)
    result = await run_in_threadpool(record_generic_events, runtime, declared, events)
    return WebhookResult.of(result)
