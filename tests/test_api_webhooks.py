"""Inbound webhooks over a real socket: SendGrid, HubSpot and generic HMAC sources.

Every refusal (unsigned, tampered, wrong key, stale, malformed, oversized) is checked to
record nothing; every accepted delivery is checked to record once however often it comes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

import engine.api_keys  # noqa: F401  (registers the api_keys table before create_all)
from connectors.fakes import FakeSendGrid, hubspot_webhook_event, send_hubspot_webhook
from connectors.webhooks import (
    JOURNEYLINE_SIGNATURE_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    generate_sendgrid_key_pair,
    sign_hmac,
    sign_hubspot_v3,
    sign_sendgrid,
)
from engine import VirtualClock
from engine.api import ApiSettings, create_app
from engine.errors import ConfigurationError, WorkflowDefinitionError
from engine.inbound_generic import (
    PRESENT,
    MapEvent,
    WebhookSource,
    map_payload,
    validate_sources,
)
from engine.models import Event, Suppression
from engine.registry import load_registry
from engine.runtime import Runtime
from engine.settings import Settings
from tests.support import contact, events, make_runtime
from tests.test_api import LiveServer

REPO = Path(__file__).parent.parent

HUBSPOT_SECRET = "hubspot-client-secret"
PIPEDRIVE_SECRET = "pipedrive-shared-secret"
SALESFORCE_SECRET = "salesforce-shared-secret"


@dataclass
class Hooks:
    runtime: Runtime
    http: httpx.Client
    url: str
    sendgrid_key: Any  # the private key the "real" SendGrid would sign with

    def sendgrid(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        key: Any = None,
        signed_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        stamp = timestamp if timestamp is not None else int(time.time())
        signature = sign_sendgrid(key or self.sendgrid_key, signed_body or body, stamp)
        sent = {
            "Content-Type": "application/json",
            SENDGRID_SIGNATURE_HEADER: signature,
            SENDGRID_TIMESTAMP_HEADER: str(stamp),
        }
        if headers is not None:
            sent = {"Content-Type": "application/json", **headers}
        return self.http.post("/v1/webhooks/sendgrid", content=body, headers=sent)

    def hubspot(self, events: list[dict[str, Any]], **options: Any) -> httpx.Response:
        options.setdefault("client_secret", HUBSPOT_SECRET)
        return send_hubspot_webhook(
            f"{self.url}/v1/webhooks/hubspot", events, client=self.http, **options
        )

    def generic(
        self,
        source: str,
        payload: Any,
        *,
        secret: str,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        stamp = timestamp if timestamp is not None else int(time.time())
        header = (
            signature
            if signature is not None
            else sign_hmac(secret=secret, body=body, timestamp=stamp)
        )
        headers = {"Content-Type": "application/json", JOURNEYLINE_SIGNATURE_HEADER: header}
        return self.http.post(f"/v1/webhooks/{source}", content=body, headers=headers)


def serve_hooks(database_url: str, **api_settings: Any) -> Iterator[Hooks]:
    private_key, public_key = generate_sendgrid_key_pair()
    # Signatures are checked against the runtime's clock: start it at the wall clock's now.
    runtime, _clock, _email = make_runtime(
        database_url,
        clock=VirtualClock(datetime.now(UTC)),
        sendgrid_webhook_public_key=public_key,
        hubspot_client_secret=HUBSPOT_SECRET,
        inbound_webhook_secrets={"pipedrive": PIPEDRIVE_SECRET, "salesforce": SALESFORCE_SECRET},
    )
    try:
        app = create_app(runtime, settings=ApiSettings(**api_settings))
        with LiveServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield Hooks(runtime, http, url, private_key)
    finally:
        runtime.close()


@pytest.fixture
def hooks(sqlite_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(sqlite_url)


def by_source(runtime: Runtime, source: str) -> list[Event]:
    return [e for e in events(runtime) if e.source == source]


def sg_event(kind: str, email: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "event": kind,
        "timestamp": 1_772_445_600 + n,
        "sg_event_id": f"sg-{kind}-{n}",
        "sg_message_id": f"msg-{n}",
        **extra,
    }


def body_of(events_: list[dict[str, Any]]) -> bytes:
    return json.dumps(events_, separators=(",", ":")).encode()


def deal_change(deal_id: int, email: str, *, event_id: str = "e-1", stage: int = 3) -> dict:
    """A Pipedrive webhooks v2 change.deal payload, as a relay forwards it (with the email)."""
    return {
        "meta": {
            "action": "change",
            "entity": "deal",
            "entity_id": str(deal_id),
            "id": event_id,
            "timestamp": "2026-11-23T09:30:00.000Z",
            "version": "2.0",
        },
        "data": {
            "id": deal_id,
            "stage_id": stage,
            "pipeline_id": 1,
            "status": "open",
            "person_id": 42,
            "person_email": email,
        },
        "previous": {"stage_id": stage - 1},
    }


# --- SendGrid ------------------------------------------------------------------------------


def test_signed_sendgrid_events_are_recorded_once_however_often_delivered(hooks: Hooks) -> None:
    # Given a known contact and a signed batch about her
    hooks.runtime.upsert_contact("ana@example.com")
    body = body_of(
        [sg_event("delivered", "ana@example.com", 1), sg_event("open", "Ana@Example.com", 2)]
    )
    # When SendGrid delivers it, then delivers it again (a retry, or a replay in the window)
    first = hooks.sendgrid(body)
    again = hooks.sendgrid(body)
    # Then it is recorded once, with no API key asked for
    assert first.status_code == 200, first.text
    assert first.json() == {
        "recorded": 2,
        "duplicates": 0,
        "ignored": 0,
        "unknown_contacts": 0,
        "rejected": [],
    }
    assert (again.status_code, again.json()["duplicates"], again.json()["recorded"]) == (
        200,
        2,
        0,
    )
    assert [e.type for e in by_source(hooks.runtime, "sendgrid")] == [
        "email.delivered",
        "email.opened",
    ]


def test_a_signed_bounce_suppresses_the_contact(hooks: Hooks) -> None:
    hooks.runtime.upsert_contact("gone@example.com")
    response = hooks.sendgrid(body_of([sg_event("bounce", "gone@example.com", 1, type="bounce")]))
    assert response.status_code == 200, response.text
    with Session(hooks.runtime.db) as session:
        suppressed = session.exec(select(Suppression)).all()
    assert [(s.email, s.reason) for s in suppressed] == [("gone@example.com", "bounce")]


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unsigned", 401, "missing"),
        ("no timestamp", 401, "missing"),
        ("tampered body", 403, "mismatch"),
        ("another key", 403, "mismatch"),
        ("garbage signature", 403, "malformed"),
        ("stale", 403, "stale"),
        ("from the future", 403, "stale"),
    ],
)
def test_sendgrid_requests_failing_the_signature_record_nothing(
    hooks: Hooks, case: str, status: int, reason: str
) -> None:
    # Given a known contact and a genuine batch about her
    hooks.runtime.upsert_contact("ana@example.com")
    genuine = body_of([sg_event("bounce", "ana@example.com", 1)])
    now = int(time.time())
    other_key, _ = generate_sendgrid_key_pair()
    # When it arrives in a bad way
    response = {
        "unsigned": lambda: hooks.sendgrid(genuine, headers={}),
        "no timestamp": lambda: hooks.sendgrid(
            genuine,
            headers={SENDGRID_SIGNATURE_HEADER: sign_sendgrid(hooks.sendgrid_key, genuine, now)},
        ),
        "tampered body": lambda: hooks.sendgrid(
            genuine.replace(b"bounce", b"open"), signed_body=genuine
        ),
        "another key": lambda: hooks.sendgrid(genuine, key=other_key),
        "garbage signature": lambda: hooks.sendgrid(
            genuine,
            headers={SENDGRID_SIGNATURE_HEADER: "!!not base64", SENDGRID_TIMESTAMP_HEADER: "1"},
        ),
        "stale": lambda: hooks.sendgrid(genuine, timestamp=now - 600),
        "from the future": lambda: hooks.sendgrid(genuine, timestamp=now + 600),
    }[case]()
    # Then it is refused, saying why, and nothing is recorded or suppressed
    assert response.status_code == status, response.text
    assert f"({reason})" in response.json()["error"]["message"]
    assert by_source(hooks.runtime, "sendgrid") == []
    with Session(hooks.runtime.db) as session:
        assert session.exec(select(Suppression)).all() == []


def test_a_sendgrid_batch_records_its_good_events_and_rejects_each_bad_one_by_name(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused batch would come back unchanged for a day and then be dropped, good events
    and all: each bad event is rejected alone, named in the answer and in the log."""
    hooks.runtime.upsert_contact("ana@example.com")
    batch = [
        sg_event("delivered", "ana@example.com", 1),
        {"event": "open", "timestamp": 1},
        sg_event("open", "not-an-email", 3),
        {"email": "ana@example.com", "event": "click"},
        sg_event("bounce", "ana@example.com", 5),
    ]
    with caplog.at_level(logging.WARNING, logger="engine.api.webhooks"):
        response = hooks.sendgrid(body_of(batch))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["recorded"] == 2
    assert [r.split(":")[0] for r in answer["rejected"]] == ["index 1", "index 2", "index 3"]
    assert answer["rejected"][0] == "index 1: email: Field required"
    assert "is not valid" in answer["rejected"][1]
    assert "sg_message_id" in answer["rejected"][2]
    assert sorted(e.type for e in by_source(hooks.runtime, "sendgrid")) == [
        "email.bounced",
        "email.delivered",
    ]
    logged = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert [line.split(":")[0] for line in logged] == [
        "SendGrid event 1 rejected",
        "SendGrid event 2 rejected",
        "SendGrid event 3 rejected",
    ]


