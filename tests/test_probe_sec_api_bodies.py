"""Bodies the JSON parser itself refuses, on the API-key routes: answered as the webhooks
answer them (engine/api/webhooks.py), naming the body and saying why, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import events, make_runtime
from tests.test_api import Api, serve

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INTEGER = (
    b'{"email": "ana@example.com", "type": "x", "properties": {"n": ' + b"9" * 5000 + b"}}"
)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _post(api: Api, path: str, body: bytes, method: str = "POST") -> tuple[int, dict[str, str]]:
    headers = {**api.auth(), "Content-Type": "application/json"}
    response = api.http.request(method, path, content=body, headers=headers)
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/events"), ("PUT", "/v1/contacts/ana@example.com")]
)
def test_a_body_nested_too_deeply_is_400_naming_the_body(api: Api, method: str, path: str) -> None:
    # Given a body of 100,000 nested arrays, When it is sent with a good key
    status, error = _post(api, path, DEEP, method)
    # Then it is 400 saying why, as the webhooks answer it; nothing is recorded
    assert status == 400
    assert error["field"] == "body"
    assert "nested too deeply" in error["message"]
    assert events(api.runtime) == []


def test_a_number_too_long_to_parse_is_422_naming_the_body(api: Api) -> None:
    # Given an event whose property is an integer of 5,000 digits (Python refuses to parse
    # more than 4,300: a guard against quadratic conversion)
    status, error = _post(api, "/v1/events", HUGE_INTEGER)
    # Then it is 422 "not valid JSON", as a webhook's is, not a vague 400
    assert status == 422
    assert error["field"] == "body"
    assert error["message"].startswith("body: not valid JSON")
    assert events(api.runtime) == []
