"""A batch of events written in a few statements records exactly what recording its events
one by one records: the same contacts, merges, duplicates, and each contact's events in the
same order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlmodel import Session, col, select

from engine.api.events import SOURCE, EventIn, record_one
from engine.db import transaction
from engine.models import Contact, Event
from engine.recording_batch import record_batch
from engine.runtime import Runtime
from tests.support import make_runtime, reset_postgres

BATCH = [
    # an existing contact: attributes merged, time zone changed
    EventIn(
        email="Ana@Example.com",
        type="page.viewed",
        attributes={"first_name": "Ana"},
        timezone="Europe/Madrid",
    ),
    # a new contact, then a second event for it merging more attributes
    EventIn(
        email="bo@example.com", type="trial.started", idempotency_key="k1", attributes={"a": 1}
    ),
    EventIn(
        email="bo@example.com",
        type="page.viewed",
        attributes={"b": 2},
        properties={"path": "/pricing", "note": 'café "quoted" \\ \u2603'},
    ),
    # the key of an earlier event of this batch: a duplicate, and cy is never created
    EventIn(email="cy@example.com", type="page.viewed", idempotency_key="k1"),
    # the key of an event stored before: a duplicate, and dee is never created
    EventIn(email="dee@example.com", type="page.viewed", idempotency_key="old"),
    # a new contact without a key, at a time given with an offset (stored as UTC)
    EventIn(
        email="eve@example.com",
        type="content.downloaded",
        timezone="Asia/Tokyo",
        occurred_at=datetime(2026, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=2))),
    ),
]


def given_stored(runtime: Runtime) -> None:
    with transaction(runtime.db) as session:
        record_one(
            session,
            runtime.registry,
            EventIn(
                email="ana@example.com",
                type="page.viewed",
                idempotency_key="old",
                attributes={"plan": "free"},
            ),
            now=runtime.clock.now(),
        )


def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Contacts and their events, without ids or generated keys."""
    with Session(runtime.db) as session:
        contacts = session.exec(select(Contact).order_by(col(Contact.email))).all()
        by_id = {c.id: c.email for c in contacts}
        # Each contact's events in the order they will be applied (ids); across contacts
        # the bulk path writes every contact.created first, which changes nothing.
        events = sorted(
            session.exec(select(Event)).all(), key=lambda e: (by_id[e.contact_id], e.id)
        )
        return {
            "contacts": [
                (c.email, c.stage, c.timezone, c.attributes, c.version, c.score) for c in contacts
            ],
            "events": [
                (
                    by_id[e.contact_id],
                    e.type,
                    e.source,
                    e.properties,
                    e.status,
                    "auto" if ":auto:" in e.idempotency_key else e.idempotency_key.split(":")[0],
                    e.idempotency_key
                    if "k1" in e.idempotency_key or "old" in e.idempotency_key
                    else "",
                    e.occurred_at if by_id[e.contact_id] == "eve@example.com" else None,
                )
                for e in events
            ],
        }


def run(runtime: Runtime, *, bulk: bool) -> tuple[list[Any], dict[str, Any]]:
    given_stored(runtime)
    now = runtime.clock.now()
    with transaction(runtime.db) as session:
        if bulk:
            recorded = record_batch(session, runtime.registry, BATCH, now=now, source=SOURCE)
        else:
            recorded = [record_one(session, runtime.registry, item, now=now) for item in BATCH]
    with Session(runtime.db) as session:
        emails = {c.id: c.email for c in session.exec(select(Contact)).all()}
        keys = {
            e.id: "auto" if ":auto:" in e.idempotency_key else e.idempotency_key
            for e in session.exec(select(Event)).all()
        }
    shape = [(emails[r.contact_id], keys[r.event_id], r.duplicate) for r in recorded]
    return shape, snapshot(runtime)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_batch_in_bulk_records_what_one_by_one_records(
    database: str, request: pytest.FixtureRequest
) -> None:
    # Given the same stored event and batch, recorded one by one on a fresh database
    if database == "sqlite":
        url_one = request.getfixturevalue("sqlite_url")
        url_bulk = url_one.replace("journeyline.db", "bulk.db")
    else:
        url_one = url_bulk = request.getfixturevalue("pg_db_url")
    one, _, _ = make_runtime(url_one)
    try:
        expected_shape, expected = run(one, bulk=False)
    finally:
        one.close()
    if database == "postgres":
        reset_postgres(url_bulk, create_tables=True)

    # When the batch is recorded in bulk on another fresh database
    bulk, _, _ = make_runtime(url_bulk)
    try:
        shape, got = run(bulk, bulk=True)
    finally:
        bulk.close()

    # Then the answers and the rows are the same
    assert shape == expected_shape
    assert got == expected
    assert [d for _, _, d in shape] == [False, False, False, True, True, False]
    assert [c[0] for c in got["contacts"]] == [
        "ana@example.com",
        "bo@example.com",
        "eve@example.com",
    ]
    # And eve's events (contact.created and hers) occurred when she said, in UTC
    eve = {e[-1] for e in got["events"] if e[0] == "eve@example.com"}
    assert eve == {datetime(2026, 11, 20, 7, 0, tzinfo=UTC)}
