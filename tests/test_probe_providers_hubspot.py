"""HubSpot failures that may come after HubSpot did the work (provider probe): a task or a
note is never created twice. Over real HTTP against the shipped fake."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connectors.crm.hubspot import HubSpotConnector
from connectors.fakes import FakeHubSpot
from connectors.fakes.hubspot import webhook_event
from engine import (
    DeliveryUnknownError,
    Settings,
    TransientConnectorError,
    VirtualClock,
    Workflow,
    build_registry,
    create_crm_task,
    lifecycle_journey,
    on_event,
)
from engine.inbound_crm import record_hubspot_events
from engine.runtime import Runtime
from tests.language_support import TEMPLATES, running
from tests.support import actions, contact, make_runtime
from workflows.rules import RULES

TOKEN = "pat-probe"
WELCOME = Workflow("welcome", trigger=on_event("demo.requested"), steps=[create_crm_task("Call")])
TASKS = "/crm/v3/objects/tasks"


@pytest.mark.parametrize("status", [502, 504, 524])
def test_a_gateway_error_after_creating_a_task_is_delivery_unknown(status: int) -> None:
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as fake:
        crm = HubSpotConnector(token=TOKEN, base_url=fake.url, backoff_s=0.0)
        try:
            fake.add_contact("ana@example.com")
            # Given HubSpot creates the task but its gateway answers an error
            fake.fail_next(status, method="POST", path=TASKS, after_accepting=True)
            # When the connector creates it
            with pytest.raises(DeliveryUnknownError, match=str(status)):
                crm.create_task("ana@example.com", "Call Ana", "She asked for a demo")
        finally:
            crm.close()
        # Then the task exists once, and it was not called a retryable failure
        assert len(fake.tasks()) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_hubspots_own_server_errors_on_a_task_are_still_retried(status: int) -> None:
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as fake:
        crm = HubSpotConnector(token=TOKEN, base_url=fake.url, backoff_s=0.0)
        try:
            fake.add_contact("ana@example.com")
            fake.fail_next(status, method="POST", path=TASKS)
            with pytest.raises(TransientConnectorError):
                crm.create_task("ana@example.com", "Call Ana", "She asked for a demo")
        finally:
            crm.close()
        assert fake.tasks() == []


def test_an_idempotent_call_after_a_gateway_error_is_retried() -> None:
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as fake:
        crm = HubSpotConnector(token=TOKEN, base_url=fake.url, backoff_s=0.0)
        try:
            fake.fail_next(504, path="/crm/v3/objects/contacts/batch/upsert", after_accepting=True)
            (record,) = crm.batch_upsert_contacts([("ana@example.com", {"firstname": "Ana"})])
        finally:
            crm.close()
        assert record.id and fake.contact("ana@example.com") is not None
        assert [r.status for r in fake.requests] == [504, 200]


def test_a_crm_task_step_whose_answer_was_lost_is_created_once(tmp_path: Path) -> None:
    sales = Workflow(
        "sales_call",
        trigger=on_event("demo.requested"),
        steps=[create_crm_task("Call this lead", body="Asked for a demo")],
    )
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as hubspot:
        first, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
        url = first.settings.database_url
        first.close()
        clock = VirtualClock()
        settings = Settings(
            database_url=url,
            broker_url="inline://",
            crm_connector="hubspot",
            hubspot_token=TOKEN,
            hubspot_base_url=hubspot.url,
            max_attempts=3,
        )
        registry = build_registry(
            journey=lifecycle_journey(), rules=RULES, workflows=[sales], templates_dir=TEMPLATES
        )
        rt = Runtime(settings, clock=clock, registry=registry)
        try:
            hubspot.add_contact("lead@example.com")
            # Given HubSpot creates the task but the answer is a gateway timeout
            hubspot.fail_next(504, method="POST", path=TASKS, after_accepting=True)
            rt.track("lead@example.com", "demo.requested")
            rt.run_until_idle()
            # When the engine runs on past every retry delay
            clock.advance(timedelta(hours=2))
            rt.run_until_idle()
            # Then the sales rep has one task to call, and the action says it is unknown
            (task,) = hubspot.tasks()
            assert task.properties["hs_task_subject"] == "Call this lead"
            (action,) = [a for a in actions(rt) if a.kind == "crm.task"]
            assert action.status == "unknown"
        finally:
            rt.close()


# --- inbound: an email changed in HubSpot -------------------------------------------------


def _email_change(object_id: int, address: str, at_ms: int) -> dict[str, object]:
    return webhook_event(
        "contact.propertyChange",
        object_id,
        property_name="email",
        property_value=address,
        occurred_at_ms=at_ms,
    )


def _stage_change(object_id: int, value: str, at_ms: int) -> dict[str, object]:
    return webhook_event(
        "contact.propertyChange",
        object_id,
        property_name="lifecyclestage",
        property_value=value,
        occurred_at_ms=at_ms,
    )


def test_after_an_email_change_in_hubspot_its_events_reach_the_new_address(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        t = int(clock.now().timestamp() * 1000)
        # Given HubSpot contact 501 was old@ and its email was changed to new@
        record_hubspot_events(rt, [_email_change(501, "old@example.com", t)])
        record_hubspot_events(rt, [_email_change(501, "new@example.com", t + 1000)])
        rt.run_until_idle()
        # When the sales team makes it a customer
        record_hubspot_events(rt, [_stage_change(501, "customer", t + 2000)])
        rt.run_until_idle()
        # Then the contact of the new address moves, and the old one is no longer linked
        assert contact(rt, "new@example.com").stage == "onboarding"
        assert contact(rt, "new@example.com").external_ids == {"hubspot": "501"}
        assert contact(rt, "old@example.com").external_ids == {}
        assert contact(rt, "old@example.com").stage == "awareness"


def test_a_late_old_address_does_not_take_the_link_back(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        t = int(clock.now().timestamp() * 1000)
        # Given the new address arrives first and the old one's delivery comes late
        record_hubspot_events(rt, [_email_change(501, "new@example.com", t + 1000)])
        record_hubspot_events(rt, [_email_change(501, "old@example.com", t)])
        record_hubspot_events(rt, [_stage_change(501, "customer", t + 2000)])
        rt.run_until_idle()
        # Then the link stays with the newer address
        assert contact(rt, "new@example.com").external_ids == {"hubspot": "501"}
        assert contact(rt, "new@example.com").stage == "onboarding"
        assert contact(rt, "old@example.com").external_ids == {}
