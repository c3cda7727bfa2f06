"""A long timeline comes a page at a time: ``GET /v1/contacts/{email}?limit=&before=`` and
``journeyline contact --limit / --all`` show the newest entries, in the timeline's order,
and a cursor reads the older ones without gap or overlap; the test harness still shows it
all. Many events share an instant here (a worker processes a batch at once), so pages cut
same-instant groups in two."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

import engine.api_keys  # noqa: F401  (registers the api_keys table before create_all)
from engine import VirtualClock
from engine.api import ApiSettings, create_app
from engine.api.contacts import TimelineEntry
from engine.api_keys import create_key
from engine.db import transaction
from engine.errors import ValidationError
from engine.runtime import Runtime
from engine.testing import Simulation
from engine.timeline import contact_timeline
from tests.cli_support import cli_env, invoke
from tests.support import make_runtime
from tests.test_api import LiveServer

ANA = "ana@example.com"
VIEWS = 450


def long_history(runtime: Runtime, clock: VirtualClock, email: str = ANA) -> None:
    """A trial started (a stage change, an enrollment with its decisions and emails), then
    ``VIEWS`` page views processed nine at a time, each batch at one instant."""
    runtime.track(email, "trial.started")
    clock.advance(timedelta(seconds=1))
    runtime.drain()
    for n in range(VIEWS):
        runtime.track(email, "page.viewed", {"n": n})
        if n % 9 == 8:
            clock.advance(timedelta(minutes=7))
            runtime.drain()
    runtime.drain()


def whole(runtime: Runtime, email: str = ANA) -> list[dict[str, Any]]:
    with Session(runtime.db) as session:
        timeline = contact_timeline(session, email, runtime.registry)
    assert timeline is not None and not timeline.more
    return [as_json(e.to_dict()) for e in timeline.entries]


def as_json(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API writes it (times ending in Z)."""
    return TimelineEntry.model_validate(entry).model_dump(mode="json")


@pytest.fixture
def runtime(sqlite_url: str) -> Iterator[tuple[Runtime, VirtualClock]]:
    runtime, clock, _email = make_runtime(sqlite_url)
    try:
        long_history(runtime, clock)
        yield runtime, clock
    finally:
        runtime.close()