def test_sendgrid_bodies_that_are_not_an_array_of_events_are_422(hooks: Hooks) -> None:
    for body in (b"{not json", b'{"event": "open"}'):
        response = hooks.sendgrid(body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "body"
    # An array of things that are not events: each rejected, nothing recorded
    response = hooks.sendgrid(b'[{"event": "open"}, "open"]')
    assert response.status_code == 200, response.text
    assert [r.split(":")[0] for r in response.json()["rejected"]] == ["index 0", "index 1"]
    assert events(hooks.runtime) == []


def test_sendgrid_event_types_we_do_not_handle_are_acknowledged_and_ignored(
    hooks: Hooks,
) -> None:
    hooks.runtime.upsert_contact("ana@example.com")
    response = hooks.sendgrid(
        body_of(
            [
                {"event": "account_status_change", "type": "compliance_suspend"},
                sg_event("open", "ana@example.com", 2),
            ]
        )
    )
    assert response.status_code == 200, response.text
    assert (response.json()["recorded"], response.json()["ignored"]) == (1, 1)


def test_events_for_unknown_addresses_are_counted_not_recorded(hooks: Hooks) -> None:
    response = hooks.sendgrid(body_of([sg_event("open", "stranger@example.com", 1)]))
    assert response.status_code == 200
    assert response.json()["unknown_contacts"] == 1
    assert events(hooks.runtime) == []


def test_an_oversized_webhook_is_413_and_records_nothing(sqlite_url: str) -> None:
    for hooks in serve_hooks(sqlite_url, max_body_bytes=2_000):
        hooks.runtime.upsert_contact("ana@example.com")
        batch = [sg_event("open", "ana@example.com", n) for n in range(40)]
        response = hooks.sendgrid(body_of(batch))
        assert response.status_code == 413, response.text
        assert response.json()["error"]["field"] == "body"
        assert by_source(hooks.runtime, "sendgrid") == []


def test_an_unconfigured_endpoint_is_503_naming_the_setting(sqlite_url: str) -> None:
    runtime, _clock, _email = make_runtime(sqlite_url)
    try:
        with LiveServer(create_app(runtime)) as url, httpx.Client(base_url=url) as http:
            for path, setting in [
                ("sendgrid", "JOURNEYLINE_SENDGRID_WEBHOOK_PUBLIC_KEY"),
                ("hubspot", "JOURNEYLINE_HUBSPOT_CLIENT_SECRET"),
                ("pipedrive", "JOURNEYLINE_INBOUND_WEBHOOK_SECRETS"),
            ]:
                response = http.post(f"/v1/webhooks/{path}", content=b"[]")
                assert response.status_code == 503, response.text
                assert setting in response.json()["error"]["message"]
    finally:
        runtime.close()


# --- HubSpot -------------------------------------------------------------------------------


def lifecycle(object_id: int, email: str, at_ms: int) -> list[dict[str, Any]]:
    return [
        hubspot_webhook_event(
            "contact.propertyChange",
            object_id,
            property_name="email",
            property_value=email,
            occurred_at_ms=at_ms,
            event_id=1,
        ),
        hubspot_webhook_event(
            "contact.propertyChange",
            object_id,
            property_name="lifecyclestage",
            property_value="customer",
            occurred_at_ms=at_ms + 1,
            event_id=2,
        ),
    ]


@pytest.mark.parametrize("version", ["v3", "v2", "v1"])
def test_a_signed_hubspot_batch_links_and_moves_the_contact_once(
    hooks: Hooks, version: str
) -> None:
    if version != "v3":  # a deployment whose sender signs nothing newer
        hooks.runtime.settings = hooks.runtime.settings.model_copy(
            update={"hubspot_accept_v1_v2": True}
        )
    batch = lifecycle(501, "Deal@Example.com", 1_700_000_000_000)
    first = hooks.hubspot(batch, signature_version=version)
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] == 2
    hooks.runtime.drain()
    assert contact(hooks.runtime, "deal@example.com").stage == "onboarding"
    again = hooks.hubspot(batch, signature_version=version)
    assert (again.status_code, again.json()["duplicates"]) == (200, 2)
    assert len(by_source(hooks.runtime, "hubspot")) == 2


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_hubspot_batch_signed_only_v1_or_v2_is_refused_by_default(
    hooks: Hooks, version: str
) -> None:
    batch = lifecycle(501, "deal@example.com", 1_700_000_000_000)
    response = hooks.hubspot(batch, signature_version=version)
    assert response.status_code == 401, response.text
    assert "JOURNEYLINE_HUBSPOT_ACCEPT_V1_V2" in response.json()["error"]["message"]
    assert events(hooks.runtime) == []


