"""Consent at entry and on unsubscribe: a workflow that sends a transactional email (a
receipt) admits an unsubscribed contact and keeps one who unsubscribes before it; its
marketing emails are skipped at send time. A marketing-only workflow refuses them, and
says so in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine import Workflow, branch, has_tag, on_event, send_email, wait
from tests.language_support import running, sent
from tests.support import actions, enrollments

ORDER_FLOW = Workflow(
    "order_flow",
    trigger=on_event("order.completed"),
    steps=[
        send_email("thank_you", id="receipt", marketing=False),
        wait(days=7),
        send_email("guide", id="crosssell"),
    ],
)
NEWSLETTER = Workflow(
    "newsletter",
    trigger=on_event("order.completed"),
    steps=[send_email("welcome", id="news")],
)
WELCOME_THEN_RECEIPT = Workflow(
    "welcome_then_receipt",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("welcome", id="hello"),
        wait(days=1),
        branch(has_tag("vip"), then=[send_email("thank_you", id="vip_receipt", marketing=False)]),
    ],
)


def _statuses(rt: object) -> dict[str, tuple[str, str | None]]:
    return {
        str(a.reason["step"]): (str(a.status), a.reason.get("skipped"))
        for a in actions(rt)  # type: ignore[arg-type]
    }


def test_an_unsubscribed_customer_gets_the_receipt_and_not_the_cross_sell(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ORDER_FLOW]) as (rt, clock, email):
        # Given a contact who unsubscribed earlier
        rt.track("ana@example.com", "email.unsubscribed")
        rt.run_until_idle()
        # When she orders
        rt.track("ana@example.com", "order.completed")
        rt.run_until_idle()
        # Then the receipt goes at once
        assert sent(email, "ana@example.com") == ["order_flow:receipt"]
        # And a week later the cross-sell is skipped, saying why
        clock.advance(days=7, minutes=1)
        rt.run_until_idle()
        assert sent(email, "ana@example.com") == ["order_flow:receipt"]
        assert _statuses(rt)["crosssell"] == ("skipped", "contact is unsubscribed")
        (enrolled,) = enrollments(rt)
        assert enrolled.status == "completed"


def test_a_marketing_only_workflow_refuses_an_unsubscribed_contact_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(tmp_path, [NEWSLETTER, ORDER_FLOW]) as (rt, _clock, email):
        rt.track("bo@example.com", "email.unsubscribed")
        rt.run_until_idle()
        with caplog.at_level(logging.INFO, logger="engine.executor"):
            rt.track("bo@example.com", "order.completed")
            rt.run_until_idle()
        # Then the marketing-only workflow did not take him; the receipt still went
        assert {e.workflow for e in enrollments(rt)} == {"order_flow"}
        assert sent(email, "bo@example.com") == ["order_flow:receipt"]
        # And the refusal is in the log, naming contact, workflow and why
        (line,) = [r.getMessage() for r in caplog.records if "not enrolled in" in r.getMessage()]
        assert "not enrolled in newsletter: contact is unsubscribed" in line
        assert "sends only marketing email" in line


def test_unsubscribing_mid_way_ends_the_cross_sell_once_the_receipt_went(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ORDER_FLOW]) as (rt, _clock, email):
        rt.track("cy@example.com", "order.completed")
        rt.run_until_idle()
        assert sent(email, "cy@example.com") == ["order_flow:receipt"]
        # Nothing transactional is left: unsubscribing ends the workflow as before
        rt.track("cy@example.com", "email.unsubscribed")
        rt.run_until_idle()
        (enrolled,) = enrollments(rt)
        assert (enrolled.status, enrolled.context.get("end_reason")) == ("exited", "unsubscribed")


def test_unsubscribing_before_a_transactional_step_keeps_the_workflow_for_it(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME_THEN_RECEIPT]) as (rt, clock, email):
        rt.track("di@example.com", "demo.requested", attributes={"tags": ["vip"]})
        rt.run_until_idle()
        assert sent(email, "di@example.com") == ["welcome_then_receipt:hello"]
        # When she unsubscribes while a transactional email lies ahead (behind a branch)
        rt.track("di@example.com", "email.unsubscribed")
        rt.run_until_idle()
        (enrolled,) = enrollments(rt)
        assert enrolled.status == "waiting"
        clock.advance(days=1, minutes=1)
        rt.run_until_idle()
        assert sent(email, "di@example.com") == [
            "welcome_then_receipt:hello",
            "welcome_then_receipt:vip_receipt",
        ]
        (enrolled,) = enrollments(rt)
        assert enrolled.status == "completed"
