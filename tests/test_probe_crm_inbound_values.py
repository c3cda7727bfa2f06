"""Lone UTF-16 surrogates and NaN / Infinity from outside are refused, naming the field.

Python's JSON parser accepts ``"\\ud800"`` and ``NaN``; neither can be stored and shown
back: PostgreSQL refuses them (a 500 to the sender, who retries), and SQLite keeps them
where the contact's timeline cannot be served (a 500 on ``GET /v1/contacts/{email}`` for
good) or shows ``null``. A generic webhook source and ``POST /v1/events`` refuse them as
they refuse U+0000: 422, every field named, nothing recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.inbound_values import (
    NON_FINITE_MESSAGE,
    SURROGATE_MESSAGE,
    holds_unstorable,
    value_problems,
)
from tests.support import events, make_runtime
from tests.test_api import Api, serve
from tests.test_api_webhooks import SALESFORCE_SECRET, Hooks, serve_hooks

SURROGATE = "\ud800"


@pytest.fixture
def hooks(sqlite_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(sqlite_url)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def notification(n: int, stage: Any) -> dict[str, Any]:
    return {
        "id": f"04l{n}",
        "sObject": {"Id": f"006{n}", "StageName": stage, "Contact_Email__c": f"c{n}@example.com"},
    }


def post_events(api: Api, body: Any) -> httpx.Response:
    # Not ``json=``: the body must carry NaN as Python's encoder writes it.
    headers = {**api.auth(), "Content-Type": "application/json"}
    return api.http.post("/v1/events", content=json.dumps(body).encode(), headers=headers)


def test_values_are_walked_for_surrogates_and_non_finite_numbers_at_any_depth() -> None:
    # Given a value with a lone surrogate in a string and in a key, and NaN and -Infinity
    value = {"a": [1, f"x{SURROGATE}"], f"k{SURROGATE}": 2, "n": float("nan"), "m": -1e999}
    # Then every fault is named by its path, in document order, and the paths are text
    assert value_problems(value, "properties") == [
        ("properties.a[1]", SURROGATE_MESSAGE),
        ('properties["k\\ud800"]', "this key " + SURROGATE_MESSAGE),
        ("properties.n", NON_FINITE_MESSAGE),
        ("properties.m", NON_FINITE_MESSAGE),
    ]
    deep: Any = "ok"
    for _ in range(5000):
        deep = [deep]
    assert value_problems(deep, "p") == []
    # a surrogate pair written as two escapes is one character, and fine
    assert not holds_unstorable(json.loads('{"e": "\\ud83d\\ude00", "x": 1.5}'))


def test_a_generic_batch_holding_a_lone_surrogate_is_422_and_records_nothing(
    hooks: Hooks,
) -> None:
    # Given a Salesforce batch whose second notification's stage holds a lone surrogate
    payload = {"notifications": [notification(1, "Closed Won"), notification(2, SURROGATE)]}
    # When it is delivered, signed
    response = hooks.generic("salesforce", payload, secret=SALESFORCE_SECRET)
    # Then it is refused naming the field, and nothing of the batch is recorded
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "notifications[1].sObject.StageName"
    assert "surrogate" in error["message"]
    assert events(hooks.runtime) == []


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_a_generic_batch_holding_nan_or_infinity_is_422_and_records_nothing(
    hooks: Hooks, number: float
) -> None:
    payload = {"notifications": [notification(1, {"probability": number})]}
    response = hooks.generic("salesforce", payload, secret=SALESFORCE_SECRET)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"] == [
        {"field": "notifications[0].sObject.StageName.probability", "message": NON_FINITE_MESSAGE}
    ]
    assert events(hooks.runtime) == []


def test_the_events_api_refuses_surrogates_and_nan_naming_every_field(api: Api) -> None:
    # Given a batch whose second event has a surrogate in a property and NaN in an attribute
    body = {
        "events": [
            {"email": "a@example.com", "type": "page.viewed"},
            {
                "email": "b@example.com",
                "type": "page.viewed",
                "properties": {"note": f"hi {SURROGATE}"},
                "attributes": {"ltv": float("nan")},
            },
        ]
    }
    # When it is posted
    response = post_events(api, body)
    # Then every field is named, and nothing is recorded
    assert response.status_code == 422, response.text
    fields = [p["field"] for p in response.json()["error"]["problems"]]
    assert fields == [
        "events[1].properties.note",
        "events[1].attributes.ltv",
    ]
    assert events(api.runtime) == []


def test_the_contacts_api_refuses_surrogates_and_nan_in_attributes(api: Api) -> None:
    # Given attributes holding NaN and a lone surrogate
    body = {"attributes": {"ltv": float("nan"), "nick": SURROGATE}}
    # When a contact is put with them
    headers = {**api.auth(), "Content-Type": "application/json"}
    response = api.http.put(
        "/v1/contacts/ana@example.com", content=json.dumps(body).encode(), headers=headers
    )
    # Then both are named, and no contact is written
    assert response.status_code == 422, response.text
    problems = response.json()["error"]["problems"]
    assert [p["field"] for p in problems] == ["attributes.ltv", "attributes.nick"]
    assert api.get_contact("ana@example.com").status_code == 404


def test_mending_walks_tuples_as_lists() -> None:
    from engine.inbound_values import without_unstorable

    assert without_unstorable({"a": ("\ud800", float("nan"))}) == {"a": ["\ufffd", None]}
