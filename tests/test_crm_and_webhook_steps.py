"""CRM and outgoing-webhook steps, performed through their connectors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connectors.webhooks import JOURNEYLINE_SIGNATURE_HEADER, verify_hmac
from engine import (
    Workflow,
    call_webhook,
    create_crm_note,
    create_crm_task,
    on_event,
    update_crm,
)
from tests.language_support import running
from tests.support import actions

SECRET = "s3cret-for-tests"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_crm_steps_land_in_the_crm_outbox_once(tmp_path: Path) -> None:
    flow = Workflow(
        "sales",
        trigger=on_event("demo.requested"),
        steps=[
            update_crm(lead_status="demo requested"),
            create_crm_task("Call this lead", body="Asked for a demo"),
            create_crm_note("Asked for a demo from the pricing page"),
        ],
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        rt.track("lead@example.com", "demo.requested")
        rt.drain()
        kinds = {a.kind: a for a in actions(rt)}
        assert {k: a.status for k, a in kinds.items()} == {
            "crm.update": "sent",
            "crm.task": "sent",
            "crm.note": "sent",
        }
        files = sorted((tmp_path / "outbox" / "crm").glob("*.json"))
        assert len(files) == 3
        note = json.loads(next(f for f in files if f.name.startswith("crm.note")).read_text())
        assert note["payload"]["body"] == "Asked for a demo from the pricing page"
        task = json.loads(next(f for f in files if f.name.startswith("crm.task")).read_text())
        assert task["email"] == "lead@example.com"
        assert task["payload"]["subject"] == "Call this lead"
        # readable by their owner only, as the email outbox's files (they hold addresses)
        assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
        # performing again writes nothing new
        for action in kinds.values():
            rt.perform(action.id)
        assert len(list((tmp_path / "outbox" / "crm").glob("*.json"))) == 3


def test_a_crm_step_without_a_crm_connector_fails_clearly(tmp_path: Path) -> None:
    flow = Workflow(
        "sales", trigger=on_event("demo.requested"), steps=[create_crm_task("Call this lead")]
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        rt.extra_performers = {**rt.extra_performers, "crm.task": _unconfigured()}
        rt.track("lead@example.com", "demo.requested")
        rt.drain()
        (action,) = actions(rt)
        assert action.status == "failed"
        assert "JOURNEYLINE_CRM_CONNECTOR" in (action.error or "")


def _unconfigured():  # type: ignore[no-untyped-def]
    from engine.performers import Unconfigured

    return Unconfigured("CRM", "JOURNEYLINE_CRM_CONNECTOR")


def test_a_webhook_step_posts_a_signed_body(tmp_path: Path, receiver) -> None:
    url, handler = receiver
    flow = Workflow(
        "notify",
        trigger=on_event("order.completed"),
        steps=[call_webhook(url, payload={"channel": "#sales"})],
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        from connectors.webhooks import WebhookSender
        from engine.performers import WebhookPerformer

        sender = WebhookSender(secret=SECRET)
        rt.extra_performers = {**rt.extra_performers, "webhook": WebhookPerformer(sender)}
        try:
            rt.track("buyer@example.com", "order.completed", {"total": 10})
            rt.drain()
        finally:
            sender.close()
        (action,) = actions(rt)
        assert action.status == "sent"
        ((headers, body),) = handler.received
        verify_hmac(
            secret=SECRET,
            body=body,
            signature=headers[JOURNEYLINE_SIGNATURE_HEADER],
            timestamp=None,
            now=datetime.now(UTC),
        )
        sent = json.loads(body)
        assert sent["contact"]["email"] == "buyer@example.com"
        assert sent["data"] == {"channel": "#sales"}
        assert headers["Idempotency-Key"] == action.idempotency_key


def test_a_webhook_step_without_a_secret_fails_clearly(tmp_path: Path) -> None:
    flow = Workflow(
        "notify", trigger=on_event("order.completed"), steps=[call_webhook("http://127.0.0.1:9/x")]
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        rt.track("buyer@example.com", "order.completed")
        rt.drain()
        (action,) = actions(rt)
        assert action.status == "failed"
        assert "JOURNEYLINE_WEBHOOK_SECRET" in (action.error or "")


def test_crm_steps_reach_hubspot_over_http(tmp_path: Path) -> None:
    from connectors.fakes import FakeHubSpot
    from engine import Settings, build_registry, lifecycle_journey, on_stage_entered
    from engine.runtime import Runtime
    from tests.language_support import TEMPLATES
    from tests.support import make_runtime
    from workflows.rules import RULES

    sales = Workflow(
        "sales_handoff",
        trigger=on_stage_entered("decision"),
        steps=[
            update_crm(lead_source="journeyline"),
            create_crm_task("Call this trial", body="Started a trial"),
            create_crm_note("Started a trial from the pricing page"),
        ],
    )
    with FakeHubSpot(token="pat-test", max_per_interval=None) as hubspot:
        runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
        settings = Settings(
            database_url=runtime.settings.database_url,
            broker_url="inline://",
            crm_connector="hubspot",
            hubspot_token="pat-test",
            hubspot_base_url=hubspot.url,
        )
        runtime.close()
        rt = Runtime(
            settings,
            registry=build_registry(
                journey=lifecycle_journey(), rules=RULES, workflows=[sales], templates_dir=TEMPLATES
            ),
        )
        try:
            rt.track("trial@example.com", "trial.started")
            rt.run_until_idle()
            assert {a.kind: a.status for a in actions(rt)} == {
                "crm.update": "sent",
                "crm.task": "sent",
                "crm.note": "sent",
            }
            score = next(a.payload["score"] for a in actions(rt) if a.kind == "crm.update")
        finally:
            rt.close()
        mirrored = hubspot.contact("trial@example.com")
        assert mirrored is not None
        assert mirrored["lead_source"] == "journeyline"
        assert mirrored["lifecyclestage"] == "salesqualifiedlead"
        # our score and the workflow land in the default mirror properties
        assert mirrored["journeyline_last_workflow"] == "sales_handoff"
        assert str(mirrored["journeyline_score"]) == str(score)
        (task,) = hubspot.tasks()
        assert "Call this trial" in str(task)
        (note,) = hubspot.notes()
        assert "Started a trial from the pricing page" in str(note)


def test_hubspot_without_a_token_is_a_configuration_error(tmp_path: Path) -> None:
    from engine import ConfigurationError, Settings
    from engine.runtime import Runtime

    with pytest.raises(ConfigurationError, match="JOURNEYLINE_HUBSPOT_TOKEN"):
        Runtime(Settings(database_url=f"sqlite:///{tmp_path}/x.db", crm_connector="hubspot"))


def test_a_crm_task_and_note_print_the_contacts_fields(tmp_path: Path) -> None:
    flow = Workflow(
        "sales",
        trigger=on_event("demo.requested"),
        steps=[
            create_crm_task(
                "Call {{ contact.first_name }} ({{ contact.plan }})",
                body="Score {{ contact.score }}; company {{ contact.company }}",
            ),
            create_crm_note("{{ contact.email }} asked for a demo"),
        ],
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        rt.track("lead@example.com", "demo.requested",
                 attributes={"first_name": "Ana", "plan": "team"})  # fmt: skip
        rt.drain()
        files = sorted((tmp_path / "outbox" / "crm").glob("*.json"))
        task = json.loads(next(f for f in files if f.name.startswith("crm.task")).read_text())
        assert task["payload"]["subject"] == "Call Ana (team)"
        # A field the contact lacks prints as empty, as in emails
        assert task["payload"]["body"].startswith("Score ")
        assert task["payload"]["body"].endswith("; company ")
        note = json.loads(next(f for f in files if f.name.startswith("crm.note")).read_text())
        assert note["payload"]["body"] == "lead@example.com asked for a demo"


def test_a_crm_text_that_does_not_parse_is_refused_at_load() -> None:
    from engine import WorkflowDefinitionError, build_registry
    from tests.language_support import TEMPLATES

    for step in (
        create_crm_task("Call {{ contact.first_name"),
        create_crm_note("Hi {{ first_name }}"),
    ):
        flow = Workflow("sales", trigger=on_event("demo.requested"), steps=[step])
        with pytest.raises(WorkflowDefinitionError) as refused:
            build_registry(workflows=[flow], templates_dir=TEMPLATES)
        assert "sales" in str(refused.value)
        assert "does not parse" in str(refused.value) or "contact.first_name" in str(refused.value)
