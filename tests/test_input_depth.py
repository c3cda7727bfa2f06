"""What the contacts API and the track API refuse inside properties and attributes: U+0000
(PostgreSQL cannot store it) and nesting deeper than 32 levels (the contact could no longer
be read back), each a 422 naming the field, nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_api import Api, api, event  # noqa: F401  (the api fixture)


def nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = {"a": value}
    return value


def put(api: Api, email: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]  # noqa: F811
    return api.http.put(f"/v1/contacts/{email}", json=body, headers=api.auth())


def test_a_property_nested_too_deep_is_refused_and_one_at_the_limit_reads_back(
    api: Api,  # noqa: F811
) -> None:
    refused = api.post_events(event("ana@example.com", properties={"x": nested(40)}))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "properties"
    assert "nested deeper than 32" in refused.json()["error"]["message"]
    kept = api.post_events(event("ana@example.com", properties={"x": nested(30)}))
    assert kept.status_code == 202, kept.text
    api.runtime.drain()
    assert api.get_contact("ana@example.com").status_code == 200


@pytest.mark.parametrize(
    ("attributes", "field", "message"),
    [
        ({"plan": "pro\u0000"}, "attributes.plan", "NUL character"),
        ({"tree": nested(40)}, "attributes", "nested deeper than 32"),
    ],
    ids=["NUL", "too deep"],
)
def test_the_contacts_api_refuses_what_it_could_not_store_or_read_back(
    api: Api,  # noqa: F811
    attributes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    answer = put(api, "bo@example.com", {"attributes": attributes})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert message in answer.json()["error"]["message"]
    assert api.get_contact("bo@example.com").status_code == 404  # nothing stored
