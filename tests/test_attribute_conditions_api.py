"""Attribute changes through the HTTP API turn conditions true: ``PUT /v1/contacts/{email}``
(no event of the caller's: the engine records ``contact.updated``) and ``POST /v1/events``
batches, which are recorded in bulk (SQLite and PostgreSQL each have their own statements),
each event keeping what its attributes replaced as recording it alone would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, col, select

from engine import build_registry, lifecycle_journey
from engine.api.events import SOURCE, EventIn, record_one
from engine.db import transaction
from engine.models import Contact, Event
from engine.recording_batch import record_batch
from engine.runtime import Runtime
from tests.language_support import TEMPLATES
from tests.support import enrollments, events, make_runtime, reset_postgres
from tests.test_api import Api, event, serve
from tests.test_attribute_conditions import EVENTS, enterprise_welcome, pro_welcome
from workflows.rules import RULES


def with_plan_workflows(runtime: Runtime) -> Runtime:
    runtime.registry = build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=[pro_welcome(), enterprise_welcome()],
        templates_dir=TEMPLATES,
        events=EVENTS,
    )
    return runtime


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_db_url")
    runtime, clock, email = make_runtime(url)
    try:
        yield from serve(with_plan_workflows(runtime), clock, email)
    finally:
        runtime.close()


def sent(api: Api) -> list[str]:
    return sorted(m.categories[1] for m in api.email.sent)


def test_put_changing_the_plan_joins_the_segment(api: Api) -> None:
    # Given a contact on the free plan, imported through the API
    url = "/v1/contacts/dee@example.com"
    created = api.http.put(url, json={"attributes": {"plan": "free"}}, headers=api.auth())
    assert created.status_code == 200, created.text
    api.runtime.drain()
    assert sent(api) == []
    # When her plan is changed through the API
    updated = api.http.put(url, json={"attributes": {"plan": "pro"}}, headers=api.auth())
    assert updated.status_code == 200, updated.text
    assert updated.json()["attributes"] == {"plan": "pro"}
    api.runtime.drain()
    # Then she joined the pro segment, and her timeline says why
    assert sent(api) == ["pro_welcome:hi_pro"]
    timeline = api.get_contact("dee@example.com").json()["timeline"]
    summaries = [e["summary"] for e in timeline]
    assert "contact.updated attributes changed: plan 'free' -> 'pro' (processed)" in summaries
    # And a PUT that changes nothing records nothing
    again = api.http.put(url, json={"attributes": {"plan": "pro"}}, headers=api.auth())
    assert again.status_code == 200
    api.runtime.drain()
    assert [e.type for e in events(api.runtime)] == ["contact.updated"]


def test_a_batch_of_plan_changes_joins_each_segment_at_its_event(api: Api) -> None:
    # Given a contact on the free plan
    first = api.post_events(event("ana@example.com", attributes={"plan": "free"}))
    assert first.status_code == 202, first.text
    api.runtime.drain()
    # When one batch moves her to pro, then enterprise, and brings a new contact who
    # starts free and moves to pro within the batch
    batch = api.post_events(
        {
            "events": [
                event("ana@example.com", "plan.changed", attributes={"plan": "pro"}),
                event("ana@example.com", "plan.changed", attributes={"plan": "enterprise"}),
                event("bo@example.com", attributes={"plan": "free"}),
                event("bo@example.com", "plan.changed", attributes={"plan": "pro"}),
            ]
        }
    )
    assert batch.status_code == 202, batch.text
    ids = [r["event_id"] for r in batch.json()["events"]]
    api.runtime.drain()
    # Then each segment was joined at its own event
    assert sent(api) == [
        "enterprise_welcome:hi_enterprise",
        "pro_welcome:hi_pro",
        "pro_welcome:hi_pro",
    ]
    causes = sorted((e.workflow, e.cause_event_id) for e in enrollments(api.runtime))
    assert causes == [
        ("enterprise_welcome", ids[1]),
        ("pro_welcome", ids[0]),
        ("pro_welcome", ids[3]),
    ]


# --- the bulk path records what recording one by one records ------------------------------

BATCH = [
    EventIn(email="ana@example.com", type="a.b", attributes={"plan": "pro", "seats": None}),
    EventIn(email="ana@example.com", type="a.b", attributes={"plan": "pro"}),  # no change
    EventIn(email="ana@example.com", type="a.b", attributes={"plan": "team", "seats": 5}),
    EventIn(email="bo@example.com", type="a.b", attributes={"plan": "free"}),  # new contact
    EventIn(email="bo@example.com", type="a.b", attributes={"plan": "pro", "vip": True}),
    EventIn(email="bo@example.com", type="a.b", idempotency_key="k", attributes={"x": 1}),
    EventIn(email="bo@example.com", type="a.b", idempotency_key="k", attributes={"x": 2}),
]
EXPECTED = [
    ("ana@example.com", None),
    ("ana@example.com", {"was": {"plan": "free"}, "absent": ["seats"]}),
    ("ana@example.com", None),
    ("ana@example.com", {"was": {"plan": "pro", "seats": None}}),
    ("bo@example.com", None),
    ("bo@example.com", {"was": {"plan": "free"}, "absent": ["vip"]}),
    ("bo@example.com", {"absent": ["x"]}),
]


def recorded_befores(runtime: Runtime, *, bulk: bool) -> list[tuple[str, Any]]:
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        given = EventIn(email="ana@example.com", type="a.b", attributes={"plan": "free"})
        record_one(session, runtime.registry, given, now=now)
    with transaction(runtime.db) as session:
        if bulk:
            record_batch(session, runtime.registry, BATCH, now=now, source=SOURCE)
        else:
            for item in BATCH:
                record_one(session, runtime.registry, item, now=now)
    with Session(runtime.db) as session:
        emails = {c.id: c.email for c in session.exec(select(Contact))}
        stored = session.exec(
            select(Event).where(Event.type == "a.b").order_by(col(Event.contact_id), col(Event.id))
        ).all()
        return [(emails[e.contact_id], e.attributes_before) for e in stored]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("bulk", [False, True], ids=["one_by_one", "bulk"])
def test_each_event_keeps_what_its_attributes_replaced(
    database: str, bulk: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_db_url")
    if database == "postgres":
        reset_postgres(url, create_tables=True)
    runtime, _, _ = make_runtime(url)
    try:
        assert recorded_befores(runtime, bulk=bulk) == EXPECTED
    finally:
        runtime.close()