@pytest.mark.parametrize(
    ("settings", "api_settings"),
    [
        ({}, {"public_url": "https://jl.example.com"}),
        ({"public_url": "https://links.example.com"}, {"public_url": "https://jl.example.com"}),
    ],
    ids=["JOURNEYLINE_API_PUBLIC_URL", "not JOURNEYLINE_PUBLIC_URL (links' host)"],
)
def test_behind_a_proxy_hubspot_signatures_are_checked_against_the_api_public_url(
    sqlite_url: str, settings: dict[str, str], api_settings: dict[str, str]
) -> None:
    """HubSpot signs the URL it called (the proxy's), not the one the server sees; the
    unsubscribe links' public URL may be another host and plays no part."""
    runtime, _clock, _email = make_runtime(
        sqlite_url,
        clock=VirtualClock(datetime.now(UTC)),
        hubspot_client_secret=HUBSPOT_SECRET,
        **settings,
    )
    try:
        app = create_app(runtime, settings=ApiSettings(**api_settings))
        with LiveServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            body = json.dumps(lifecycle(501, "deal@example.com", 1_700_000_000_000)).encode()
            now_ms = int(runtime.clock.now().timestamp() * 1000)

            def post(signed_uri: str) -> httpx.Response:
                headers = sign_hubspot_v3(
                    client_secret=HUBSPOT_SECRET,
                    method="POST",
                    uri=signed_uri,
                    body=body,
                    timestamp_ms=now_ms,
                )
                headers["Content-Type"] = "application/json"
                return http.post("/v1/webhooks/hubspot", content=body, headers=headers)

            assert post(f"{url}/v1/webhooks/hubspot").status_code == 403
            assert post("https://jl.example.com/v1/webhooks/hubspot").status_code == 200
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("case", "status"),
    [("unsigned", 401), ("wrong secret", 403), ("stale", 403), ("tampered", 403)],
)
def test_hubspot_requests_failing_the_signature_record_nothing(
    hooks: Hooks, case: str, status: int
) -> None:
    batch = lifecycle(501, "deal@example.com", 1_700_000_000_000)
    url = f"{hooks.url}/v1/webhooks/hubspot"
    if case == "unsigned":
        response = hooks.http.post(url, json=batch)
    elif case == "wrong secret":
        response = hooks.hubspot(batch, client_secret="not-the-secret")
    elif case == "stale":
        response = hooks.hubspot(batch, timestamp_ms=int(time.time() * 1000) - 6 * 60 * 1000)
    else:
        body = json.dumps(batch, separators=(",", ":")).encode()
        genuine = sign_hubspot_v3(
            client_secret=HUBSPOT_SECRET,
            method="POST",
            uri=url,
            body=body,
            timestamp_ms=int(time.time() * 1000),
        )
        response = hooks.http.post(
            url, content=body.replace(b"customer", b"evangelist"), headers=genuine
        )
    assert response.status_code == status, response.text
    assert events(hooks.runtime) == []
    if case == "tampered":  # the same headers with the body as signed do pass
        assert hooks.http.post(url, content=body, headers=genuine).status_code == 200


