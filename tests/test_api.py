"""The HTTP service over a real socket: uvicorn in a thread, SQLite, stub broker, recording
email connector. Tests read as Given / When / Then; jobs run when the test drains them."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlmodel import Session, select

import engine.api_keys  # noqa: F401  (registers the api_keys table before create_all)
from connectors import RecordingEmailConnector
from engine import VirtualClock, migrations
from engine.api import ApiSettings, create_app
from engine.api.auth import VerifiedKeys
from engine.api.events import MAX_BATCH
from engine.api_keys import create_key, revoke
from engine.db import make_engine, transaction
from engine.models import Action, Event, StageTransition
from engine.recording import EVENT_LEASE
from engine.runtime import Runtime
from engine.testing import midday_zone
from tests.support import contact, events, make_runtime


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 on a free port, in a thread, stopped cleanly."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, ws="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@dataclass
class Api:
    runtime: Runtime
    clock: VirtualClock
    email: RecordingEmailConnector
    http: httpx.Client
    keys: dict[str, str]  # name -> plaintext
    app: FastAPI

    def auth(self, name: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def post_events(self, body: Any, key: str = "all") -> httpx.Response:
        return self.http.post("/v1/events", json=body, headers=self.auth(key))

    def get_contact(self, email: str, key: str = "all") -> httpx.Response:
        return self.http.get(f"/v1/contacts/{email}", headers=self.auth(key))


def add_key(runtime: Runtime, name: str, *scopes: str) -> str:
    with transaction(runtime.db) as session:
        return create_key(session, name, scopes, runtime.clock.now())[1]


def serve(runtime: Runtime, clock: VirtualClock, email: RecordingEmailConnector, **settings: Any):
    keys = {
        "all": add_key(runtime, "all", "events:write", "contacts:read", "contacts:write"),
        "reader": add_key(runtime, "reader", "contacts:read"),
    }
    app = create_app(runtime, settings=ApiSettings(**settings))
    with LiveServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Api(runtime, clock, email, http, keys, app)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def event(email: str, type_: str = "page.viewed", **extra: Any) -> dict[str, Any]:
    return {"email": email, "type": type_, **extra}


# --- events in, contacts out --------------------------------------------------------------


def test_events_single_and_batch_reach_the_stage_the_timeline_and_the_outbox(api: Api) -> None:
    # Given a trial started, sent alone
    single = api.post_events(
        event(
            "Ana@Example.com",
            "trial.started",
            properties={"plan": "pro"},
            attributes={"first_name": "Ana"},
            timezone="Europe/Madrid",
        )
    )
    assert single.status_code == 202, single.text
    [recorded] = single.json()["events"]
    assert recorded["duplicate"] is False
    # And a batch of page views for two others
    batch = api.post_events({"events": [event("bo@example.com"), event("cy@example.com")]})
    assert batch.status_code == 202, batch.text
    assert [e["duplicate"] for e in batch.json()["events"]] == [False, False]

    # When the jobs have run
    api.runtime.drain()

    # Then Ana is in decision, her timeline says why, and her emails went out
    shown = api.get_contact("ana@example.com")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["contact"]["stage"] == "decision"
    assert body["contact"]["attributes"] == {"first_name": "Ana"}
    assert body["contact"]["timezone"] == "Europe/Madrid"
    kinds = {entry["kind"] for entry in body["timeline"]}
    assert kinds == {"event", "stage", "enrollment", "action"}
    trial = [e for e in body["timeline"] if e["details"].get("type") == "trial.started"]
    assert trial[0]["details"]["id"] == recorded["event_id"]
    assert trial[0]["details"]["properties"] == {"plan": "pro"}
    assert any(e["summary"] == "awareness -> decision by evaluate" for e in body["timeline"])
    assert "ana@example.com" in {m.to for m in api.email.sent}
    # And what comes next for her: the trial workflow waits, no scheduler pass holds it yet
    live = {e["workflow"]: e for e in body["live"]}
    assert live["decision_trial"]["status"] == "waiting", live
    assert live["decision_trial"]["wake_at"] is not None
    assert live["decision_trial"]["claimed_until"] is None
    assert live["decision_trial"]["step"] == "reminder"  # what runs when it wakes
    # And the batch created both contacts
    assert api.get_contact("bo@example.com").json()["contact"]["stage"] == "awareness"
    assert api.get_contact("cy@example.com").status_code == 200


def test_a_batch_with_one_bad_email_records_nothing_and_names_it(api: Api) -> None:
    # Given a batch whose fourth event has a bad address
    batch = [event(f"p{i}@example.com") for i in range(6)]
    batch[3]["email"] = "not-an-email"
    # When it is sent
    response = api.post_events({"events": batch})
    # Then it is refused, naming events[3].email, and nothing at all is recorded
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "events[3].email"
    assert "not-an-email" in error["message"]
    assert events(api.runtime) == []


def test_every_bad_field_of_a_batch_is_named_at_once(api: Api) -> None:
    batch = [
        event("a@example.com", "Not An Event"),
        event("b@example.com", timezone="Mars/Base"),
        {"email": "c@example.com"},
        event("d@example.com", propertes={"typo": True}),
    ]
    response = api.post_events({"events": batch})
    assert response.status_code == 422
    problems = response.json()["error"]["problems"]
    # Structure (a missing type, an unknown field) and values, all in one answer, in order
    assert [p["field"] for p in problems] == [
        "events[0].type",
        "events[1].timezone",
        "events[2].type",
        "events[3].propertes",
    ]
    assert "Mars/Base" in problems[1]["message"]
    assert response.json()["error"]["message"].endswith("(and 3 more)")
    # Once the structure is right, the values' problems are the same
    batch[2]["type"] = "page.viewed"
    del batch[3]["propertes"]
    response = api.post_events({"events": batch})
    assert response.status_code == 422
    problems = response.json()["error"]["problems"]
    assert [p["field"] for p in problems] == ["events[0].type", "events[1].timezone"]
    assert events(api.runtime) == []


def test_a_single_invalid_event_names_the_field(api: Api) -> None:
    response = api.post_events(event("ana@example.com", timezone="Mars/Base"))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "timezone"
    missing = api.post_events({"email": "ana@example.com"})
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "type"
    not_json = api.http.post(
        "/v1/events",
        content=b"{not json",
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert not_json.json()["error"]["field"] == "body"
    assert events(api.runtime) == []


def test_a_batch_over_the_limit_is_refused_whole(api: Api) -> None:
    response = api.post_events({"events": [event("a@example.com")] * (MAX_BATCH + 1)})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events"
    assert events(api.runtime) == []
    assert api.post_events({"events": []}).status_code == 422


def test_a_repeated_idempotency_key_is_recorded_once(api: Api) -> None:
    # Given the same order sent twice, and once more inside a batch
    first = api.post_events(event("ana@example.com", "order.completed", idempotency_key="o-1"))
    again = api.post_events(event("ana@example.com", "order.completed", idempotency_key="o-1"))
    batch = api.post_events(
        {
            "events": [
                event("ana@example.com", "order.completed", idempotency_key="o-1"),
                event("ana@example.com", "order.completed", idempotency_key="o-2"),
                event("ana@example.com", "order.completed", idempotency_key="o-2"),
            ]
        }
    )
    # Then each key is one event, and the answers say which were duplicates
    assert first.json()["events"][0]["duplicate"] is False
    assert again.json()["events"][0] == {**first.json()["events"][0], "duplicate": True}
    assert [e["duplicate"] for e in batch.json()["events"]] == [True, False, True]
    api.runtime.drain()
    orders = [e for e in events(api.runtime) if e.type == "order.completed"]
    assert len(orders) == 2


def test_events_kept_while_the_broker_is_down_are_202_and_go_on_after_their_lease(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker that refuses every job
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    jobs = api.runtime.jobs
    for actor in (jobs.process_contact, jobs.process_contacts):
        monkeypatch.setattr(actor, "send", refuse)
    # When events come in, alone and in a batch
    with caplog.at_level(logging.ERROR, logger="engine.runtime"):
        alone = api.post_events(event("ana@example.com", "trial.started"))
        batch = api.post_events(
            {"events": [event("bo@example.com", "trial.started"), event("cy@example.com")]}
        )
    # Then they are accepted: stored as pending, and the refusal logged for an operator
    assert (alone.status_code, batch.status_code) == (202, 202), (alone.text, batch.text)
    stored = events(api.runtime)
    assert {e.status for e in stored} == {"pending"}
    assert sorted(e.type for e in stored if e.type != "contact.created") == [
        "page.viewed",
        "trial.started",
        "trial.started",
    ]
    refused = [r.getMessage() for r in caplog.records if "refused their jobs" in r.getMessage()]
    assert len(refused) == 2 and "ConnectionError: Error 111" in refused[0], refused
    assert "within 5 minutes once it answers" in refused[0]
    # And once the broker answers and their lease has run out, a scheduler pass hands them on
    monkeypatch.undo()
    api.clock.advance(EVENT_LEASE + timedelta(seconds=1))
    api.runtime.run_until_idle()
    assert {e.status for e in events(api.runtime)} == {"processed"}
    assert contact(api.runtime, "ana@example.com").stage == "decision"


# --- contacts -----------------------------------------------------------------------------


def test_put_creates_an_imported_contact_then_merges_attributes(api: Api) -> None:
    # Given a contact imported in onboarding
    created = api.http.put(
        "/v1/contacts/dee@example.com",
        json={"stage": "onboarding", "attributes": {"plan": "pro"}, "timezone": "Asia/Tokyo"},
        headers=api.auth(),
    )
    assert created.status_code == 200, created.text
    assert created.json()["stage"] == "onboarding"
    # When attributes are updated
    updated = api.http.put(
        "/v1/contacts/dee@example.com",
        json={"attributes": {"first_name": "Dee"}},
        headers=api.auth(),
    )
    # Then they are merged, and the import sent nothing
    assert updated.json()["attributes"] == {"plan": "pro", "first_name": "Dee"}
    api.runtime.drain()
    assert api.email.sent == []
    # And a stage for an existing contact in another stage is a conflict, not a silent no-op
    moved = api.http.put(
        "/v1/contacts/dee@example.com", json={"stage": "retention"}, headers=api.auth()
    )
    assert moved.status_code == 409
    assert moved.json()["error"]["field"] == "stage"
    assert contact(api.runtime, "dee@example.com").stage == "onboarding"
    # And bad values name their field
    bad = api.http.put(
        "/v1/contacts/eve@example.com", json={"stage": "nirvana"}, headers=api.auth()
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "stage"
    bad_email = api.http.put("/v1/contacts/nobody", json={}, headers=api.auth())
    assert bad_email.status_code == 422 and bad_email.json()["error"]["field"] == "email"


def test_an_unknown_contact_is_404(api: Api) -> None:
    response = api.get_contact("nobody@example.com")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "field": "email",
        "message": "no contact with email 'nobody@example.com'",
    }


def test_delete_erases_the_contact_and_everything_about_it(api: Api) -> None:
    # Given a contact with events, a stage change and emails
    api.post_events(event("ana@example.com", "trial.started", attributes={"first_name": "Ana"}))
    api.post_events(event("bo@example.com"))
    api.runtime.drain()
    ana_id = contact(api.runtime, "ana@example.com").id
    # When she is erased (with one more event still queued)
    api.post_events(event("ana@example.com", "page.viewed"))
    erased = api.http.delete("/v1/contacts/Ana@Example.com", headers=api.auth())
    assert erased.status_code == 204, erased.text
    api.runtime.drain()
    # Then she is gone, with her events, transitions and actions; the others are untouched
    assert api.get_contact("ana@example.com").status_code == 404
    with Session(api.runtime.db) as session:
        for model in (Event, StageTransition, Action):
            left = session.exec(select(model).where(model.contact_id == ana_id)).all()
            assert left == [], model.__name__
    assert api.get_contact("bo@example.com").status_code == 200
    # And erasing again says there is nobody
    assert api.http.delete("/v1/contacts/ana@example.com", headers=api.auth()).status_code == 404


# --- API keys -----------------------------------------------------------------------------


def test_requests_without_a_usable_key_are_401_saying_why(api: Api) -> None:
    url = "/v1/contacts/ana@example.com"
    missing = api.http.get(url)
    assert missing.status_code == 401
    assert "missing API key" in missing.json()["error"]["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    unknown = api.http.get(url, headers={"Authorization": "Bearer jl_00000000_nope"})
    assert unknown.status_code == 401
    assert "unknown" in unknown.json()["error"]["message"]
    malformed = api.http.get(url, headers={"Authorization": "Bearer hunter2"})
    assert malformed.status_code == 401
    assert "malformed" in malformed.json()["error"]["message"]
    basic = api.http.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_a_revoked_key_is_401(api: Api) -> None:
    prefix = api.keys["reader"].split("_")[1]
    with transaction(api.runtime.db) as session:
        revoke(session, prefix, api.clock.now())
    response = api.get_contact("ana@example.com", key="reader")
    assert response.status_code == 401
    assert f"API key {prefix} was revoked" in response.json()["error"]["message"]


def test_a_key_revoked_after_use_is_refused_once_this_process_forgets_it(api: Api) -> None:
    # Given a key this server verified a moment ago (its cache on a clock we move)
    seconds = [100.0]
    api.app.state.verified_keys = VerifiedKeys(ttl_s=5, clock=lambda: seconds[0])
    assert api.get_contact("ana@example.com", key="reader").status_code == 404
    # When it is revoked, requests within the cache's time are still let in, and a scope
    # the key lacks is refused without the database
    prefix = api.keys["reader"].split("_")[1]
    with transaction(api.runtime.db) as session:
        revoke(session, prefix, api.clock.now())
    seconds[0] += 4.9
    assert api.get_contact("ana@example.com", key="reader").status_code == 404
    assert api.post_events(event("ana@example.com"), key="reader").status_code == 403
    # Then once the cache's time is over, the revocation holds
    seconds[0] += 0.1
    response = api.get_contact("ana@example.com", key="reader")
    assert response.status_code == 401
    assert f"API key {prefix} was revoked" in response.json()["error"]["message"]


def test_a_key_without_the_scope_is_403(api: Api) -> None:
    response = api.post_events(event("ana@example.com"), key="reader")
    assert response.status_code == 403
    assert "events:write" in response.json()["error"]["message"]
    assert events(api.runtime) == []
    erase = api.http.delete("/v1/contacts/ana@example.com", headers=api.auth("reader"))
    assert erase.status_code == 403


# --- limits -------------------------------------------------------------------------------


def test_a_body_over_the_default_limit_is_413(api: Api) -> None:
    # Given a body just over 1 MiB
    big = {"email": "ana@example.com", "type": "page.viewed", "properties": {"x": "y" * 2**20}}
    response = api.post_events(big)
    # Then it is refused before anything is parsed or recorded
    assert response.status_code == 413
    assert response.json()["error"]["message"] == f"request body is larger than {2**20} bytes"
    assert events(api.runtime) == []


def test_a_streamed_body_over_a_configured_limit_is_413(sqlite_url: str) -> None:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        for api in serve(runtime, clock, email, max_body_bytes=2048):

            def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
                yield b'{"email": "ana@example.com", "type": "page.viewed", "properties": {"x": "'
                for _ in range(4):
                    yield b"y" * 1024
                yield b'"}}'

            response = api.http.post("/v1/events", content=chunks(), headers=api.auth())
            assert response.status_code == 413
            small = api.post_events(event("ana@example.com"))
            assert small.status_code == 202
    finally:
        runtime.close()


# --- health and metrics -------------------------------------------------------------------


def test_health_and_readiness(api: Api) -> None:
    # Readiness checks the schema's revision: these tables came from create_all
    migrations.stamp(api.runtime.settings.database_url)
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readiness_is_503_naming_the_database_when_it_is_unreachable(tmp_path: Path) -> None:
    # Given a runtime whose database cannot be opened
    url = f"sqlite:///{tmp_path}/missing-folder/journeyline.db"
    runtime, _clock, _email = make_runtime(url, create_schema=False)
    try:
        with LiveServer(create_app(runtime)) as base, httpx.Client(base_url=base) as http:
            response = http.get("/readyz")
            assert http.get("/healthz").status_code == 200
    finally:
        runtime.close()
    # Then it is not ready, and says the database is why
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("failed")


def test_metrics_count_rows_and_requests(api: Api) -> None:
    # Given one contact in decision and two in awareness
    api.post_events(event("ana@example.com", "trial.started"))
    api.post_events({"events": [event("bo@example.com"), event("cy@example.com")]})
    api.runtime.drain()
    api.get_contact("nobody@example.com")
    # When Prometheus scrapes
    response = api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    # Then it sees the rows by status and stage, and the requests by route
    assert 'journeyline_contacts{stage="decision"} 1.0' in text
    assert 'journeyline_contacts{stage="awareness"} 2.0' in text
    assert 'journeyline_events{status="processed"}' in text
    assert 'journeyline_actions{status="sent"}' in text
    assert "journeyline_database_up 1.0" in text
    assert (
        'journeyline_http_requests_total{method="POST",route="/v1/events",status="202"} 2.0' in text
    )
    assert (
        'journeyline_http_requests_total{method="GET",route="/v1/contacts/{email}",status="404"}'
        in text
    )
    assert "journeyline_http_request_duration_seconds_bucket" in text
    assert "nobody@example.com" not in text


def test_openapi_documents_the_routes_and_docs_are_served(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/v1/events",
        "/v1/contacts/{email}",
        "/v1/contacts/{email}/export",
        "/v1/reports",
        "/v1/reports.html",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/webhooks/sendgrid",
        "/v1/webhooks/hubspot",
        "/v1/webhooks/{source}",
    }
    post = schema["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"202", "401", "403", "413", "422"}
    assert post["security"] == [{"ApiKey": []}]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["oneOf"]) == 2
    assert schema["components"]["schemas"]["EventIn"]["examples"]
    assert api.http.get("/docs").status_code == 200


def test_the_app_builds_without_touching_the_database() -> None:
    db = make_engine("sqlite://")
    runtime = Runtime(db=db, email=RecordingEmailConnector())
    try:
        assert create_app(runtime).title == "Journeyline"
    finally:
        runtime.close()


# --- journeyline serve ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    """A ``journeyline serve`` process: its client while it runs, its output once stopped."""

    process: subprocess.Popen[str]
    http: httpx.Client
    out: str = ""
    err: str = ""


@contextmanager
def serving(
    env: dict[str, str], cwd: Path, *, stop: signal.Signals = signal.SIGTERM
) -> Iterator[Served]:
    """Run ``journeyline serve`` with ``env`` until it answers ``/readyz``; stop it with
    ``stop`` on the way out, keeping what it printed."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "journeyline"), "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            served = Served(process, http)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.05)
            yield served
    finally:
        process.send_signal(stop)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    served.out, served.err = out, err


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_journeyline_serve_records_processes_and_sends_then_stops_cleanly(
    tmp_path: Path, stop: signal.Signals
) -> None:
    # Given a migrated database, a key, and `journeyline serve` on stub://
    url = f"sqlite:///{tmp_path}/serve.db"
    migrations.upgrade(url)
    db = make_engine(url)
    try:
        with transaction(db) as session:
            plaintext = create_key(session, "test", ["events:write"], VirtualClock().now())[1]
    finally:
        db.dispose()
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": url,
        "JOURNEYLINE_BROKER_URL": "stub://",
        "JOURNEYLINE_EMAIL_CONNECTOR": "outbox",
        "JOURNEYLINE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "JOURNEYLINE_LOG_LEVEL": "WARNING",
    }
    deadline = time.monotonic() + 60
    with serving(env, tmp_path, stop=stop) as served:
        # When a trial starts
        response = served.http.post(
            "/v1/events",
            json=event("ana@example.com", "trial.started", timezone=midday_zone()),
            headers={"Authorization": f"Bearer {plaintext}"},
        )
        assert response.status_code == 202, response.text
        # Then the in-process worker sends her emails without anyone draining
        while len(list((tmp_path / "outbox").glob("*.eml"))) < 2:
            assert time.monotonic() < deadline, "no email was sent"
            time.sleep(0.05)
    # And the signal stops it cleanly
    assert served.process.returncode == 0, served.err
    assert "Traceback" not in served.err


def test_engine_errors_map_to_their_status(sqlite_url: str) -> None:
    # Given an app with a route that raises what a future trigger endpoint would
    from engine.errors import InvalidTransition

    runtime, _clock, _email = make_runtime(sqlite_url)
    app = create_app(runtime)

    @app.post("/boom")
    def boom() -> None:
        raise InvalidTransition(
            contact="ana@example.com", stage="awareness", trigger="churn", reason="not allowed"
        )

    try:
        with LiveServer(app) as base, httpx.Client(base_url=base) as http:
            response = http.post("/boom")
    finally:
        runtime.close()
    # Then the stage machine's refusal is a 409 with the engine's message
    assert response.status_code == 409
    assert "cannot take trigger 'churn'" in response.json()["error"]["message"]


def test_the_api_package_exports() -> None:
    import engine.api

    assert sorted(engine.api.__all__) == ["ApiSettings", "create_app"]
