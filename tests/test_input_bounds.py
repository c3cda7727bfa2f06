"""Event times within bounds, and bodies nested too deeply to parse.

An event time before 2000-01-01 or more than a day ahead of the server's clock (the runtime's,
which these tests control) is refused by the track API and a generic source (422, the field
named); from HubSpot it is kept at the time received, the reported value beside. A signed
webhook body nested too deeply is 400, as /v1/events answers, never a 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from connectors.fakes import hubspot_webhook_event
from connectors.webhooks.signatures import (
    JOURNEYLINE_SIGNATURE_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    sign_hmac,
    sign_hubspot_v3,
    sign_sendgrid,
)
from engine.event_input import occurred_at_problem
from tests.support import events, make_runtime
from tests.test_api import Api, event, serve
from tests.test_api_webhooks import (
    HUBSPOT_SECRET,
    PIPEDRIVE_SECRET,
    Hooks,
    body_of,
    by_source,
    deal_change,
    serve_hooks,
    sg_event,
)

DEEP = b"[" * 100_000 + b"]" * 100_000


def at(moment: datetime) -> str:
    return moment.isoformat()


# --- the rule ------------------------------------------------------------------------------


def test_times_from_2000_to_a_day_ahead_are_plausible() -> None:
    now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert occurred_at_problem(datetime(2000, 1, 1, tzinfo=UTC), now=now) is None
    assert occurred_at_problem(now + timedelta(days=1), now=now) is None
    assert occurred_at_problem(datetime(2026, 1, 5, 8, 0), now=now) is None  # naive is UTC
    early = occurred_at_problem(datetime(1999, 12, 31, 23, 59, tzinfo=UTC), now=now)
    assert early is not None and "before 2000-01-01" in early
    late = occurred_at_problem(now + timedelta(days=1, seconds=1), now=now)
    assert late is not None and "in the future" in late
    # Extremes whose conversion to UTC would overflow are compared, not converted
    last = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
    first = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
    assert occurred_at_problem(last, now=now) is not None
    assert occurred_at_problem(first, now=now) is not None


# --- POST /v1/events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00-05:00",
        "0001-01-01T00:00:00+05:00",
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59+14:00",
        "9999-12-31T23:59:59-05:00",
        "2026-01-06T08:00:01Z",  # a day and a second after the test clock
    ],
)
def test_an_implausible_occurred_at_is_422_naming_it(api: Api, occurred_at: str) -> None:
    # Given the server's clock at 2026-01-05 08:00 UTC
    assert api.clock.now() == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    # When an event says it happened long before, or more than a day after
    response = api.post_events(event("ana@example.com", occurred_at=occurred_at))
    # Then it is refused, naming occurred_at, and nothing is recorded
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "occurred_at"
    assert events(api.runtime) == []


def test_the_future_bound_follows_the_servers_clock(api: Api) -> None:
    # Given a batch whose second event is two days ahead of the clock
    ahead = at(api.clock.now() + timedelta(days=2))
    batch = {
        "events": [
            event("ana@example.com", occurred_at="2000-01-01T00:00:00Z"),
            event("bo@example.com", occurred_at=ahead),
            event("cy@example.com", occurred_at=at(api.clock.now() + timedelta(days=1))),
        ]
    }
    # When it is sent, it is refused naming that event's field
    refused = api.post_events(batch)
    assert refused.status_code == 422, refused.text
    assert [p["field"] for p in refused.json()["error"]["problems"]] == ["events[1].occurred_at"]
    # And once the clock has moved on a day, the same batch goes in
    api.clock.advance(days=1)
    accepted = api.post_events(batch)
    assert accepted.status_code == 202, accepted.text


def test_a_body_nested_too_deeply_is_400_on_the_events_api(api: Api) -> None:
    response = api.http.post(
        "/v1/events", content=DEEP, headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


# --- webhooks ------------------------------------------------------------------------------


def signed(hooks: Hooks, path: str, body: bytes) -> dict[str, str]:
    stamp = int(time.time())
    headers = {"Content-Type": "application/json"}
    if path == "sendgrid":
        headers[SENDGRID_SIGNATURE_HEADER] = sign_sendgrid(hooks.sendgrid_key, body, stamp)
        headers[SENDGRID_TIMESTAMP_HEADER] = str(stamp)
    elif path == "hubspot":
        uri = f"{hooks.url}/v1/webhooks/hubspot"
        headers |= sign_hubspot_v3(
            client_secret=HUBSPOT_SECRET,
            method="POST",
            uri=uri,
            body=body,
            timestamp_ms=stamp * 1000,
        )
    else:
        headers[JOURNEYLINE_SIGNATURE_HEADER] = sign_hmac(
            secret=PIPEDRIVE_SECRET, body=body, timestamp=stamp
        )
    return headers


@pytest.mark.parametrize("path", ["sendgrid", "hubspot", "pipedrive"])
def test_a_signed_body_nested_too_deeply_is_400_naming_the_body(hooks: Hooks, path: str) -> None:
    # Given a correctly signed body of 100,000 nested arrays
    headers = signed(hooks, path, DEEP)
    # When it is posted
    response = hooks.http.post(f"/v1/webhooks/{path}", content=DEEP, headers=headers)
    # Then it is 400, as /v1/events answers, saying why; nothing is recorded
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "body"
    assert "nested too deeply" in error["message"]
    assert events(hooks.runtime) == []


@pytest.mark.parametrize(
    ("stamp", "why"),
    [("2099-01-01T00:00:00Z", "in the future"), ("1999-12-31T23:59:59Z", "before 2000-01-01")],
)
def test_a_generic_source_time_out_of_bounds_is_422_naming_its_path(
    hooks: Hooks, stamp: str, why: str
) -> None:
    # Given a Pipedrive change stamped in 2099 (or 1999)
    payload = deal_change(7, "ana@example.com")
    payload["meta"]["timestamp"] = stamp
    # When it is sent, signed
    response = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    # Then it is refused naming meta.timestamp, and nothing is recorded
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "meta.timestamp"
    assert why in error["message"]
    assert events(hooks.runtime) == []


def test_a_hubspot_time_out_of_bounds_is_kept_as_received_with_the_reported_value(
    hooks: Hooks,
) -> None:
    # Given a HubSpot email change said to have happened in 2099
    in_2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000)
    batch = [
        hubspot_webhook_event(
            "contact.propertyChange",
            9,
            property_name="email",
            property_value="ana@example.com",
            occurred_at_ms=in_2099,
        )
    ]
    # When HubSpot delivers it
    response = hooks.hubspot(batch)
    # Then it is recorded (HubSpot would drop a refused batch after a day of retries), at the
    # time it was received, with what HubSpot said kept beside
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    [recorded] = by_source(hooks.runtime, "hubspot")
    assert recorded.occurred_at.replace(tzinfo=UTC) == hooks.runtime.clock.now()
    assert recorded.properties["reported_occurred_at"] == in_2099


def test_a_sendgrid_time_out_of_bounds_is_kept_as_received_with_the_reported_value(
    hooks: Hooks,
) -> None:
    # Given a SendGrid open said to have happened in 2099
    hooks.runtime.upsert_contact("ana@example.com")
    in_2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
    opened = sg_event("open", "ana@example.com", 1)
    opened["timestamp"] = in_2099
    # When SendGrid delivers it
    response = hooks.sendgrid(body_of([opened]))
    # Then it is recorded (SendGrid drops a refused batch after a day of retries) at the time
    # it was received, with what SendGrid said kept beside
    assert response.status_code == 200, response.text
    [recorded] = by_source(hooks.runtime, "sendgrid")
    assert recorded.occurred_at.replace(tzinfo=UTC) == hooks.runtime.clock.now()
    assert recorded.properties["reported_timestamp"] == in_2099


def test_a_deeply_nested_but_parseable_property_is_stored_or_refused_never_500(
    hooks: Hooks,
) -> None:
    payload = deal_change(7, "ana@example.com")
    payload["data"]["value"] = json.loads("[" * 200 + "]" * 200)
    response = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    assert response.status_code in (200, 422), response.text


def test_a_contacts_attributes_cannot_grow_past_the_limit_request_by_request(api: Api) -> None:
    # Each request is within 64 KiB; the stored attributes they merge into are held to it too
    def put(key: str) -> httpx.Response:
        return api.http.put(
            "/v1/contacts/big@example.com",
            json={"attributes": {key: "x" * 30_000}},
            headers=api.auth(),
        )

    assert put("a").status_code in (200, 201)
    assert put("b").status_code == 200
    refused = put("c")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "attributes"
    assert "would hold" in refused.json()["error"]["message"]
    event = {"email": "big@example.com", "type": "page.viewed", "attributes": {"d": "y" * 30_000}}
    refused = api.post_events([event])
    assert refused.status_code == 422, refused.text
    shown = api.get_contact("big@example.com").json()
    assert sorted(shown["contact"]["attributes"]) == ["a", "b"]  # nothing of the refused
    assert not [e for e in shown["timeline"] if "page.viewed" in e["summary"]]


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


@pytest.fixture
def hooks(sqlite_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(sqlite_url)