@pytest.fixture
def client(runtime: tuple[Runtime, VirtualClock]) -> Iterator[httpx.Client]:
    rt, _clock = runtime
    with transaction(rt.db) as session:
        key = create_key(session, "reader", ["contacts:read"], rt.clock.now())[1]
    app = create_app(rt, settings=ApiSettings())
    with (
        LiveServer(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        yield http


def pages(client: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    """Every page, newest first, following the cursors to the end."""
    found = []
    while True:
        response = client.get(f"/v1/contacts/{ANA}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found.append(body)
        if not body["more"]:
            assert body["next_before"] is None
            return found
        query = {**query, "before": body["next_before"]}
        assert len(found) < 100, "the cursor does not move"


def test_the_api_returns_the_newest_200_entries_in_order_with_a_cursor(
    runtime: tuple[Runtime, VirtualClock], client: httpx.Client
) -> None:
    # Given a contact with far more than 200 entries
    everything = whole(runtime[0])
    assert len(everything) > VIEWS + 5
    kinds = {e["kind"] for e in everything}
    assert kinds == {"event", "stage", "enrollment", "action"}

    # When her contact is read with no paging asked for
    body = client.get(f"/v1/contacts/{ANA}").json()

    # Then it holds the newest 200 entries, oldest first as before, and a cursor for more
    assert body["timeline"] == everything[-200:]
    assert body["more"] is True and body["next_before"]
    assert body["contact"]["email"] == ANA and "live" in body


@pytest.mark.parametrize("limit", [200, 37, 1000])
def test_the_pages_go_on_without_gap_or_overlap_to_the_first_entry(
    runtime: tuple[Runtime, VirtualClock], client: httpx.Client, limit: int
) -> None:
    # Given her whole timeline, as the harness reads it
    everything = whole(runtime[0])

    # When it is read page after page
    found = pages(client, limit=limit)

    # Then the pages, oldest last, are exactly the whole timeline
    joined = [entry for page in reversed(found) for entry in page["timeline"]]
    assert joined == everything
    assert [len(p["timeline"]) for p in found[:-1]] == [limit] * (len(found) - 1)
    assert len(found) == -(-len(everything) // limit)
    # And where a page cut an instant in two it says so
    for page, older in itertools.pairwise(found):
        shares = page["timeline"][0]["at"] == older["timeline"][-1]["at"]
        assert page["partial_instant"] is shares
    if limit == 37:  # nine views an instant: some cut falls inside one
        assert any(p["partial_instant"] for p in found)


def test_the_enrollment_and_its_decisions_keep_their_order_on_their_page(
    runtime: tuple[Runtime, VirtualClock], client: httpx.Client
) -> None:
    # Given the whole timeline's opening (the trial and what it caused)
    everything = whole(runtime[0])
    # When the oldest page is read with a small limit
    oldest = pages(client, limit=5)[-1]["timeline"]
    # Then it is the opening, in the same causal order
    assert oldest == everything[: len(oldest)]
    assert oldest[0]["summary"].startswith("contact.created")


@pytest.mark.parametrize("limit", ["0", "1001", "-3", "many"])
def test_a_limit_out_of_bounds_is_422_naming_it(client: httpx.Client, limit: str) -> None:
    response = client.get(f"/v1/contacts/{ANA}", params={"limit": limit})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "limit"


@pytest.mark.parametrize("before", ["nonsense", "W10", "WyJ4IiwxLDIsMyw0XQ", "e30"])
def test_a_bad_cursor_is_422_naming_before(client: httpx.Client, before: str) -> None:
    response = client.get(f"/v1/contacts/{ANA}", params={"before": before})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "before"


def test_contact_timeline_checks_its_limit(runtime: tuple[Runtime, VirtualClock]) -> None:
    with Session(runtime[0].db) as session, pytest.raises(ValidationError) as raised:
        contact_timeline(session, ANA, limit=0)
    assert raised.value.field == "limit"


def test_the_cli_shows_the_last_200_and_says_there_are_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a CLI database with the long history
    env = cli_env(tmp_path, monkeypatch, columns=400)
    rt, clock, _email = make_runtime(env["url"], create_schema=False)
    try:
        long_history(rt, clock)
        everything = whole(rt)
    finally:
        rt.close()

    # When her contact is shown
    shown = invoke("--database-url", env["url"], "contact", ANA)
    # Then the newest 200 entries, and a note on how to see more
    assert shown.exit_code == 0, shown.output
    assert "showing 200 entries of more; the earlier ones: --before " in shown.output
    assert "or --limit / --all" in shown.output

    # When asked for fewer, or all, as JSON
    few = invoke("--database-url", env["url"], "contact", ANA, "--limit", "3", "--json")
    every = invoke("--database-url", env["url"], "contact", ANA, "--all", "--json")
    # Then the newest three with the cursor, or every entry and no note
    assert few.exit_code == 0 and every.exit_code == 0, few.output + every.output
    assert [as_json(e) for e in json.loads(few.stdout)["entries"]] == everything[-3:]
    assert json.loads(few.stdout)["more"] is True
    assert [as_json(e) for e in json.loads(every.stdout)["entries"]] == everything
    assert json.loads(every.stdout)["more"] is False
    all_text = invoke("--database-url", env["url"], "contact", ANA, "--all")
    assert "entries of more" not in all_text.output

    # When the page before the newest three is asked for with the cursor the first gave
    cursor = json.loads(few.stdout)["next_before"]
    older = invoke(
        "--database-url", env["url"], "contact", ANA, "--limit", "3", "--before", cursor, "--json"
    )
    # Then the three before them
    assert older.exit_code == 0, older.output
    assert [as_json(e) for e in json.loads(older.stdout)["entries"]] == everything[-6:-3]
    bad = invoke("--database-url", env["url"], "contact", ANA, "--before", "not-a-cursor")
    assert bad.exit_code != 0 and "before" in bad.output


def test_the_harness_still_shows_the_whole_timeline() -> None:
    # Given a simulated contact with more than 200 entries
    with Simulation() as sim:
        sim.track(ANA, "trial.started")
        for n in range(250):
            sim.track(ANA, "page.viewed", {"n": n})
        # When the harness explains her journey
        timeline = sim.timeline(ANA)
        text = sim.explain(ANA)
    # Then every entry is there, the first included
    assert timeline is not None and not timeline.more
    assert len(timeline.entries) > 250
    assert "contact.created" in text and "n=0" in text and "n=249" in text


def test_pages_on_postgresql_are_the_whole_timeline(pg_db_url: str) -> None:
    # Given the long history on PostgreSQL
    rt, clock, _email = make_runtime(pg_db_url)
    try:
        long_history(rt, clock)
        everything = whole(rt)
        # When it is read 64 entries at a time through contact_timeline
        joined: list[dict[str, Any]] = []
        before = None
        with Session(rt.db) as session:
            while True:
                page = contact_timeline(session, ANA, rt.registry, limit=64, before=before)
                assert page is not None
                joined = [as_json(e.to_dict()) for e in page.entries] + joined
                if not page.more:
                    break
                before = page.next_before
    finally:
        rt.close()
    # Then the pages are exactly the whole timeline
    assert joined == everything
