"""``/metrics`` says when workers do not keep up: the oldest pending event's age, and the
actions due but not done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import actions, contact, make_runtime
from tests.test_api import Api, event, serve

BACKLOG = (
    "journeyline_oldest_pending_event_age_seconds",
    "journeyline_actions_due",
    "journeyline_oldest_due_action_age_seconds",
)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def backlog(api: Api) -> dict[str, float]:
    response = api.http.get("/metrics")
    assert response.status_code == 200
    values = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if name in BACKLOG:
            values[name] = float(value)
    return values


def test_the_backlog_gauges_grow_while_no_worker_runs_and_fall_once_one_does(api: Api) -> None:
    # Given nothing recorded yet: no backlog
    assert backlog(api) == dict.fromkeys(BACKLOG, 0.0)
    # When two events arrive 30 s apart and no worker takes their jobs
    api.post_events(event("ana@example.com"))
    api.clock.advance(seconds=30)
    api.post_events(event("bo@example.com"))
    api.clock.advance(seconds=90)
    api.runtime.broker.flush_all()
    # Then the oldest has waited 120 s
    assert backlog(api) == {
        "journeyline_oldest_pending_event_age_seconds": 120.0,
        "journeyline_actions_due": 0.0,
        "journeyline_oldest_due_action_age_seconds": 0.0,
    }
    # When the events are processed, but no worker performs the emails they wrote
    ids = [contact(api.runtime, e).id or 0 for e in ("ana@example.com", "bo@example.com")]
    api.runtime.process_contacts(ids)
    api.runtime.broker.flush_all()
    api.clock.advance(seconds=45)
    # Then no event waits, and the two welcome emails are due since 45 s
    assert [a.status for a in actions(api.runtime)] == ["pending", "pending"]
    assert backlog(api) == {
        "journeyline_oldest_pending_event_age_seconds": 0.0,
        "journeyline_actions_due": 2.0,
        "journeyline_oldest_due_action_age_seconds": 45.0,
    }
    # When a worker performs them
    for action in actions(api.runtime):
        api.runtime.perform(action.id or 0)
    # Then the backlog is gone
    assert backlog(api) == dict.fromkeys(BACKLOG, 0.0)
