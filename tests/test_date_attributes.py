"""An attribute a ``wait_until_date`` step counts from holds a date: ISO 8601 or a Unix time
(seconds or milliseconds) are dates; anything else given to it through the track API, the
contacts API or ``Runtime.track`` is refused naming the attribute, since a wait that finds
no date goes straight on (a bad import would send every "3 days before" reminder at once)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.localtime import date_problem, parse_instant
from tests.language_support import running, sent
from tests.support import events, make_runtime
from tests.test_api import Api, event, serve
from tests.test_date_waits import reminder

ENDS = datetime(2026, 3, 16, 0, 0, tzinfo=UTC)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)  # the shipped workflows
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


@pytest.mark.parametrize(
    "value",
    [
        1773619200,  # Unix seconds
        1773619200000,  # milliseconds, as HubSpot and JavaScript write them
        "1773619200",
        "1773619200000",
        1773619200.0,
        "2026-03-16T00:00:00Z",
        "2026-03-16T01:00:00+01:00",
    ],
)
def test_unix_times_and_iso_text_are_dates(value: object) -> None:
    assert parse_instant(value, "Europe/London") == ENDS
    assert date_problem(value) is None


@pytest.mark.parametrize("value", ["20/01/2026", "Jan 20, 2026", "2026-1-20", True, {"d": 1}])
def test_other_values_are_not_dates_and_say_what_is(value: object) -> None:
    assert parse_instant(value, "UTC") is None
    problem = date_problem(value)
    assert problem is not None
    assert "is not a date" in problem and "ISO 8601" in problem and "Unix time" in problem


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_value_is_no_date_and_no_problem(value: object) -> None:
    assert parse_instant(value, "UTC") is None
    assert date_problem(value) is None


def test_a_unix_time_in_milliseconds_times_the_reminder(tmp_path: Path) -> None:
    with running(tmp_path, [reminder()]) as (rt, clock, email):
        # 2 March; the trial ends 16 March 00:00 UTC, given as HubSpot gives dates
        rt.track("bo@example.com", "trial.started", timezone="Europe/London",
                 attributes={"trial_ends_at": 1773619200000})  # fmt: skip
        rt.run_until_idle()
        assert sent(email) == []  # not at once
        clock.set(datetime(2026, 3, 13, 10, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == ["trial_reminder:reminder"]


def test_runtime_track_refuses_a_value_that_is_not_a_date(tmp_path: Path) -> None:
    with running(tmp_path, [reminder()]) as (rt, _clock, _email):
        with pytest.raises(ValidationError) as refused:
            rt.track("bo@example.com", "trial.started",
                     attributes={"trial_ends_at": "16/03/2026"})  # fmt: skip
        assert refused.value.field == "attributes.trial_ends_at"
        assert "'16/03/2026' is not a date" in str(refused.value)
        assert events(rt) == []  # nothing written
        # An attribute no date wait names takes any value
        rt.track("bo@example.com", "trial.started", attributes={"signup_day": "16/03/2026"})
        rt.run_until_idle()
        assert len(events(rt)) >= 1


def test_the_track_api_refuses_a_batch_with_a_bad_date_naming_it(api: Api) -> None:
    answer = api.post_events(
        {
            "events": [
                event(
                    "ana@example.com", "trial.started", attributes={"trial_ends_at": "2026-03-16"}
                ),
                event("bo@example.com", "trial.started", attributes={"renews_at": "next year"}),
            ]
        }
    )
    assert answer.status_code == 422, answer.text
    fields = [p["field"] for p in answer.json()["error"]["problems"]]
    assert fields == ["events[1].attributes.renews_at"]
    assert "'next year' is not a date" in answer.text
    assert events(api.runtime) == []  # all or nothing


def test_the_contacts_api_refuses_a_bad_date(api: Api) -> None:
    answer = api.http.put(
        "/v1/contacts/ana@example.com",
        json={"attributes": {"trial_ends_at": "Jan 20"}},
        headers=api.auth(),
    )
    assert answer.status_code == 422, answer.text
    assert "trial_ends_at" in answer.text and "is not a date" in answer.text
    assert api.http.get("/v1/contacts/ana@example.com", headers=api.auth()).status_code == 404


def test_an_iso_basic_date_is_that_date_not_a_unix_time() -> None:
    # 20260316 was read as 20,260,316 seconds: 1970-08-23, a reminder sent at once
    assert parse_instant("20260316", "UTC") == datetime(2026, 3, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    "value", ["0001-01-01", "0001-01-01T00:00+09:00", "9999-12-31T23:00-05:00", "1899-12-31"]
)
def test_placeholder_and_out_of_range_dates_are_not_dates_and_never_overflow(value: str) -> None:
    # Each used to raise OverflowError somewhere: the event failed, or the API answered 500
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        assert parse_instant(value, zone) is None
    problem = date_problem(value)
    assert problem is not None and "from 1900 to 2199" in problem


def test_the_track_api_refuses_a_placeholder_date_with_422_not_500(api: Api) -> None:
    answer = api.post_events(
        event("ana@example.com", "trial.started", attributes={"trial_ends_at": "0001-01-01"})
    )
    assert answer.status_code == 422, answer.text
    assert "trial_ends_at" in answer.text


def test_a_placeholder_date_from_a_provider_leaves_the_event_applied(tmp_path: Path) -> None:
    # Provider webhooks are not refused: the event is applied, the wait goes straight on
    from engine.db import transaction
    from engine.recording import record_event

    with running(tmp_path, [reminder()]) as (rt, _clock, email):
        with transaction(rt.db) as session:
            recorded = record_event(
                session,
                rt.registry,
                now=rt.clock.now(),
                email="bo@example.com",
                event_type="trial.started",
                source="hubspot",
                attributes={"trial_ends_at": "0001-01-01"},
                timezone="Asia/Tokyo",
            )
        rt.jobs.process_contact.send(recorded.contact_id)
        rt.run_until_idle()
        (stored,) = [e for e in events(rt) if e.type == "trial.started"]
        assert stored.status == "processed", stored.error
        assert sent(email) == ["trial_reminder:reminder"]
