"""SendGrid and HubSpot text holding a lone UTF-16 surrogate, or a NaN, is kept, marked.

Their events are a third party's words (a bounce reason, a CRM value); as with U+0000, the
event is kept with the character replaced by U+FFFD (and NaN or Infinity by null), so that
neither the database nor the contact's timeline is left unable to hold or show it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from engine.inbound_values import without_unstorable
from tests.support import events
from tests.test_api import add_key
from tests.test_api_webhooks import Hooks, body_of, serve_hooks, sg_event

LONE = "\ud800"


@pytest.fixture
def hooks(sqlite_url: str) -> Iterator[Hooks]:
    yield from serve_hooks(sqlite_url)


def test_a_sendgrid_bounce_reason_with_a_lone_surrogate_is_kept_marked(hooks: Hooks) -> None:
    # Given a known contact and a bounce whose reason holds a lone surrogate and a NaN
    hooks.runtime.upsert_contact("gone@example.com")
    bounce = sg_event("bounce", "gone@example.com", 1, type="bounce", reason=f"5.1.1 {LONE}")
    bounce["status"] = float("nan")
    # When SendGrid delivers it
    response = hooks.sendgrid(body_of([bounce]))
    # Then it is recorded, the surrogate marked, and the contact's timeline still serves
    assert response.status_code == 200, response.text
    (recorded,) = [e for e in events(hooks.runtime) if e.type == "email.bounced"]
    assert recorded.properties["reason"] == "5.1.1 \ufffd"
    key = add_key(hooks.runtime, "reader", "contacts:read")
    shown = hooks.http.get(
        "/v1/contacts/gone@example.com", headers={"Authorization": f"Bearer {key}"}
    )
    assert shown.status_code == 200, shown.text
    assert "5.1.1 \ufffd" in json.dumps(shown.json(), ensure_ascii=False)


def test_without_unstorable_marks_strings_and_keys_and_nulls_non_finite_numbers() -> None:
    value = {f"k{LONE}": [f"a{LONE}b", float("inf"), 1.5], "ok": "fine"}
    assert without_unstorable(value) == {"k\ufffd": ["a\ufffdb", None, 1.5], "ok": "fine"}
    clean = {"a": [1, "b"]}
    assert without_unstorable(clean) is clean
    deep: list[object] = [LONE]
    for _ in range(5000):
        deep = [deep]
    marked = without_unstorable(deep)
    for _ in range(5000):
        marked = marked[0]
    assert marked == ["\ufffd"]
