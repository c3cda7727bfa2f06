"""End to end over real HTTP: HubSpot -> Journeyline -> SendGrid -> Journeyline.

The service runs under uvicorn on a free port; FakeHubSpot and FakeSendGrid are real local
HTTP servers; the SendGrid and HubSpot connectors are configured against them (this journey
writes nothing to the CRM: the onboarding CRM task only comes after days without progress);
the default playbook (``workflows/``) decides what is sent. The journey:

1. a signed HubSpot webhook says a contact became a ``customer``: our contact moves to
   ``onboarding``, which starts the onboarding workflow, whose welcome email is posted to
   the fake SendGrid;
2. the fake SendGrid posts signed ``delivered`` and ``open`` events for it back to the
   service (twice, as SendGrid does): they show once on the contact's timeline, tied to the
   action that sent the email;
3. a signed ``bounce`` suppresses the contact, and the next onboarding email (due when the
   product reports a setup step) is skipped, never posted.

It runs twice: SQLite with the in-process worker, and PostgreSQL with Redis and a real
``journeyline worker`` process (skipped locally without them, failing under ``CI=true``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, SQLModel, select

import engine.api_keys  # noqa: F401  (registers the api_keys table before create_all)
from connectors.fakes import (
    FakeHubSpot,
    FakeSendGrid,
    SentMessage,
    hubspot_webhook_event,
    send_hubspot_webhook,
)
from engine import Settings, SystemClock
from engine.api import create_app
from engine.db import make_engine
from engine.models import Action, ActionStatus, Suppression
from engine.runtime import Runtime
from tests.support import mark_migrated
from tests.test_api import LiveServer, add_key

REPO = Path(__file__).parent.parent
SENDGRID_KEY = "SG.e2e-key"
HUBSPOT_TOKEN = "pat-e2e-token"
HUBSPOT_SECRET = "e2e-client-secret"
WHO = "ana@example.com"


def wait_until(check: Callable[[], bool], *, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Stack:
    runtime: Runtime
    sendgrid: FakeSendGrid
    hubspot: FakeHubSpot
    api_url: str
    http: httpx.Client
    key: str

    def contact(self, email: str = WHO) -> dict[str, Any]:
        response = self.http.get(
            f"/v1/contacts/{email}", headers={"Authorization": f"Bearer {self.key}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def action(self, step: str, workflow: str = "onboarding_guide") -> Action | None:
        with Session(self.runtime.db) as session:
            for action in session.exec(select(Action)).all():
                if (action.reason.get("workflow"), action.reason.get("step")) == (workflow, step):
                    return action
        return None

    def sent_to(self, email: str = WHO) -> list[SentMessage]:
        return [m for m in self.sendgrid.sent_messages() if m.to == email]


def settings_env(database_url: str, broker_url: str, sendgrid: str, hubspot: str) -> dict:
    return {
        "database_url": database_url,
        "broker_url": broker_url,
        "email_connector": "sendgrid",
        "sendgrid_api_key": SENDGRID_KEY,
        "sendgrid_host": sendgrid,
        "crm_connector": "hubspot",
        "hubspot_token": HUBSPOT_TOKEN,
        "hubspot_base_url": hubspot,
        "hubspot_client_secret": HUBSPOT_SECRET,
        "worker_threads": 2,
    }


@contextmanager
def running_stack(database_url: str, broker_url: str, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as stack:
        sendgrid = stack.enter_context(FakeSendGrid(api_key=SENDGRID_KEY))
        hubspot = stack.enter_context(FakeHubSpot(token=HUBSPOT_TOKEN, max_per_interval=None))
        values = settings_env(database_url, broker_url, sendgrid.url, hubspot.url)
        values["sendgrid_webhook_public_key"] = sendgrid.webhook_public_key
        db = make_engine(database_url)
        SQLModel.metadata.create_all(db)
        with db.begin() as conn:
            mark_migrated(conn)  # the worker process checks the schema's revision
        runtime = Runtime(Settings(**values), clock=SystemClock(), db=db)
        stack.callback(runtime.close)
        if runtime.in_process:
            runtime.start()
        else:
            stack.enter_context(worker_process(values, tmp_path))
        key = add_key(runtime, "e2e", "contacts:read")
        url = stack.enter_context(LiveServer(create_app(runtime)))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        yield Stack(runtime, sendgrid, hubspot, url, http, key)


@contextmanager
def worker_process(values: dict[str, Any], tmp_path: Path) -> Iterator[None]:
    """``journeyline worker`` in a process of its own, configured by environment."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        **{f"JOURNEYLINE_{k.upper()}": str(v) for k, v in values.items()},
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--processes", "1", "--threads", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in output, output