def test_a_hubspot_batch_over_100_is_422_and_a_bad_event_is_rejected_alone(
    hooks: Hooks,
) -> None:
    too_many = [
        hubspot_webhook_event("contact.creation", i, occurred_at_ms=1_700_000_000_000 + i)
        for i in range(101)
    ]
    response = hooks.hubspot(too_many)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "body"
    assert events(hooks.runtime) == []
    # An event missing its object id, or naming no address, is rejected; the rest recorded
    broken = lifecycle(501, "deal@example.com", 1_700_000_000_000)
    del broken[1]["objectId"]
    response = hooks.hubspot(broken)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == ["index 1: objectId: Field required"]
    assert response.json()["recorded"] == 1
    bad_email = lifecycle(502, "nobody", 1_700_000_100_000)
    response = hooks.hubspot(bad_email)
    assert response.status_code == 200, response.text
    assert [r.split(":")[0] for r in response.json()["rejected"]] == ["index 0"]
    assert "propertyValue" in response.json()["rejected"][0]


def test_hubspot_events_about_other_objects_are_ignored(hooks: Hooks) -> None:
    deal = hubspot_webhook_event(
        "deal.propertyChange",
        501,
        property_name="dealstage",
        property_value="closedwon",
        occurred_at_ms=1_700_000_000_000,
    )
    response = hooks.hubspot([deal, *lifecycle(501, "deal@example.com", 1_700_000_000_000)])
    assert response.status_code == 200, response.text
    assert (response.json()["recorded"], response.json()["ignored"]) == (2, 1)


