"""SendGrid delivery and engagement events: recorded once, tied to actions, suppressing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlmodel import Session, select

from engine import Workflow, on_event, opened, send_email, wait
from engine.inbound import record_sendgrid_events
from engine.models import Action, Event, Suppression
from engine.steps import branch
from tests.language_support import running, sent
from tests.support import actions, contact, enrollments

SERIES = Workflow(
    "series",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("welcome", id="one"),
        wait(days=1),
        branch(
            opened("one"),
            then=[send_email("guide", id="engaged")],
            otherwise=[send_email("comparison_guide", id="not_engaged")],
        ),
        wait(days=1),
        send_email("demo_invitation", id="three"),
    ],
)
RECEIPT = Workflow(
    "receipt",
    trigger=on_event("order.completed"),
    steps=[send_email("thank_you", id="receipt", marketing=False)],
)


def sg(event: str, email: str, action_id: int, n: int, **extra: object) -> dict:
    return {
        "event": event,
        "email": email,
        "timestamp": 1772445600 + n,
        "sg_event_id": f"ev-{event}-{n}",
        "sg_message_id": f"msg-{action_id}",
        "jl_action_id": str(action_id),
        **extra,
    }


def test_open_events_feed_engagement_branches_and_dedupe(tmp_path: Path) -> None:
    with running(tmp_path, [SERIES]) as (rt, clock, email):
        rt.track("reader@example.com", "demo.requested")
        rt.track("ignorer@example.com", "demo.requested")
        rt.run_until_idle()
        first = {a.contact_id: a for a in actions(rt)}
        reader = contact(rt, "reader@example.com")
        batch = [
            sg("delivered", "reader@example.com", first[reader.id].id, 1),
            sg("open", "reader@example.com", first[reader.id].id, 2),
        ]
        # SendGrid retries the whole POST: the second delivery must record nothing
        assert record_sendgrid_events(rt, batch).recorded == 2
        again = record_sendgrid_events(rt, batch)
        assert (again.recorded, again.duplicates) == (0, 2)
        clock.advance(days=1)
        rt.run_until_idle()
        assert sent(email, "reader@example.com")[-1] == "series:engaged"
        assert sent(email, "ignorer@example.com")[-1] == "series:not_engaged"
        with Session(rt.db) as session:
            opened_events = session.exec(select(Event).where(Event.type == "email.opened"))
            assert [e.properties["action_id"] for e in opened_events] == [str(first[reader.id].id)]


def test_a_bounce_suppresses_and_the_next_email_is_not_sent(tmp_path: Path) -> None:
    with running(tmp_path, [SERIES, RECEIPT]) as (rt, clock, email):
        rt.track("gone@example.com", "demo.requested")
        rt.run_until_idle()
        (welcome,) = actions(rt)
        result = record_sendgrid_events(
            rt,
            [
                sg(
                    "bounce",
                    "gone@example.com",
                    welcome.id,
                    1,
                    type="bounce",
                    reason="550 no such user",
                )
            ],
        )
        assert result.recorded == 1
        rt.run_until_idle()
        clock.advance(days=3)
        rt.run_until_idle()
        assert sent(email) == ["series:one"]
        skipped = [a for a in actions(rt) if a.status == "skipped"]
        assert skipped and all(a.reason["skipped"] == "suppressed (bounce)" for a in skipped)
        with Session(rt.db) as session:
            (suppression,) = session.exec(select(Suppression)).all()
        assert suppression.email == "gone@example.com"


def test_an_unsubscribe_stops_marketing_but_not_receipts(tmp_path: Path) -> None:
    with running(tmp_path, [SERIES, RECEIPT]) as (rt, clock, email):
        rt.track("bye@example.com", "demo.requested")
        rt.run_until_idle()
        (welcome,) = actions(rt)
        record_sendgrid_events(rt, [sg("unsubscribe", "bye@example.com", welcome.id, 1)])
        rt.run_until_idle()
        assert contact(rt, "bye@example.com").subscription_status == "unsubscribed"
        rt.track("bye@example.com", "order.completed")
        clock.advance(days=3)
        rt.run_until_idle()
        assert sent(email) == ["series:one", "receipt:receipt"]
        series = next(e for e in enrollments(rt) if e.workflow == "series")
        assert (series.status, series.context["end_reason"]) == ("exited", "unsubscribed")


def test_unknown_addresses_and_malformed_events_are_counted_not_recorded(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [SERIES]) as (rt, _clock, _email):
        result = record_sendgrid_events(
            rt,
            [
                sg("delivered", "stranger@example.com", 1, 1),
                {"event": "teleported", "email": "x@example.com"},
                "not an object",
                {"event": "open", "email": "x@example.com"},  # no id of any kind
            ],
        )
        assert result.recorded == 0
        assert result.unknown_contacts == 1
        assert [r.split(":")[0] for r in result.rejected] == ["index 1", "index 2", "index 3"]
        assert "unknown SendGrid event 'teleported'" in result.rejected[0]


def test_a_delivery_event_reconciles_an_unknown_send(tmp_path: Path) -> None:
    with running(tmp_path, [SERIES]) as (rt, _clock, _email):
        rt.track("maybe@example.com", "demo.requested")
        rt.run_until_idle()
        (welcome,) = actions(rt)
        with Session(rt.db) as session:
            row = session.get(Action, welcome.id)
            row.status = "unknown"  # as after a timeout we could not resolve
            session.add(row)
            session.commit()
        record_sendgrid_events(rt, [sg("delivered", "maybe@example.com", welcome.id, 1)])
        (after,) = actions(rt)
        assert after.status == "sent"
        assert after.provider_id == f"msg-{welcome.id}"
        assert "reconciled" in (after.error or "")


def test_events_are_kept_when_the_broker_refuses_their_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with running(tmp_path, [SERIES]) as (rt, _clock, _email):
        rt.track("ana@example.com", "demo.requested")
        rt.drain()
        welcome = next(a for a in actions(rt) if a.kind == "email")

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise RedisConnectionError("Connection refused.")

        for actor in (rt.jobs.process_contact, rt.jobs.process_contacts):
            monkeypatch.setattr(actor, "send", refuse)
        with caplog.at_level(logging.ERROR, logger="engine.runtime"):
            result = record_sendgrid_events(rt, [sg("open", "ana@example.com", welcome.id or 0, 1)])
        # The provider is answered as if all went well: the event is stored, pending
        assert result.recorded == 1
        with Session(rt.db) as session:
            opened_events = session.exec(select(Event).where(Event.type == "email.opened")).all()
        assert [e.status for e in opened_events] == ["pending"]
        assert any("SendGrid events: stored" in r.getMessage() for r in caplog.records)
