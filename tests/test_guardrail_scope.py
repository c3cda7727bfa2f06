"""Held emails keep their order only where the hold applies to both: a workflow's send
window holds its own later emails, not another workflow's; quiet hours hold every
marketing email, so one written behind an email they hold still waits for it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from connectors.fakes import FakeSendGrid
from engine import (
    Guardrails,
    Workflow,
    on_event,
    on_stage_entered,
    quiet_hours,
    send_email,
    send_window,
)
from engine.models import Action
from tests.language_support import running, sent
from tests.support import actions
from tests.test_batch_guardrails import _world
from tests.test_broadcast import KEY, add_contacts

SATURDAY = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
B2B = Workflow(
    "b2b",
    trigger=on_event("demo.requested"),
    send_window=send_window("09:00", "17:00", weekdays_only=True),
    steps=[send_email("demo_invitation", id="b1"), send_email("guide", id="b2")],
)
WELCOME = Workflow(
    "welcome", trigger=on_event("order.completed"), steps=[send_email("welcome", id="w")]
)


def _sent_at(email: object, step: str) -> datetime:
    (message,) = [m for m in email.sent if m.categories[1].endswith(f":{step}")]  # type: ignore[attr-defined]
    return message.sent_at  # type: ignore[no-any-return]


def _rule(rt: object, step: str) -> str:
    (action,) = [a for a in actions(rt) if a.reason["step"] == step]  # type: ignore[arg-type]
    return str(action.reason["held"][-1]["rule"])


def test_another_workflows_send_window_does_not_delay_an_unrelated_email(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [B2B, WELCOME], start=SATURDAY) as (rt, clock, email):
        # Given b2b's emails held by its weekday window on Saturday at 10:00
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        assert sent(email) == []
        # When she orders at 11:00
        clock.set(SATURDAY + timedelta(hours=1))
        rt.track("ana@example.com", "order.completed")
        rt.run_until_idle()
        # Then the welcome goes at once, not on Monday behind b2b's (b1 held by the window,
        # nor b2 queued behind b1: that queue is b2b's own)
        assert sent(email) == ["welcome:w"]
        assert _sent_at(email, "w") == SATURDAY + timedelta(hours=1)


def test_emails_of_the_windowed_workflow_keep_their_order(tmp_path: Path) -> None:
    with running(tmp_path, [B2B], start=SATURDAY) as (rt, clock, email):
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        # The second waits behind the first, and says which rule holds the first
        assert _rule(rt, "b1") == "send window 09:00-17:00 (UTC)"
        assert _rule(rt, "b2") == (
            "queued behind an earlier held email to this contact (send window 09:00-17:00 (UTC))"
        )
        clock.set(MONDAY_9)
        rt.run_until_idle()
        assert sent(email) == ["b2b:b1"]
        clock.advance(seconds=1)
        rt.run_until_idle()
        assert sent(email) == ["b2b:b1", "b2b:b2"]
        assert _sent_at(email, "b1") == MONDAY_9
        assert _sent_at(email, "b2") == MONDAY_9 + timedelta(seconds=1)


def test_an_email_behind_one_held_by_quiet_hours_still_waits_for_it(tmp_path: Path) -> None:
    rails = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
    other = Workflow(
        "other", trigger=on_event("demo.requested"), steps=[send_email("guide", id="o")]
    )
    night = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    with running(tmp_path, [WELCOME, other], guardrails=rails, start=night) as (rt, clock, email):
        rt.track("bo@example.com", "order.completed")
        rt.run_until_idle()
        clock.advance(minutes=30)
        rt.track("bo@example.com", "demo.requested")
        rt.run_until_idle()
        assert _rule(rt, "w") == "quiet hours 21:00-08:00 (UTC)"
        assert _rule(rt, "o") == (
            "queued behind an earlier held email to this contact (quiet hours 21:00-08:00 (UTC))"
        )
        clock.set(datetime(2026, 3, 3, 8, 0, 1, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == ["welcome:w", "other:o"]
        assert _sent_at(email, "o") == datetime(2026, 3, 3, 8, 0, 1, tzinfo=UTC)


# --- the batched path (SendGrid): the same rules read from one history query ---------------


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jl.db"
    return str(request.getfixturevalue("pg_db_url"))


def test_a_batch_is_not_held_behind_another_workflows_send_window(
    tmp_path: Path, fake: FakeSendGrid, database_url: str
) -> None:
    windowed = Workflow(
        "b2b_sale",
        trigger=on_stage_entered("consideration"),
        send_window=send_window("09:00", "17:00", weekdays_only=True),
        steps=[send_email("spring_sale", id="b2b")],
    )
    sale = Workflow(
        "spring_sale",
        trigger=on_stage_entered("consideration"),
        steps=[send_email("sale_reminder", id="sale")],
    )
    worlds = _world(tmp_path, fake, [windowed, sale], Guardrails(), url=database_url)
    runtime, clock = next(worlds)
    try:
        clock.set(SATURDAY)
        add_contacts(runtime, 5, timezone="UTC")
        runtime.broadcast("b2b_sale")
        runtime.drain()
        assert fake.requests == []  # held by b2b's window until Monday
        clock.set(SATURDAY + timedelta(hours=1))
        runtime.broadcast("spring_sale")
        runtime.drain()
        # The sale goes at once, in one request, not on Monday behind b2b's
        assert [len(r.body["personalizations"]) for r in fake.requests] == [5]
        with Session(runtime.db) as session:
            statuses = session.exec(
                select(Action.idempotency_key, Action.status).where(col(Action.kind) == "email")
            ).all()
        assert {key.split(":")[-1]: status for key, status in statuses} == {
            "b2b": "pending",
            "sale": "sent",
        }
    finally:
        next(worlds, None)