# --- generic HMAC sources ------------------------------------------------------------------


def test_a_signed_pipedrive_stage_change_becomes_one_event(hooks: Hooks) -> None:
    payload = deal_change(7, "Buyer@Example.com")
    first = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    again = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] == 1
    assert (again.json()["recorded"], again.json()["duplicates"]) == (0, 1)
    (recorded,) = by_source(hooks.runtime, "webhook:pipedrive")
    assert recorded.type == "deal.stage_changed"
    assert recorded.properties == {
        "deal_id": 7,
        "stage_id": 3,
        "previous_stage_id": 2,
        "pipeline_id": 1,
        "status": "open",
    }
    assert recorded.occurred_at.replace(tzinfo=UTC) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    assert contact(hooks.runtime, "buyer@example.com").id == recorded.contact_id


def test_a_pipedrive_change_that_is_not_a_stage_move_is_ignored(hooks: Hooks) -> None:
    payload = deal_change(7, "buyer@example.com")
    payload["previous"] = {"title": "old title"}
    response = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    assert response.status_code == 200, response.text
    assert response.json()["ignored"] == 1
    assert events(hooks.runtime) == []


def test_a_salesforce_batch_is_all_or_nothing_naming_the_bad_item(hooks: Hooks) -> None:
    payload = {
        "organizationId": "00D000000000001",
        "notifications": [
            {
                "id": "04l1",
                "sObject": {
                    "Id": "0061",
                    "StageName": "Closed Won",
                    "Contact_Email__c": "one@example.com",
                },
            },
            {"id": "04l2", "sObject": {"Id": "0062", "StageName": "Closed Won"}},
        ],
    }
    response = hooks.generic("salesforce", payload, secret=SALESFORCE_SECRET)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "notifications[1].sObject.Contact_Email__c"
    assert events(hooks.runtime) == []
    payload["notifications"][1]["sObject"]["Contact_Email__c"] = "two@example.com"
    response = hooks.generic("salesforce", payload, secret=SALESFORCE_SECRET)
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 2
    assert [
        (e.type, e.properties["stage"]) for e in by_source(hooks.runtime, "webhook:salesforce")
    ] == [
        ("opportunity.stage_changed", "Closed Won"),
        ("opportunity.stage_changed", "Closed Won"),
    ]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unsigned", 401),
        ("another source's secret", 403),
        ("garbage", 403),
        ("stale", 403),
        ("unknown source", 404),
    ],
)
def test_generic_requests_failing_the_signature_record_nothing(
    hooks: Hooks, case: str, status: int
) -> None:
    payload = deal_change(7, "buyer@example.com")
    response = {
        "unsigned": lambda: hooks.generic("pipedrive", payload, secret="", signature=""),
        "another source's secret": lambda: hooks.generic(
            "pipedrive", payload, secret=SALESFORCE_SECRET
        ),
        "garbage": lambda: hooks.generic("pipedrive", payload, secret="", signature="t=1,v1=zz"),
        "stale": lambda: hooks.generic(
            "pipedrive", payload, secret=PIPEDRIVE_SECRET, timestamp=int(time.time()) - 600
        ),
        "unknown source": lambda: hooks.generic("zoho", payload, secret=PIPEDRIVE_SECRET),
    }[case]()
    assert response.status_code == status, response.text
    assert events(hooks.runtime) == []


