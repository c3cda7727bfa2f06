"""What an integrator meets at the HTTP API's edges: an idempotency key reused for another
event, refused keys an operator can trace, bodies that say they are not JSON, methods and
paths the API does not serve, and the OpenAPI document's error answers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, col, select

from engine.api_keys import revoke
from engine.db import transaction
from engine.models import Contact, Event
from tests.support import make_runtime
from tests.test_api import Api, add_key, serve


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        for served in serve(runtime, clock, email):
            served.keys["writer"] = add_key(runtime, "writer", "events:write")
            yield served
    finally:
        runtime.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The service on SQLite, and on PostgreSQL (whose batches take another code path's
    statements and a sequence for ids)."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_db_url")
    runtime, clock, email = make_runtime(url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def event(email: str, type_: str = "page.viewed", **extra: Any) -> dict[str, Any]:
    return {"email": email, "type": type_, **extra}


def api_events(api: Api) -> list[tuple[str, str]]:
    with Session(api.runtime.db) as session:
        rows = session.exec(
            select(Contact.email, Event.type)
            .join(Contact, col(Contact.id) == col(Event.contact_id))
            .where(Event.source == "api")
            .order_by(col(Event.id))
        ).all()
    return [(email, type_) for email, type_ in rows]


# --- idempotency keys -------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_event_is_a_duplicate(any_api: Api) -> None:
    api = any_api
    # Given an order sent with a key and a time with an offset
    sent = event(
        "ana@example.com",
        "order.completed",
        idempotency_key="o-1",
        properties={"total": 120},
        occurred_at="2026-01-05T10:00:00+01:00",
    )
    first = api.post_events(sent)
    assert first.status_code == 202, first.text
    # When it is sent again, the same instant written in UTC and the address in capitals
    again = api.post_events(
        {**sent, "email": "Ana@Example.com", "occurred_at": "2026-01-05T09:00:00Z"}
    )
    # Then it is the same event, recorded once
    assert again.status_code == 202, again.text
    assert again.json()["events"][0] == {**first.json()["events"][0], "duplicate": True}
    assert api_events(api) == [("ana@example.com", "order.completed")]


def test_a_key_reused_for_another_event_is_refused_naming_it(any_api: Api) -> None:
    api = any_api
    # Given an order recorded under the key o-1
    assert api.post_events(event("ana@example.com", "order.completed", idempotency_key="o-1"))
    # When the same key comes with another type, and with another contact
    other_type = api.post_events(event("ana@example.com", "trial.started", idempotency_key="o-1"))
    other_contact = api.post_events(
        event("bo@example.com", "order.completed", idempotency_key="o-1")
    )
    # Then each is refused, naming the key and what differs, rather than a 202 "duplicate"
    # for an event that was never recorded
    for response, differs in ((other_type, "type"), (other_contact, "email")):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "idempotency_key"
        assert "'o-1' was already used for another event" in error["message"]
        assert f"differs in {differs}" in error["message"]
        assert "ana@example.com" not in error["message"]  # nothing of the stored event
    assert api_events(api) == [("ana@example.com", "order.completed")]


def test_a_batch_reusing_a_key_for_another_event_records_nothing(any_api: Api) -> None:
    api = any_api
    # Given a stored event under the key k
    assert api.post_events(event("ana@example.com", idempotency_key="k")).status_code == 202
    # When a batch holds good events, a true retry of k, and two events sharing a new key
    batch = [
        event("bo@example.com"),
        event("ana@example.com", idempotency_key="k"),
        event("cy@example.com", "trial.started", idempotency_key="n"),
        event("dee@example.com", "trial.started", idempotency_key="n"),
        event("ana@example.com", properties={"path": "/x"}, idempotency_key="k"),
    ]
    response = api.post_events({"events": batch})
    # Then the batch is refused whole, naming each reused key's position
    assert response.status_code == 422, response.text
    problems = response.json()["error"]["problems"]
    assert [p["field"] for p in problems] == [
        "events[3].idempotency_key",
        "events[4].idempotency_key",
    ]
    assert "differs in email" in problems[0]["message"]
    assert "differs in properties" in problems[1]["message"]
    # And nothing of it was written: no contact, no event
    assert api_events(api) == [("ana@example.com", "page.viewed")]
    assert api.get_contact("bo@example.com").status_code == 404
    assert api.get_contact("cy@example.com").status_code == 404


# --- refused keys, as an operator sees them -----------------------------------------------


def test_a_refused_key_is_logged_by_prefix_and_client_never_whole(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a revoked key, an unknown one, a malformed one and a key without the scope
    revoked = add_key(api.runtime, "old", "events:write")
    prefix = revoked.split("_")[1]
    with transaction(api.runtime.db) as session:
        revoke(session, prefix, api.runtime.clock.now())
    unknown = "jl_0badc0de_" + "s" * 43
    malformed = "sk_live_" + "t" * 30
    reader = api.keys["reader"]
    caplog.set_level(logging.WARNING, logger="engine.api.auth")
    # When each is used
    for key in (revoked, unknown, malformed, reader):
        response = api.http.post(
            "/v1/events", json=event("ana@example.com"), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code in (401, 403), response.text
    assert api.http.post("/v1/events", json=event("ana@example.com")).status_code == 401
    # Then each refusal is one line naming the route, the client and the key by its prefix
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.api.auth"]
    assert lines == [
        f"401 POST /v1/events from 127.0.0.1: API key {prefix} was revoked",
        "401 POST /v1/events from 127.0.0.1: API key 0badc0de is unknown",
        f"401 POST /v1/events from 127.0.0.1: malformed API key ({len(malformed)} characters)",
        f"403 POST /v1/events from 127.0.0.1: API key {reader.split('_')[1]} lacks the scope "
        "'events:write'",
        "401 POST /v1/events from 127.0.0.1: no API key",
    ]
    # And no secret, nor any part of a malformed key, is logged
    logged = "\n".join(lines)
    for key in (revoked, unknown, reader):
        assert key.split("_", 2)[2] not in logged
    assert "sk_live" not in logged and "tttt" not in logged
    # And the client is told which key it sent, by the same prefix
    assert (
        "API key 0badc0de is unknown"
        in api.http.post(
            "/v1/events",
            json=event("a@example.com"),
            headers={"Authorization": f"Bearer {unknown}"},
        ).json()["error"]["message"]
    )


class FakeRequest:
    """What ``RefusalLog`` reads of a request."""

    def __init__(self, host: str) -> None:
        self.client = type("Client", (), {"host": host})()
        self.method = "POST"
        self.scope: dict[str, Any] = {}


def test_a_client_failing_again_and_again_is_logged_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from engine.api.auth import RefusalLog  # new here: imported where it is used

    # Given a refusal log on a clock the test moves
    now = [0.0]
    refusals = RefusalLog(every_s=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="engine.api.auth")
    key = "jl_0badc0de_secret"
    # When one client sends the same bad key 5 times in a minute, and another client once
    for _ in range(5):
        refusals.refused(FakeRequest("10.0.0.1"), 401, "API key 0badc0de is unknown", key)  # type: ignore[arg-type]
    refusals.refused(FakeRequest("10.0.0.2"), 401, "API key 0badc0de is unknown", key)  # type: ignore[arg-type]
    # And once more a minute later
    now[0] = 61.0
    refusals.refused(FakeRequest("10.0.0.1"), 401, "API key 0badc0de is unknown", key)  # type: ignore[arg-type]
    # Then the first client's line came once, then with the count held back
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.api.auth"]
    assert lines == [
        "401 POST unmatched from 10.0.0.1: API key 0badc0de is unknown",
        "401 POST unmatched from 10.0.0.2: API key 0badc0de is unknown",
        "401 POST unmatched from 10.0.0.1: API key 0badc0de is unknown "
        "(4 more refused from this client since the last line)",
    ]
    # And a client trying a new key on every request is one line a minute too
    caplog.clear()
    for n in range(50):
        refusals.refused(FakeRequest("10.0.0.3"), 401, f"API key {n:08x} is unknown", key)  # type: ignore[arg-type]
    assert len([r for r in caplog.records if r.name == "engine.api.auth"]) == 1


def test_only_a_key_shaped_prefix_is_ever_shown() -> None:
    from engine.api.auth import shown_prefix  # new here: imported where it is used

    assert shown_prefix("jl_0badc0de_secret") == "key 0badc0de"
    assert shown_prefix("jl_NOTHEX!!_secret") == "a malformed key (18 characters)"
    assert shown_prefix("hunter2") == "a malformed key (7 characters)"
    assert shown_prefix(None) == "no key"


# --- content types ----------------------------------------------------------------------------


def test_a_form_body_is_refused_naming_the_content_type(api: Api) -> None:
    # When curl -d sends the event as a form (no -H 'Content-Type: application/json')
    response = api.http.post(
        "/v1/events", data={"email": "ana@example.com", "type": "page.viewed"}, headers=api.auth()
    )
    # Then the answer says what to change, not "Input should be a valid dictionary"
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "content-type"
    assert "application/x-www-form-urlencoded' is not JSON" in error["message"]
    assert "Content-Type: application/json" in error["message"]


def test_a_json_body_without_a_content_type_is_read_as_json(api: Api) -> None:
    # When a client sends JSON without saying so
    response = api.http.post(
        "/v1/events",
        content=b'{"email": "ana@example.com", "type": "page.viewed"}',
        headers=api.auth(),
    )
    # Then it is recorded, as with the header; a JSON type with a charset or a suffix too
    assert response.status_code == 202, response.text
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = api.http.post(
            "/v1/events",
            json=event("bo@example.com"),
            headers={**api.auth(), "Content-Type": content_type},
        )
        assert response.status_code == 202, (content_type, response.text)


# --- methods and paths ------------------------------------------------------------------------


def test_a_method_not_served_lists_every_method_of_the_path(api: Api) -> None:
    # When PATCH is sent where GET, PUT and DELETE are served
    response = api.http.patch("/v1/contacts/ana@example.com", headers=api.auth(), json={})
    # Then Allow names all three, and so does the message
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT, DELETE"
    assert response.json()["error"]["message"] == (
        "method PATCH is not allowed at this path: use GET, PUT or DELETE"
    )
    assert api.http.get("/v1/events", headers=api.auth()).headers["allow"] == "POST"


def test_a_trailing_slash_is_a_404_that_says_so_not_a_redirect(api: Api) -> None:
    # When an event is posted to /v1/events/ (behind a TLS proxy Starlette's redirect went to
    # http://, and clients drop the Authorization header when they follow it)
    response = api.http.post("/v1/events/", json=event("ana@example.com"), headers=api.auth())
    # Then it is not redirected, and the answer says what to change
    assert response.status_code == 404, response.text
    assert "location" not in response.headers
    assert "drop the trailing '/'" in response.json()["error"]["message"]
    unknown = api.http.get("/v1/nothing", headers=api.auth())
    assert unknown.status_code == 404
    assert "trailing" not in unknown.json()["error"]["message"]


# --- the OpenAPI document ---------------------------------------------------------------------


def test_the_openapi_document_lists_the_body_errors_only_where_a_body_is_read(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    post_events = paths["/v1/events"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(post_events)
    assert {"400", "413"} <= set(paths["/v1/contacts/{email}"]["put"]["responses"])
    # A GET or a DELETE never reads a body: no 413 for them
    assert "413" not in paths["/v1/contacts/{email}"]["get"]["responses"]
    assert "413" not in paths["/v1/contacts/{email}"]["delete"]["responses"]


def test_health_checks_answer_head_as_monitors_send_it(api: Api) -> None:
    # When a load balancer probes with HEAD
    alive = api.http.head("/healthz")
    ready = api.http.head("/readyz")
    # Then it gets the status a GET would, without a body
    assert alive.status_code == 200 and alive.content == b""
    assert ready.status_code == api.http.get("/readyz").status_code
    assert ready.content == b""
    # And the OpenAPI document still shows GET only
    paths = api.http.get("/openapi.json").json()["paths"]
    assert set(paths["/healthz"]) == {"get"}


def test_a_number_too_long_to_parse_is_named_without_python_advice(api: Api) -> None:
    body = b'{"email": "ana@example.com", "type": "page.viewed", "properties": {"n": '
    response = api.http.post(
        "/v1/events",
        content=body + b"9" * 5000 + b"}}",
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "value has 5000 digits" in message
    assert "sys.set_int_max_str_digits" not in message


def test_every_422_lists_its_problems_whichever_check_refused_it(api: Api) -> None:
    """A schema's 422 and a value's (a bad time zone) have the same shape."""
    schema = api.post_events({"email": "a@example.com"})
    value = api.post_events({"email": "a@example.com", "type": "x.y", "timezone": "Mars/Base"})
    for response in (schema, value):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["problems"][0]["field"] == error["field"], error
    assert [p["field"] for p in value.json()["error"]["problems"]] == ["timezone"]
    # and one a ValidationError raised past the schema's and the events' checks
    stage = api.http.put(
        "/v1/contacts/a@example.com", json={"stage": "nowhere"}, headers=api.auth()
    )
    assert stage.status_code == 422, stage.text
    assert stage.json()["error"]["problems"] == [
        {"field": "stage", "message": stage.json()["error"]["message"]}
    ]
