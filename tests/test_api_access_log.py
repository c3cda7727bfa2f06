"""The access log names routes, never paths: erasing a contact leaves no address in the logs,
neither in the app's lines nor in uvicorn's (``journeyline serve`` turns those off)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from engine import VirtualClock, migrations
from engine.api import create_app
from engine.api_keys import create_key
from engine.db import make_engine, transaction
from engine.testing import midday_zone
from tests.support import make_runtime
from tests.test_api import add_key, event, serving

ADDRESS = "ana@example.com"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    runtime, _clock, _email = make_runtime(sqlite_url)
    try:
        key = add_key(runtime, "all", "events:write", "contacts:read", "contacts:write")
        yield create_app(runtime), {"Authorization": f"Bearer {key}"}
    finally:
        runtime.close()


def call(app: FastAPI, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    """The requests, one after another, to the app in-process: each returns once the app is
    done with it, its log line written."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://jl") as http:
            return [await http.request(method, url, **options) for method, url, options in requests]

    return asyncio.run(run())


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "engine.api.access_log"]


def test_an_erase_request_is_logged_by_route_template_without_the_address(
    app: tuple[FastAPI, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    api, auth = app
    # Given a contact
    [tracked] = call(api, ("POST", "/v1/events", {"json": event(ADDRESS), "headers": auth}))
    assert tracked.status_code == 202
    caplog.clear()
    # When she is erased, and then looked up, with the access log at INFO
    with caplog.at_level(logging.INFO, logger="engine.api.access_log"):
        erased, missing, unknown = call(
            api,
            ("DELETE", f"/v1/contacts/{ADDRESS}", {"headers": auth}),
            ("GET", f"/v1/contacts/{ADDRESS}", {"headers": auth}),
            ("GET", f"/v2/people/{ADDRESS}", {}),
        )
    assert (erased.status_code, missing.status_code, unknown.status_code) == (204, 404, 404)
    # Then each request has its line: method, route template, status, duration
    records = access_records(caplog)
    assert [(r.method, r.route, r.status) for r in records] == [  # type: ignore[attr-defined]
        ("DELETE", "/v1/contacts/{email}", 204),
        ("GET", "/v1/contacts/{email}", 404),
        ("GET", "unmatched", 404),
    ]
    assert records[0].getMessage().startswith("DELETE /v1/contacts/{email} 204 ")
    assert records[0].getMessage().endswith(" ms")
    assert all(r.duration_ms >= 0 for r in records)  # type: ignore[attr-defined]
    # And nothing on any record holds the address
    for record in records:
        assert ADDRESS not in record.getMessage()
        assert ADDRESS not in repr(vars(record))


@pytest.mark.slow
def test_journeyline_serve_logs_an_erase_without_the_address(tmp_path: Path) -> None:
    # Given `journeyline serve` on a migrated database, with a key, logging at INFO
    url = f"sqlite:///{tmp_path}/serve.db"
    migrations.upgrade(url)
    db = make_engine(url)
    try:
        with transaction(db) as session:
            scopes = ["events:write", "contacts:write"]
            key = create_key(session, "test", scopes, VirtualClock().now())[1]
    finally:
        db.dispose()
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": url,
        "JOURNEYLINE_BROKER_URL": "stub://",
        "JOURNEYLINE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "JOURNEYLINE_LOG_LEVEL": "INFO",
        "COLUMNS": "200",
    }
    with serving(env, tmp_path) as served:
        auth = {"Authorization": f"Bearer {key}"}
        body = event(ADDRESS, timezone=midday_zone())
        assert served.http.post("/v1/events", json=body, headers=auth).status_code == 202
        # When the contact is erased
        assert served.http.delete(f"/v1/contacts/{ADDRESS}", headers=auth).status_code == 204
    out, err = served.out, served.err
    # Then the log has the request by its route, and her address is nowhere in the output
    assert served.process.returncode == 0, err
    logged = " ".join((out + err).split())
    assert "DELETE /v1/contacts/{email} 204" in logged, logged
    assert ADDRESS not in out + err