def journey(stack: Stack) -> None:
    hubspot_url = f"{stack.api_url}/v1/webhooks/hubspot"
    sendgrid_url = f"{stack.api_url}/v1/webhooks/sendgrid"

    # Given HubSpot tells us, signed (v3), that contact 9001 is ana and became a customer
    # (at the API's "now": its SystemClock checks the signature's freshness)
    now_ms = int(SystemClock().now().timestamp() * 1000)
    batch = [
        hubspot_webhook_event(
            "contact.propertyChange",
            9001,
            property_name="email",
            property_value="Ana@Example.com",
            occurred_at_ms=now_ms - 2,
        ),
        hubspot_webhook_event(
            "contact.propertyChange",
            9001,
            property_name="lifecyclestage",
            property_value="customer",
            occurred_at_ms=now_ms - 1,
        ),
    ]
    answer = send_hubspot_webhook(
        hubspot_url, batch, client_secret=HUBSPOT_SECRET, timestamp_ms=now_ms
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 2

    # Then she reaches onboarding and the onboarding welcome is posted to SendGrid
    wait_until(
        lambda: any("onboarding_guide:welcome" in m.categories for m in stack.sent_to()),
        what="the onboarding welcome at the fake SendGrid",
    )
    shown = stack.contact()
    assert shown["contact"]["stage"] == "onboarding"
    assert [e["summary"] for e in shown["timeline"] if e["kind"] == "stage"][-1] == (
        "purchase -> onboarding by onboard"
    )
    (welcome,) = [m for m in stack.sent_to() if "onboarding_guide:welcome" in m.categories]
    welcome_action = stack.action("welcome")
    assert welcome_action is not None
    assert welcome.custom_args["jl_action_id"] == str(welcome_action.id)

    # When SendGrid reports it delivered and opened, signed, and delivers that batch twice
    events = [stack.sendgrid.event("delivered", welcome), stack.sendgrid.event("open", welcome)]
    signed_at = int(SystemClock().now().timestamp())  # the API's clock judges freshness
    answer = stack.sendgrid.post_events(sendgrid_url, events, duplicates=1, timestamp=signed_at)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["recorded"], answer.json()["duplicates"]) == (0, 2)
    assert [d.json()["recorded"] for d in stack.sendgrid.deliveries] == [2, 0]

    # Then both show once on her timeline, tied to the action that sent the welcome
    timeline = stack.contact()["timeline"]
    email_events = [
        e["details"]
        for e in timeline
        if e["kind"] == "event" and e["details"]["source"] == "sendgrid"
    ]
    assert [(e["type"], e["properties"]["action_id"]) for e in email_events] == [
        ("email.delivered", str(welcome_action.id)),
        ("email.opened", str(welcome_action.id)),
    ]

    # When her mailbox bounces, signed
    bounce = [stack.sendgrid.event("bounce", welcome)]
    answer = stack.sendgrid.post_events(
        sendgrid_url, bounce, timestamp=int(SystemClock().now().timestamp())
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    with Session(stack.runtime.db) as session:
        suppressed = session.exec(select(Suppression)).all()
    assert [(s.email, s.reason) for s in suppressed] == [(WHO, "bounce")]
    posts_before = len(stack.sendgrid.requests)

    # And the product then reports a setup step, which is when onboarding's next email is due
    stack.runtime.track(WHO, "product.step_completed", {"step": "data_connected"})

    # Then that email is skipped as suppressed, and nothing more reaches SendGrid
    def next_steps_done() -> bool:
        action = stack.action("next_steps")
        return action is not None and action.status not in (
            ActionStatus.PENDING,
            ActionStatus.SENDING,
        )

    wait_until(next_steps_done, what="the next onboarding email to be settled")
    next_steps = stack.action("next_steps")
    assert next_steps is not None
    assert next_steps.status == ActionStatus.SKIPPED
    assert "suppressed" in str(next_steps.reason.get("skipped"))
    assert len(stack.sendgrid.requests) == posts_before
    summaries = [e["summary"] for e in stack.contact()["timeline"] if e["kind"] == "action"]
    assert any("onboarding_guide/next_steps: skipped (suppressed" in s for s in summaries)


def test_hubspot_to_sendgrid_and_back_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    with running_stack(sqlite_url, "stub://", tmp_path) as stack:
        journey(stack)


@pytest.mark.postgres
@pytest.mark.redis
def test_hubspot_to_sendgrid_and_back_on_postgres_with_a_worker_process(
    pg_db_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(pg_db_url, redis_url, tmp_path) as stack:
        stack.runtime.broker.flush_all()
        journey(stack)
