"""U+0000 (NUL) in event data, on SQLite and on PostgreSQL (which cannot store it).

The track API and a generic webhook refuse it (422, the field named) and record nothing;
SendGrid and HubSpot events are kept with the character replaced by U+FFFD, since refusing a
provider's batch loses its good events with the bad one. Either way, never a 500, and the two
databases answer alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, select

from engine.errors import ValidationError
from engine.event_input import nul_problems, without_nul
from engine.models import Contact, Event, Suppression
from tests.support import events, make_runtime
from tests.test_api import Api, event, serve
from tests.test_api_webhooks import (
    PIPEDRIVE_SECRET,
    Hooks,
    body_of,
    by_source,
    deal_change,
    serve_hooks,
    sg_event,
)
from tests.test_api_webhooks import lifecycle as hubspot_lifecycle

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_db_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(database_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


@pytest.fixture
def hooks(database_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(database_url)


def fields_of(response: Any) -> list[str]:
    return [p["field"] for p in response.json()["error"]["problems"]]


# --- the walk itself -----------------------------------------------------------------------


def test_every_string_holding_nul_is_named_by_its_path_keys_included() -> None:
    value = {"a": "x\x00", "b": [1, {"c": "\x00"}], "d\x00": 1, "e.f": {"g": "ok"}}
    assert [path for path, _ in nul_problems(value, "properties")] == [
        "properties.a",
        "properties.b[1].c",
        'properties["d\\u0000"]',
    ]
    assert nul_problems({"a": "fine", "b": ["\\u0000 as text"]}, "p") == []
    assert without_nul(value) == {
        "a": "x\ufffd",
        "b": [1, {"c": "\ufffd"}],
        "d\ufffd": 1,
        "e.f": {"g": "ok"},
    }
    assert value["a"] == "x\x00"  # a copy: the input is left as it was


def test_the_walk_survives_nesting_deeper_than_the_recursion_limit() -> None:
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    assert nul_problems(deep, "p") == [("p" + "[0]" * 5000, nul_problems("\x00", "")[0][1])]
    cleaned = without_nul(deep)
    for _ in range(5000):
        cleaned = cleaned[0]
    assert cleaned == "\ufffd"


# --- POST /v1/events -----------------------------------------------------------------------


def test_a_nul_in_properties_is_422_naming_the_field(api: Api) -> None:
    # Given an event whose property holds a NUL
    body = event("x@example.com", properties={"a": "\x00"})
    # When it is sent
    response = api.post_events(body)
    # Then it is refused, naming properties.a, and nothing is recorded
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "properties.a"
    assert "U+0000" in error["message"]
    assert events(api.runtime) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attributes": {"first_name": "A\x00na"}}, "attributes.first_name"),
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
        ({"properties": {"items": [{"sku\x00": 1}]}}, 'properties.items[0]["sku\\u0000"]'),
        ({"email": "x\x00@example.com"}, "email"),
        ({"type": "page.viewed\x00"}, "type"),
        ({"timezone": "Europe/Madrid\x00"}, "timezone"),
    ],
)
def test_a_nul_anywhere_in_an_event_is_422_naming_it(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    response = api.post_events({**event("x@example.com"), **changes})
    assert response.status_code == 422, response.text
    assert fields_of(response) == [field]
    assert "U+0000" in response.json()["error"]["message"]
    assert events(api.runtime) == []


def test_one_nul_in_a_batch_of_500_names_it_and_records_nothing(api: Api) -> None:
    # Given 500 events, the fourth with a NUL in an attribute, the tenth in its key
    batch = [event(f"p{i}@example.com", idempotency_key=f"k{i}") for i in range(500)]
    batch[3]["attributes"] = {"first_name": "\x00"}
    batch[9]["idempotency_key"] = "k\x009"
    # When it is sent
    response = api.post_events({"events": batch})
    # Then both are named, nothing is recorded, and without them the batch goes in
    assert response.status_code == 422, response.text
    assert fields_of(response) == ["events[3].attributes.first_name", "events[9].idempotency_key"]
    assert events(api.runtime) == []
    batch[3]["attributes"] = {"first_name": "Ana"}
    batch[9]["idempotency_key"] = "k9"
    accepted = api.post_events({"events": batch})
    assert accepted.status_code == 202, accepted.text


def test_recording_refuses_a_nul_whoever_calls_it(database_url: str) -> None:
    runtime, _clock, _email = make_runtime(database_url)
    try:
        with pytest.raises(ValidationError) as raised:
            runtime.track("x@example.com", "page.viewed", {"note": ["ok", "\x00"]})
        assert raised.value.field == "properties.note[1]"
        with pytest.raises(ValidationError):
            runtime.track("x@example.com", "page.viewed", attributes={"\x00": 1})
        assert events(runtime) == []
    finally:
        runtime.close()


# --- webhooks ------------------------------------------------------------------------------


def test_a_sendgrid_bounce_with_a_nul_is_kept_marked_and_suppresses(hooks: Hooks) -> None:
    # Given a known contact, and a batch whose bounce reason (a remote server's text) has a NUL
    hooks.runtime.upsert_contact("ana@example.com")
    batch = [
        sg_event("delivered", "ana@example.com", 1),
        sg_event("bounce", "ana@example.com", 2, reason="550 no\x00such user", type="bounce"),
    ]
    # When SendGrid delivers it, twice
    first = hooks.sendgrid(body_of(batch))
    again = hooks.sendgrid(body_of(batch))
    # Then both events are recorded once, the NUL shown as U+FFFD, and the address suppressed
    assert first.status_code == 200, first.text
    assert (first.json()["recorded"], again.json()["duplicates"]) == (2, 2)
    bounce = [e for e in by_source(hooks.runtime, "sendgrid") if e.type == "email.bounced"]
    assert bounce[0].properties["reason"] == "550 no\ufffdsuch user"
    with Session(hooks.runtime.db) as session:
        assert session.exec(select(Suppression)).one().email == "ana@example.com"


def test_a_sendgrid_address_with_a_nul_is_rejected_as_invalid(hooks: Hooks) -> None:
    response = hooks.sendgrid(body_of([sg_event("open", "ana\x00@example.com", 1)]))
    assert response.status_code == 200, response.text
    (rejected,) = response.json()["rejected"]
    assert rejected.startswith("index 0: email: ") and "U+0000" in rejected
    assert events(hooks.runtime) == []


def test_a_hubspot_value_with_a_nul_is_kept_marked(hooks: Hooks) -> None:
    # Given a batch linking a contact, then a property change whose value holds a NUL
    batch = hubspot_lifecycle(501, "deal@example.com", 1_700_000_000_000)
    batch[1]["propertyValue"] = "cust\x00omer"
    batch[1]["objectId"] = "501"
    # When HubSpot delivers it
    response = hooks.hubspot(batch)
    # Then both are recorded, the value marked
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 2
    changed = by_source(hooks.runtime, "hubspot")[1]
    assert changed.properties["value"] == "cust\ufffdomer"


def test_a_hubspot_object_id_with_a_nul_is_no_500(hooks: Hooks) -> None:
    batch = hubspot_lifecycle(501, "deal@example.com", 1_700_000_000_000)
    batch[1]["objectId"] = "50\x001"
    response = hooks.hubspot(batch)
    assert response.status_code == 200, response.text
    assert (response.json()["recorded"], response.json()["unknown_contacts"]) == (1, 1)


def test_a_generic_payload_with_a_nul_in_a_mapped_field_is_422_naming_its_path(
    hooks: Hooks,
) -> None:
    # Given a Pipedrive change whose mapped status (and a nested key) hold a NUL
    payload = deal_change(7, "ana@example.com")
    payload["data"]["status"] = "op\x00en"
    payload["data"]["value"] = {"amount\x00": 5}
    # When it is sent, signed
    response = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    # Then it is refused, naming both paths, and nothing is recorded
    assert response.status_code == 422, response.text
    assert fields_of(response) == ["data.status", 'data.value["amount\\u0000"]']
    assert events(hooks.runtime) == []
    with Session(hooks.runtime.db) as session:
        assert session.exec(select(Contact)).all() == []
    # And a NUL in a field no rule maps is not stored, so not refused
    payload["data"]["status"] = "open"
    payload["data"]["value"] = 5
    payload["data"]["note"] = "\x00"
    accepted = hooks.generic("pipedrive", payload, secret=PIPEDRIVE_SECRET)
    assert accepted.status_code == 200, accepted.text
    assert json.dumps(by_source(hooks.runtime, "webhook:pipedrive")[0].properties)


def test_the_event_table_never_holds_a_nul(hooks: Hooks) -> None:
    hooks.runtime.upsert_contact("ana@example.com")
    hooks.sendgrid(body_of([sg_event("click", "ana@example.com", 1, url="https://x/\x00")]))
    with Session(hooks.runtime.db) as session:
        stored = session.exec(select(Event)).all()
    assert stored
    assert all(nul_problems(e.properties, "") == [] for e in stored)
