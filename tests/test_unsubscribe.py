"""Unsubscribing from anywhere: an ``email.unsubscribed`` event from any source, the
contacts API and the CLI change consent exactly as a SendGrid unsubscribe does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine import Workflow, on_event, send_email, wait
from engine.inbound import record_sendgrid_events
from engine.models import Enrollment, Event
from tests.cli_support import cli_env, invoke
from tests.language_support import running, sent
from tests.support import contact, enrollments, make_runtime
from tests.test_api import Api, serve

SERIES = Workflow(
    "series",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("welcome", id="one"),
        wait(days=1),
        send_email("guide", id="two"),
    ],
)
RECEIPT = Workflow(
    "receipt",
    trigger=on_event("order.completed"),
    steps=[wait(days=1), send_email("thank_you", id="receipt", marketing=False)],
)


def _by_workflow(rows: list[Enrollment]) -> dict[str, tuple[str, str | None]]:
    return {e.workflow: (e.status, e.context.get("end_reason")) for e in rows}


# --- an email.unsubscribed event from any source ------------------------------------------


def test_a_tracked_unsubscribe_ends_marketing_as_sendgrids_does_and_is_idempotent(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [SERIES, RECEIPT]) as (rt, clock, email):
        # Given a contact in a marketing series with a receipt on its way
        rt.track("ana@example.com", "demo.requested")
        rt.track("ana@example.com", "order.completed")
        rt.run_until_idle()
        assert sent(email, "ana@example.com") == ["series:one"]
        # When the track API says she unsubscribed, twice
        rt.track("ana@example.com", "email.unsubscribed")
        rt.track("ana@example.com", "email.unsubscribed")
        rt.run_until_idle()
        # Then she is unsubscribed, the series ended, the receipt still goes
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"
        assert _by_workflow(enrollments(rt))["series"] == ("exited", "unsubscribed")
        clock.advance(days=2)
        rt.run_until_idle()
        assert sent(email, "ana@example.com") == ["series:one", "receipt:receipt"]
        with Session(rt.db) as session:
            types = [e.status for e in session.exec(select(Event)) if e.type.endswith("subscribed")]
        assert types == ["processed", "processed"]


def test_a_group_unsubscribe_and_resubscribe_from_another_source_set_consent(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [SERIES]) as (rt, _clock, _email):
        rt.track("bo@example.com", "demo.requested", source="webhook:crm")
        rt.track("bo@example.com", "email.group_unsubscribed", source="webhook:crm")
        rt.run_until_idle()
        assert contact(rt, "bo@example.com").subscription_status == "unsubscribed"
        assert _by_workflow(enrollments(rt))["series"] == ("exited", "unsubscribed")
        rt.track("bo@example.com", "email.group_resubscribed", source="webhook:crm")
        rt.run_until_idle()
        assert contact(rt, "bo@example.com").subscription_status == "subscribed"


def test_a_sendgrid_unsubscribe_is_applied_once_not_again_when_processed(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [SERIES]) as (rt, _clock, _email):
        rt.track("cy@example.com", "demo.requested")
        rt.run_until_idle()
        # Given SendGrid's unsubscribe, applied as it is recorded, its processing not yet run
        rt.enqueue_or_leave = lambda ids, what: True  # type: ignore[method-assign]
        unsubscribe = {
            "event": "unsubscribe",
            "email": "cy@example.com",
            "timestamp": 1772445600,
            "sg_event_id": "ev-1",
        }
        assert record_sendgrid_events(rt, [unsubscribe]).recorded == 1
        assert contact(rt, "cy@example.com").subscription_status == "unsubscribed"
        # When an operator subscribes her again before the pipeline gets to the event
        from engine.models import SubscriptionStatus
        from engine.unsubscribe import change_subscription

        change_subscription(rt, SubscriptionStatus.SUBSCRIBED, via="cli", email="cy@example.com")
        rt.process_contact(contact(rt, "cy@example.com").id)  # type: ignore[arg-type]
        # Then the later decision stands
        assert contact(rt, "cy@example.com").subscription_status == "subscribed"


# --- the contacts API ---------------------------------------------------------------------


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def test_put_unsubscribed_ends_marketing_workflows_and_shows_in_the_timeline(api: Api) -> None:
    # Given a new lead in the playbook's awareness nurture (a marketing workflow)
    assert api.post_events({"email": "dee@example.com", "type": "page.viewed"}).status_code == 202
    api.runtime.drain()
    assert _by_workflow(enrollments(api.runtime))["awareness_nurture"][0] in ("active", "waiting")
    # When she is unsubscribed through the contacts API, twice
    for _ in range(2):
        answer = api.http.put(
            "/v1/contacts/dee@example.com",
            json={"subscription_status": "unsubscribed"},
            headers=api.auth(),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["subscription_status"] == "unsubscribed"
    api.runtime.drain()
    # Then the nurture ended, and her timeline says how, once
    assert _by_workflow(enrollments(api.runtime))["awareness_nurture"] == (
        "exited",
        "unsubscribed",
    )
    timeline = api.get_contact("dee@example.com").json()["timeline"]
    noted = [e for e in timeline if e["summary"].startswith("email.unsubscribed")]
    assert len(noted) == 1
    # And subscribing again is allowed
    again = api.http.put(
        "/v1/contacts/dee@example.com",
        json={"subscription_status": "subscribed"},
        headers=api.auth(),
    )
    assert again.json()["subscription_status"] == "subscribed"


def test_put_refuses_another_subscription_status_naming_the_field(api: Api) -> None:
    answer = api.http.put(
        "/v1/contacts/eve@example.com",
        json={"subscription_status": "paused"},
        headers=api.auth(),
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == "subscription_status"
    assert "'subscribed' or 'unsubscribed'" in error["message"]
    assert api.get_contact("eve@example.com").status_code == 404  # nothing written


def test_an_unsubscribe_through_the_track_api_ends_marketing(api: Api) -> None:
    api.post_events({"email": "fay@example.com", "type": "page.viewed"})
    api.runtime.drain()
    answer = api.post_events({"email": "fay@example.com", "type": "email.unsubscribed"})
    assert answer.status_code == 202
    api.runtime.drain()
    assert contact(api.runtime, "fay@example.com").subscription_status == "unsubscribed"
    assert _by_workflow(enrollments(api.runtime))["awareness_nurture"] == (
        "exited",
        "unsubscribed",
    )


# --- the CLI ------------------------------------------------------------------------------


def test_the_cli_unsubscribes_and_resubscribes_saying_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = cli_env(tmp_path, monkeypatch, columns=200)
    url = str(env["url"])
    assert invoke("track", "gil@example.com", "page.viewed", "--database-url", url).exit_code == 0
    done = invoke("contact", "gil@example.com", "--unsubscribe", "--database-url", url)
    assert done.exit_code == 0, done.output
    assert "gil@example.com unsubscribed: their marketing workflows ended" in done.output
    again = invoke("contact", "gil@example.com", "--unsubscribe", "--database-url", url)
    assert "already unsubscribed: nothing changed" in again.output
    shown = invoke("contact", "gil@example.com", "--database-url", url)
    assert "unsubscribed" in shown.output and "email.unsubscribed" in shown.output
    back = invoke("contact", "gil@example.com", "--resubscribe", "--database-url", url)
    assert "subscribed again" in back.output
    unknown = invoke("contact", "nobody@example.com", "--unsubscribe", "--database-url", url)
    assert unknown.exit_code == 1
    both = invoke("contact", "gil@example.com", "--unsubscribe", "--resubscribe")
    assert both.exit_code == 2 and "contradict" in both.output
