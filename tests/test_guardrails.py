"""Guard rails at send time: frequency caps, quiet hours, send windows, transactional mail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from engine import (
    Guardrails,
    Workflow,
    at_most,
    on_event,
    quiet_hours,
    send_email,
    send_window,
    wait,
)
from engine.timeline import contact_timeline
from tests.language_support import running, sent
from tests.support import actions


def drip(name: str = "drip", **options: object) -> Workflow:
    return Workflow(
        name,
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="d1"),
            wait(hours=1),
            send_email("guide", id="d2"),
            wait(hours=1),
            send_email("comparison_guide", id="d3"),
        ],
        **options,  # type: ignore[arg-type]
    )


def test_a_frequency_cap_defers_the_send_and_says_why(tmp_path: Path) -> None:
    # Given at most 2 marketing emails per contact per 7 days
    rails = Guardrails(cap=at_most(2, per_days=7))
    with running(tmp_path, [drip()], guardrails=rails) as (rt, clock, email):
        rt.track("a@example.com", "demo.requested")
        for _ in range(3):  # 10:00, 11:00, 12:00: one email due at each
            rt.run_until_idle()
            clock.advance(hours=1)
        # Then the third email is held, not dropped, until the first leaves the window
        assert sent(email) == ["drip:d1", "drip:d2"]
        third = next(a for a in actions(rt) if a.reason["step"] == "d3")
        assert third.status == "pending"
        (held,) = third.reason["held"][:1]
        assert held["rule"].startswith("frequency cap: 2 per 7 days")
        assert datetime.fromisoformat(held["until"]) == datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 9, 10, 0, 1, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == ["drip:d1", "drip:d2", "drip:d3"]


def test_a_per_workflow_cap_counts_only_that_workflow(tmp_path: Path) -> None:
    capped = drip("capped", cap=at_most(1, per_days=1))
    other = Workflow(
        "other", trigger=on_event("demo.requested"), steps=[send_email("demo_invitation", id="o1")]
    )
    with running(tmp_path, [capped, other]) as (rt, clock, email):
        rt.track("a@example.com", "demo.requested")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.run_until_idle()
        assert sorted(sent(email)) == ["capped:d1", "other:o1"]
        clock.advance(days=1)
        rt.run_until_idle()
        assert "capped:d2" in sent(email)


def test_a_workflow_cap_and_the_global_cap_each_count_their_own_window(tmp_path: Path) -> None:
    # Given at most 3 per 7 days overall and at most 1 per day from the drip
    rails = Guardrails(cap=at_most(3, per_days=7))
    capped = drip("capped", cap=at_most(1, per_days=1))
    with running(tmp_path, [capped], guardrails=rails) as (rt, clock, email):
        rt.track("a@example.com", "demo.requested")
        rt.run_until_idle()
        clock.advance(hours=1)
        rt.run_until_idle()
        # Then the second email waits for the drip's own day, not the week
        assert sent(email) == ["capped:d1"]
        second = next(a for a in actions(rt) if a.reason["step"] == "d2")
        assert second.reason["held"][0]["rule"].startswith("frequency cap of capped: 1 per 1 day")
        clock.advance(days=1)
        rt.run_until_idle()
        assert sent(email) == ["capped:d1", "capped:d2"]


def test_quiet_hours_in_the_contacts_time_zone_defer_to_the_morning(tmp_path: Path) -> None:
    rails = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
    one = Workflow(
        "one", trigger=on_event("demo.requested"), steps=[send_email("demo_invitation", id="x")]
    )
    # 10:00 UTC is 05:00 in New York (EST until 8 March): inside quiet hours there
    with running(tmp_path, [one], guardrails=rails) as (rt, clock, email):
        rt.track("ny@example.com", "demo.requested", timezone="America/New_York")
        rt.track("ldn@example.com", "demo.requested", timezone="Europe/London")
        rt.run_until_idle()
        assert [m.to for m in email.sent] == ["ldn@example.com"]
        (held,) = [a for a in actions(rt) if a.status == "pending"]
        assert "quiet hours 21:00-08:00 (America/New_York)" in held.reason["held"][0]["rule"]
        # And the timeline an operator reads says why and until when
        with Session(rt.db) as session:
            timeline = contact_timeline(session, "ny@example.com")
        assert timeline is not None
        lines = [e.summary for e in timeline.entries]
        assert (
            "email one/x: pending (held until 2026-03-02 13:00 UTC: "
            "quiet hours 21:00-08:00 (America/New_York))"
        ) in lines
        # 08:00 in New York is 13:00 UTC
        clock.set(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert sorted(m.to for m in email.sent) == ["ldn@example.com", "ny@example.com"]
        assert email.sent[-1].sent_at == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def test_a_send_window_holds_sends_outside_business_hours(tmp_path: Path) -> None:
    business = Workflow(
        "b2b",
        trigger=on_event("demo.requested"),
        send_window=send_window("09:00", "17:00", weekdays_only=True),
        steps=[send_email("demo_invitation", id="x")],
    )
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    with running(tmp_path, [business], start=saturday) as (rt, clock, email):
        rt.track("a@example.com", "demo.requested")
        rt.run_until_idle()
        assert email.sent == []
        clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))  # Monday 09:00 UTC
        rt.run_until_idle()
        assert sent(email) == ["b2b:x"]


def test_transactional_mail_ignores_caps_and_quiet_hours(tmp_path: Path) -> None:
    rails = Guardrails(cap=at_most(1, per_days=7), quiet_hours=quiet_hours("00:00", "23:59"))
    receipts = Workflow(
        "receipts",
        trigger=on_event("order.completed"),
        steps=[send_email("thank_you", id="r", marketing=False)],
    )
    with running(tmp_path, [receipts], guardrails=rails) as (rt, _clock, email):
        for i in range(3):
            rt.track("a@example.com", "order.completed", idempotency_key=f"o{i}")
            rt.run_until_idle()
        # re-entry is "never" by default: one receipt; guard rails did not hold it
        assert sent(email) == ["receipts:r"]
        assert actions(rt)[0].reason.get("held") is None