def test_a_generic_payload_missing_what_the_rule_needs_is_422(hooks: Hooks) -> None:
    payload = deal_change(7, "buyer@example.com")
    del payload["data"]["person_email"]
    payload["meta"]["timestamp"] = "yesterday"
    response = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    assert response.status_code == 422, response.text
    fields = [p["field"] for p in response.json()["error"]["problems"]]
    assert fields == ["data.person_email", "meta.timestamp"]
    not_json = hooks.http.post(
        "/v1/webhooks/pipedrive",
        content=b"{oops",
        headers={
            JOURNEYLINE_SIGNATURE_HEADER: sign_hmac(
                secret=PIPEDRIVE_SECRET, body=b"{oops", timestamp=int(time.time())
            )
        },
    )
    assert (not_json.status_code, not_json.json()["error"]["field"]) == (422, "body")
    assert events(hooks.runtime) == []


def test_source_declarations_are_checked_with_every_problem_named() -> None:
    good = MapEvent("deal.won", email="data.email", when={"meta.entity": PRESENT})
    with pytest.raises(WorkflowDefinitionError) as raised:
        validate_sources(
            [
                WebhookSource("sendgrid", maps=[good]),
                WebhookSource("Bad Name", maps=[good]),
                WebhookSource("ok", maps=[MapEvent("Not A Type", email="a..b")]),
                WebhookSource("ok", maps=[good]),
                WebhookSource("empty", maps=[]),
            ]
        )
    problems = raised.value.problems
    assert len(problems) == 6, problems
    assert any("built-in" in p for p in problems)
    assert any("declared twice" in p for p in problems)
    assert any("'a..b'" in p for p in problems)
    assert validate_sources([WebhookSource("ok", maps=[good])]).keys() == {"ok"}


