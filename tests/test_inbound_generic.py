"""Generic webhook sources: declarations, paths, matching, times and keys (no HTTP here;
tests/test_api_webhooks.py drives the endpoint)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import WorkflowDefinitionError
from engine.inbound_generic import (
    PRESENT,
    MapEvent,
    MappingProblems,
    WebhookSource,
    load_sources,
    map_payload,
)
from engine.inbound_generic import resolve as resolve_path
from workflows.inbound import PIPEDRIVE, SALESFORCE

WON = MapEvent(
    "deal.won",
    email="person.email",
    when={"kind": "deal", "stage": "won"},
    properties={"amount": "deal.amount", "first_item": "deal.items.0.sku"},
    occurred_at="at",
)
SOURCE = WebhookSource("crm", maps=[WON])


def payload(**changes: object) -> dict:
    base: dict = {
        "kind": "deal",
        "stage": "won",
        "person": {"email": "Ana@Example.com"},
        "deal": {"amount": 1200, "items": [{"sku": "pro"}, {"sku": "seat"}]},
        "at": 1_763_890_200,
    }
    base.update(changes)
    return base


def test_paths_reach_into_objects_and_lists() -> None:
    (event,) = map_payload(SOURCE, payload())
    assert event.email == "ana@example.com"
    assert event.properties == {"amount": 1200, "first_item": "pro"}
    assert resolve_path({"a": [1, 2]}, "a.1") == 2
    # a property whose path leads nowhere is left out, not an error
    (bare,) = map_payload(SOURCE, payload(deal={"amount": 5, "items": []}))
    assert bare.properties == {"amount": 5}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_763_890_200, datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
        (1_763_890_200_000, datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
        ("1763890200", datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
        ("2025-11-23T09:30:00Z", datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
        ("2025-11-23T10:30:00+01:00", datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
        ("2025-11-23T09:30:00", datetime(2025, 11, 23, 9, 30, tzinfo=UTC)),
    ],
)
def test_times_in_seconds_milliseconds_or_iso_8601(value: object, expected: datetime) -> None:
    (event,) = map_payload(SOURCE, payload(at=value))
    assert event.occurred_at == expected


def test_a_payload_no_rule_matches_maps_to_nothing() -> None:
    assert map_payload(SOURCE, payload(stage="lost")) == []
    assert map_payload(SOURCE, ["not", "an", "object"]) == []
    present = WebhookSource("p", maps=[MapEvent("x.y", email="e", when={"flag": PRESENT})])
    assert map_payload(present, {"e": "a@example.com", "flag": None}) == []
    assert len(map_payload(present, {"e": "a@example.com", "flag": 0})) == 1


def test_every_problem_of_a_matching_payload_is_named() -> None:
    with pytest.raises(MappingProblems) as raised:
        map_payload(SOURCE, payload(person={"email": 42}, at=True))
    assert raised.value.problems == [
        ("person.email", "must be a string (an email address)"),
        ("at", "True is not a time (ISO 8601, unix seconds or milliseconds)"),
    ]


def test_each_maps_every_item_and_needs_a_list() -> None:
    batch = {"notifications": [{"id": "1", "sObject": {"Contact_Email__c": "a@example.com"}}]}
    (event,) = map_payload(SALESFORCE, batch)
    assert event.type == "opportunity.stage_changed"
    with pytest.raises(MappingProblems) as raised:
        map_payload(SALESFORCE, {"notifications": {"id": "1"}})
    assert raised.value.problems == [("notifications", "must be a list")]


def test_keys_identify_an_event_not_its_delivery() -> None:
    base = {
        "meta": {
            "entity": "deal",
            "action": "change",
            "id": "m1",
            "entity_id": "7",
            "timestamp": 1,
        },
        "data": {"person_email": "a@example.com", "stage_id": 3},
        "previous": {"stage_id": 2},
    }
    (first,) = map_payload(PIPEDRIVE, base)
    retried = {**base, "meta": {**base["meta"], "attempt": 2}}
    (again,) = map_payload(PIPEDRIVE, retried)
    assert first.key == again.key
    other = {**base, "meta": {**base["meta"], "id": "m2"}}
    assert map_payload(PIPEDRIVE, other)[0].key != first.key
    # without a declared key, the content is the identity
    (plain,) = map_payload(SOURCE, payload())
    assert plain.key.startswith("body:")
    assert map_payload(SOURCE, payload())[0].key == plain.key
    assert map_payload(SOURCE, payload(at=5))[0].key != plain.key


def test_loading_sources(tmp_path: Path) -> None:
    # the default module may be absent; a named one must exist and declare SOURCES
    assert load_sources(None, workflows="no_such_playbook") == {}
    assert load_sources(None, workflows="workflows").keys() == {"pipedrive", "salesforce"}
    with pytest.raises(ModuleNotFoundError):
        load_sources("no_such_module_anywhere", workflows="workflows")
    (tmp_path / "jl_no_sources.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(WorkflowDefinitionError, match="defines no SOURCES"):
            load_sources("jl_no_sources", workflows="workflows")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("jl_no_sources", None)
