"""Authentication comes before the body: a request to an authenticated route without a usable
key is answered 401 (a key without the scope 403) before its body is read, parsed or
validated, so the caller learns nothing of the schema and the server parses nothing of
theirs. Webhooks, which authenticate by a signature over the raw body, refuse a bad one before
the payload is interpreted."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import event as sa_event

from connectors.webhooks.signatures import (
    HUBSPOT_SIGNATURE_V3_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    JOURNEYLINE_SIGNATURE_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
)
from engine.api.auth import VerifiedKeys
from engine.api_keys import revoke
from engine.db import transaction
from tests.support import events, make_runtime
from tests.test_api import Api, add_key, serve
from tests.test_api_webhooks import Hooks, serve_hooks

MALFORMED = b'{"email": "ana@example.com", "type": '
JSON = {"Content-Type": "application/json"}
# A path for each authenticated operation; the body is sent to all, read only by PUT and POST.
PATHS = {"{email}": "ana@example.com"}


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        for served in serve(runtime, clock, email):
            served.keys["writer"] = add_key(runtime, "writer", "events:write")
            yield served
    finally:
        runtime.close()


@pytest.fixture
def hooks(sqlite_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(sqlite_url)


def secured_operations(api: Api) -> list[tuple[str, str]]:
    schema = api.http.get("/openapi.json").json()
    found = [
        (method.upper(), path.format(**{k.strip("{}"): v for k, v in PATHS.items()}))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert len(found) == 7  # POST events; PUT, GET, DELETE contacts; GET export; reports (2)
    return found


def send(api: Api, method: str, path: str, body: bytes, key: str | None) -> httpx.Response:
    headers = dict(JSON)
    if key is not None:
        headers.update(api.auth(key))
    return api.http.request(method, path, content=body, headers=headers)


def assert_error(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"]
    assert error["field"] == ("body" if status in (413, 422) else "authorization")


# --- API keys before bodies -----------------------------------------------------------------


def test_malformed_json_without_a_key_is_401_on_every_authenticated_route(api: Api) -> None:
    for method, path in secured_operations(api):
        # When malformed JSON arrives without a key
        response = send(api, method, path, MALFORMED, key=None)
        # Then it is 401 asking for a key, with nothing said about the body
        assert_error(response, 401, "missing API key")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "JSON" not in response.text
    assert events(api.runtime) == []


def test_malformed_json_with_an_unknown_or_malformed_key_is_401(api: Api) -> None:
    for presented, says in (("jl_00000000_nope", "unknown"), ("hunter2", "malformed")):
        response = api.http.post(
            "/v1/events",
            content=MALFORMED,
            headers={**JSON, "Authorization": f"Bearer {presented}"},
        )
        assert_error(response, 401, says)


def test_malformed_json_with_a_revoked_key_is_401(api: Api) -> None:
    # Given a key that was revoked
    prefix = api.keys["writer"].split("_")[1]
    with transaction(api.runtime.db) as session:
        revoke(session, prefix, api.clock.now())
    for method, path in secured_operations(api):
        # When it sends malformed JSON
        response = send(api, method, path, MALFORMED, key="writer")
        # Then it is refused as revoked, not told about the body
        assert_error(response, 401, f"API key {prefix} was revoked")


def test_a_key_without_the_scope_is_403_whatever_the_body(api: Api) -> None:
    cases = [
        ("POST", "/v1/events", "reader", "events:write"),
        ("PUT", "/v1/contacts/ana@example.com", "reader", "contacts:write"),
        ("DELETE", "/v1/contacts/ana@example.com", "reader", "contacts:write"),
        ("GET", "/v1/contacts/ana@example.com", "writer", "contacts:read"),
    ]
    for method, path, key, scope in cases:
        response = send(api, method, path, MALFORMED, key=key)
        assert_error(response, 403, scope)
    assert events(api.runtime) == []


def test_a_valid_key_with_malformed_json_is_422_as_before(api: Api) -> None:
    for path in ("/v1/events", "/v1/contacts/ana@example.com"):
        method = "POST" if path == "/v1/events" else "PUT"
        response = send(api, method, path, MALFORMED, key="all")
        assert_error(response, 422, "body: not valid JSON")
    # And a well-formed body of the wrong shape still names the field
    wrong = api.post_events({"email": "ana@example.com"})
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"]["field"] == "type"


def test_a_body_that_is_not_json_without_a_key_is_401(api: Api) -> None:
    response = api.http.post("/v1/events", content=b"<xml/>", headers={"Content-Type": "text/xml"})
    assert_error(response, 401, "missing API key")
    # And with a key it is refused as invalid, as before
    with_key = api.http.post(
        "/v1/events", content=b"<xml/>", headers={"Content-Type": "text/xml", **api.auth()}
    )
    assert with_key.status_code == 422, with_key.text


# --- bodies that are never read -------------------------------------------------------------


def exchange(api: Api, head: list[str], body: bytes = b"") -> bytes:
    """Sends a raw HTTP/1.1 request (its body possibly short of what it declares) and returns
    what the server answers first; a server waiting for the rest of the body times out."""
    url = urlsplit(str(api.http.base_url))
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        lines = [*head, f"Host: {url.hostname}", "Connection: close", "", ""]
        sock.sendall("\r\n".join(lines).encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer: the server is waiting for the body ({answer!r})")
            if not chunk:
                break
            answer += chunk
        return answer


def test_an_oversized_body_without_a_key_is_401_and_never_asked_for(api: Api) -> None:
    # Given a request declaring 100 MiB that waits for "100 Continue" before sending it
    head = [
        "POST /v1/events HTTP/1.1",
        "Content-Type: application/json",
        f"Content-Length: {100 * 2**20}",
        "Expect: 100-continue",
    ]
    # When it has no key, then it is 401 straight away: the body is never asked for
    assert exchange(api, head).startswith(b"HTTP/1.1 401 ")
    # And with a key it is 413, still without the body being asked for
    keyed = [*head, f"Authorization: Bearer {api.keys['all']}"]
    assert exchange(api, keyed).startswith(b"HTTP/1.1 413 ")


def test_a_body_under_the_limit_without_a_key_is_401_before_it_arrives(api: Api) -> None:
    # Given a request that declares 64 KiB and sends only its first bytes
    head = [
        "POST /v1/events HTTP/1.1",
        "Content-Type: application/json",
        f"Content-Length: {64 * 1024}",
    ]
    # Then it is answered 401 without waiting for the rest
    assert exchange(api, head, MALFORMED).startswith(b"HTTP/1.1 401 ")


# --- keys are verified once ----------------------------------------------------------------


def test_a_key_is_read_from_the_database_once_per_request_and_then_cached(api: Api) -> None:
    # Given a count of the statements that read API keys
    reads: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_keys" in statement:
            reads.append(statement)

    sa_event.listen(api.runtime.db, "before_cursor_execute", note)
    try:
        # When a key is used twice, a fresh process cache in front of the database
        api.app.state.verified_keys = VerifiedKeys()
        first = api.post_events({"email": "ana@example.com", "type": "page.viewed"})
        assert first.status_code == 202, first.text
        # Then the first request read it once (not once before the body and once after)
        assert len(reads) == 1
        second = api.post_events({"email": "bo@example.com", "type": "page.viewed"})
        assert second.status_code == 202, second.text
        # And the second did not read it at all
        assert len(reads) == 1
    finally:
        sa_event.remove(api.runtime.db, "before_cursor_execute", note)


# --- webhooks: the signature before the payload ---------------------------------------------


def test_webhooks_refuse_a_missing_or_bad_signature_before_reading_the_payload(
    hooks: Hooks,
) -> None:
    unsigned: dict[str, dict[str, str]] = {"sendgrid": {}, "hubspot": {}, "pipedrive": {}}
    badly_signed = {
        "sendgrid": {SENDGRID_SIGNATURE_HEADER: "!!not base64", SENDGRID_TIMESTAMP_HEADER: "1"},
        "hubspot": {
            HUBSPOT_SIGNATURE_V3_HEADER: "bm9wZQ==",
            HUBSPOT_TIMESTAMP_HEADER: str(int(hooks.runtime.clock.now().timestamp() * 1000)),
        },
        "pipedrive": {JOURNEYLINE_SIGNATURE_HEADER: "t=1,v1=zz"},
    }
    for endpoint in ("sendgrid", "hubspot", "pipedrive"):
        for headers, status in ((unsigned[endpoint], 401), (badly_signed[endpoint], 403)):
            response = hooks.http.post(
                f"/v1/webhooks/{endpoint}", content=MALFORMED, headers={**JSON, **headers}
            )
            assert response.status_code == status, (endpoint, response.text)
            assert "JSON" not in response.json()["error"]["message"]
    assert events(hooks.runtime) == []