def test_the_webhooks_are_in_the_openapi_document_without_api_keys(hooks: Hooks) -> None:
    document = hooks.http.get("/openapi.json").json()
    for path in ("/v1/webhooks/sendgrid", "/v1/webhooks/hubspot", "/v1/webhooks/{source}"):
        operation = document["paths"][path]["post"]
        assert "security" not in operation, path
        assert operation["requestBody"]["content"]["application/json"]["schema"]
        assert {"401", "403", "413", "422", "503"} <= operation["responses"].keys()
    headers = [p["name"] for p in document["paths"]["/v1/webhooks/sendgrid"]["post"]["parameters"]]
    assert headers == [SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER]


# --- the README's examples are real code ---------------------------------------------------

README = Path(__file__).parent.parent / "README.md"


def readme_block(first_line: str) -> dict[str, Any]:
    text = README.read_text()
    block = re.search(r"```python\n(" + re.escape(first_line) + r"\n.*?)```", text, re.S)
    assert block, f"the README lost its example starting {first_line!r}"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    return namespace


def test_the_readme_relay_signs_what_the_service_accepts(hooks: Hooks) -> None:
    post_signed = readme_block(
        "# relay.py: sign and forward a payload to a Journeyline generic source"
    )["post_signed"]
    response = post_signed(
        f"{hooks.url}/v1/webhooks/pipedrive", deal_change(9, "relay@example.com"), PIPEDRIVE_SECRET
    )
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1


def test_the_readme_source_declaration_is_valid_and_maps_a_pipedrive_change() -> None:
    sources = readme_block(
        "# workflows/inbound.py (excerpt): Pipedrive webhooks v2, a deal moved to another stage"
    )["SOURCES"]
    (mapped,) = map_payload(validate_sources(sources)["pipedrive"], deal_change(9, "R@Example.com"))
    assert (mapped.email, mapped.type, mapped.properties) == (
        "r@example.com",
        "deal.stage_changed",
        {"deal_id": 9, "stage_id": 3},
    )


# --- retries and duplicates, as the providers send them ------------------------------------


def configured_after_first_answer(
    runtime: Runtime, statuses: list[int], **settings: Any
) -> httpx.Client:
    """A client whose first request finds the endpoint unconfigured (503), and every later
    one configured: a provider's retry after an outage on our side. Answers go to
    ``statuses``."""

    def configure(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        for name, value in settings.items():
            setattr(runtime.settings, name, value)

    return httpx.Client(timeout=30, event_hooks={"response": [configure]})


def test_a_hubspot_retry_after_a_failure_and_a_duplicate_record_each_event_once(
    hooks: Hooks,
) -> None:
    hooks.runtime.settings.hubspot_client_secret = None
    batch = lifecycle(601, "retry@example.com", 1_700_000_000_000)
    statuses: list[int] = []
    with configured_after_first_answer(
        hooks.runtime, statuses, hubspot_client_secret=HUBSPOT_SECRET
    ) as client:
        last = send_hubspot_webhook(
            f"{hooks.url}/v1/webhooks/hubspot",
            batch,
            client_secret=HUBSPOT_SECRET,
            client=client,
            max_attempts=3,
            duplicates=1,
        )
    # the retry (attemptNumber 1) recorded both; the duplicate found them
    assert statuses == [503, 200, 200]
    assert (last.status_code, last.json()["duplicates"], last.json()["recorded"]) == (200, 2, 0)
    assert len(by_source(hooks.runtime, "hubspot")) == 2


def test_a_sendgrid_retry_after_a_failure_records_each_event_once(hooks: Hooks) -> None:
    hooks.runtime.upsert_contact("ana@example.com")
    fake = FakeSendGrid()  # not started: only its webhook signing is used
    hooks.runtime.settings.sendgrid_webhook_public_key = None
    events_ = [sg_event("delivered", "ana@example.com", 1), sg_event("open", "ana@example.com", 2)]
    with configured_after_first_answer(
        hooks.runtime, [], sendgrid_webhook_public_key=fake.webhook_public_key
    ) as client:
        last = fake.post_events(
            f"{hooks.url}/v1/webhooks/sendgrid", events_, client=client, max_attempts=2
        )
    assert [d.status_code for d in fake.deliveries] == [503, 200]
    assert last.json()["recorded"] == 2
    assert len(by_source(hooks.runtime, "sendgrid")) == 2


# --- HubSpot lifecyclestage values of your own -------------------------------------------


def test_a_custom_lifecyclestage_mapping_places_the_contact_where_it_says(
    sqlite_url: str,
) -> None:
    runtime, _clock, _email = make_runtime(
        sqlite_url,
        clock=VirtualClock(datetime.now(UTC)),
        hubspot_client_secret=HUBSPOT_SECRET,
        hubspot_inbound_stage_map={"Customer": "purchase"},
    )
    try:
        with LiveServer(create_app(runtime)) as url:
            response = send_hubspot_webhook(
                f"{url}/v1/webhooks/hubspot",
                lifecycle(701, "own@example.com", 1_700_000_000_000),
                client_secret=HUBSPOT_SECRET,
            )
            assert response.status_code == 200, response.text
            runtime.drain()
        assert contact(runtime, "own@example.com").stage == "purchase"
    finally:
        runtime.close()


def test_a_lifecyclestage_mapping_to_an_unknown_stage_fails_at_start(sqlite_url: str) -> None:
    runtime, _clock, _email = make_runtime(
        sqlite_url, hubspot_inbound_stage_map={"customer": "paying", "lead": "nowhere"}
    )
    try:
        with pytest.raises(ConfigurationError) as raised:
            create_app(runtime)
        assert "'paying'" in str(raised.value) and "'nowhere'" in str(raised.value)
    finally:
        runtime.close()


def test_the_api_serves_the_sources_of_the_registrys_own_module(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An embedder passing Runtime(registry=...) from another package gets that package's
    # inbound sources, not those of JOURNEYLINE_WORKFLOWS' module.
    package = tmp_path / "acme_flows"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from workflows import GUARDRAILS, JOURNEY, RULES, WORKFLOWS  # noqa: F401\n"
    )
    (package / "inbound.py").write_text(
        "from engine import MapEvent, WebhookSource\n"
        "SOURCES = [WebhookSource('acme', maps=[MapEvent('acme.signup', email='who')])]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry("acme_flows", templates_dir=REPO / "workflows" / "templates")
    runtime = Runtime(Settings(database_url=sqlite_url, workflows="workflows"), registry=registry)
    try:
        app = create_app(runtime)
        assert set(app.state.webhook_sources) == {"acme"}
    finally:
        runtime.close()
