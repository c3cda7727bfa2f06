"""A held email pauses its workflow: the wait after it counts from when the email goes, so
the spacing the author wrote between two emails survives quiet hours, send windows and
frequency caps (engine/pauses.py). These run the single send path (the harness's recording
connector sends one by one); tests/test_held_pauses_batch.py runs the batched one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from engine import (
    Guardrails,
    Workflow,
    at_most,
    build_registry,
    lifecycle_journey,
    on_event,
    quiet_hours,
    send_email,
    send_window,
    wait,
    wait_for_event,
    wait_until,
    wait_until_date,
)
from engine.models import Enrollment
from engine.registry import Registry
from engine.testing import Simulation
from tests.language_support import TEMPLATES
from tests.support import statements
from workflows.rules import RULES

SATURDAY_10 = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
TUESDAY_9 = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
WEEKDAYS = send_window("09:00", "17:00", weekdays_only=True)


def _registry(*workflows: Workflow, guardrails: Guardrails | None = None) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        guardrails=guardrails,
    )


def _enrollment(sim: Simulation, email: str, workflow: str) -> Enrollment:
    contact = sim.contact(email)
    with Session(sim.runtime.db) as session:
        return session.exec(
            select(Enrollment).where(
                Enrollment.contact_id == contact.id, Enrollment.workflow == workflow
            )
        ).one()


def _sent_at(sim: Simulation, email: str, step: str) -> datetime:
    (sent,) = sim.expect_email(email, step)
    return sent.sent_at


B2B = Workflow(
    "b2b",
    trigger=on_event("demo.requested"),
    send_window=WEEKDAYS,
    steps=[
        send_email("demo_invitation", id="a"),
        wait(days=1),
        send_email("guide", id="b"),
    ],
)


def test_a_send_window_keeps_a_day_between_the_two_emails() -> None:
    # Given a weekday window, and a contact who enters on Saturday at 10:00
    with Simulation(_registry(B2B), start=SATURDAY_10) as sim:
        sim.track("ana@example.com", "demo.requested")
        # Then the first email is held until Monday 09:00, and the wait with it
        assert _enrollment(sim, "ana@example.com", "b2b").wake_at == TUESDAY_9
        # When the week goes by
        sim.advance(days=5)
        # Then b goes on Tuesday at 09:00, a day after a, not with it on Monday
        assert _sent_at(sim, "ana@example.com", "a") == MONDAY_9
        assert _sent_at(sim, "ana@example.com", "b") == TUESDAY_9
        sim.expect_enrollment("ana@example.com", "b2b", "completed")
        # And the timeline says why the wait was longer
        assert (
            "workflow b2b 2-wait: wait extended to 2026-01-13 09:00 UTC while email a was held"
            " until 2026-01-12 09:00 UTC"
        ) in sim.explain("ana@example.com")
        (note,) = _enrollment(sim, "ana@example.com", "b2b").context["trail"]
        assert note["rule"] == "send window 09:00-17:00 (UTC)"


def test_quiet_hours_in_the_contacts_time_zone_pause_the_wait() -> None:
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[send_email("welcome", id="a"), wait(hours=3), send_email("guide", id="b")],
    )
    rails = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
    # Given a New Yorker tracked at 09:00 UTC, 04:00 her time: quiet until 08:00 (13:00 UTC)
    with Simulation(_registry(drip, guardrails=rails)) as sim:
        sim.track("ny@example.com", "demo.requested", timezone="America/New_York")
        sim.track("ldn@example.com", "demo.requested", timezone="Europe/London")
        sim.advance(days=1)
        # Then her second email goes three hours after her first, at 11:00 her time
        (a,) = sim.expect_email("ny@example.com", "a", at_local="08:00")
        (b,) = sim.expect_email("ny@example.com", "b", at_local="11:00")
        assert b.sent_at - a.sent_at == timedelta(hours=3)
        # And the Londoner, never held, kept her own clock
        assert _sent_at(sim, "ldn@example.com", "b") == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_a_frequency_cap_pauses_the_wait_after_the_email_it_holds() -> None:
    drip = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="a"),
            wait(hours=2),
            send_email("guide", id="b"),
            wait(hours=1),
            send_email("thank_you", id="receipt", marketing=False),  # no cap: shows the wait
        ],
    )
    rails = Guardrails(cap=at_most(1, per_days=1))
    with Simulation(_registry(drip, guardrails=rails)) as sim:
        # Given a sent on Monday at 09:00, b held at 11:00 by the cap until Tuesday 09:00
        sim.track("bo@example.com", "demo.requested")
        sim.advance(days=3)
        tuesday = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
        assert _sent_at(sim, "bo@example.com", "b") == tuesday
        # Then the hour after b counts from Tuesday, not from Monday 11:00
        assert _sent_at(sim, "bo@example.com", "receipt") == tuesday + timedelta(hours=1)


def test_an_email_held_twice_moves_the_wait_once() -> None:
    """A cap holds a until Saturday 16:30, then the window until Monday 09:00: the wait ends
    a day after Monday 09:00, not after both holds added up."""
    news = Workflow(
        "news", trigger=on_event("content.downloaded"), steps=[send_email("guide", id="x")]
    )
    rails = Guardrails(cap=at_most(1, per_days=1))
    friday = datetime(2026, 1, 9, 16, 30, tzinfo=UTC)
    with Simulation(_registry(news, B2B, guardrails=rails), start=friday) as sim:
        sim.track("cy@example.com", "content.downloaded")  # x goes Friday 16:30
        sim.advance(minutes=15)
        sim.track("cy@example.com", "demo.requested")  # a: in the window, but capped
        saturday = datetime(2026, 1, 10, 16, 30, tzinfo=UTC)
        assert _enrollment(sim, "cy@example.com", "b2b").wake_at == saturday + timedelta(days=1)
        sim.advance(days=1)  # Saturday 16:45: the cap let a go, the window held it
        assert _enrollment(sim, "cy@example.com", "b2b").wake_at == TUESDAY_9
        sim.advance(days=4)
        assert _sent_at(sim, "cy@example.com", "a") == MONDAY_9
        assert _sent_at(sim, "cy@example.com", "b") == TUESDAY_9
        trail = _enrollment(sim, "cy@example.com", "b2b").context["trail"]
        assert [n["note"][:42] for n in trail if n.get("kind") == "paused"] == [
            "wait extended to 2026-01-11 16:30 UTC whil",
            "wait extended to 2026-01-13 09:00 UTC whil",
        ]


def test_two_held_emails_of_one_pass_move_the_wait_once_from_the_later() -> None:
    pair = Workflow(
        "pair",
        trigger=on_event("demo.requested"),
        send_window=WEEKDAYS,
        steps=[
            send_email("demo_invitation", id="a1"),
            send_email("welcome", id="a2"),  # queued behind a1: Monday 09:00:01
            wait(days=1),
            send_email("guide", id="b"),
        ],
    )
    with Simulation(_registry(pair), start=SATURDAY_10) as sim:
        sim.track("di@example.com", "demo.requested")
        sim.advance(days=5)
        assert _sent_at(sim, "di@example.com", "a1") == MONDAY_9
        assert _sent_at(sim, "di@example.com", "a2") == MONDAY_9 + timedelta(seconds=1)
        # A day after the last of them went, not two holds' worth later
        assert _sent_at(sim, "di@example.com", "b") == TUESDAY_9 + timedelta(seconds=1)


def test_waits_until_a_date_or_a_time_of_day_do_not_move_where_a_wait_does() -> None:
    window = send_window("12:00", "17:00")  # every day: a Monday 09:00 email waits until 12:00

    def held_then(name: str, then: object) -> Workflow:
        return Workflow(
            name,
            trigger=on_event("trial.started"),
            send_window=window,
            steps=[send_email("trial_offer", id=f"{name}_a"), then, send_email("guide", id="b")],  # type: ignore[list-item]
        )

    dated = held_then("dated", wait_until_date("trial_ends_at", days_before=1, time="13:00"))
    timed = held_then("timed", wait_until("14:00"))
    relative = held_then("relative", wait(days=2))
    registry = _registry(dated, timed, relative)
    with Simulation(registry) as sim:
        sim.track("ed@example.com", "trial.started", attributes={"trial_ends_at": "2026-01-08"})
        # Then the absolute waits keep their instant; the relative one counts from 12:00
        wake = {w: _enrollment(sim, "ed@example.com", w).wake_at for w in registry.workflows}
        assert wake == {
            "dated": datetime(2026, 1, 7, 13, 0, tzinfo=UTC),
            "timed": datetime(2026, 1, 5, 14, 0, tzinfo=UTC),
            "relative": datetime(2026, 1, 7, 12, 0, tzinfo=UTC),
        }
        sim.advance(days=4)
        sent = {s.workflow: s.sent_at for s in sim.emails("ed@example.com", step="b")}
        assert sent == wake


def test_a_wait_for_an_event_times_out_counting_from_the_held_email() -> None:
    flow = Workflow(
        "bought?",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("demo_invitation", id="a"),
            wait_for_event(
                "order.completed",
                timeout=timedelta(days=2, hours=6),
                on_event=[send_email("thank_you", id="thanks")],
                on_timeout=[send_email("trial_nudge", id="nudge")],
            ),
        ],
    )
    rails = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
    with Simulation(_registry(flow, guardrails=rails)) as sim:
        # Given two New Yorkers whose invitation is held until 08:00 their time (13:00 UTC)
        for who in ("fay", "gus"):
            sim.track(f"{who}@example.com", "demo.requested", timezone="America/New_York")
        # When Gus buys on Tuesday and Fay never does
        sim.advance(days=1)
        sim.track("gus@example.com", "order.completed")
        sim.advance(days=3)
        # Then Fay's nudge comes 2 days 6 hours after her invitation went, at 14:00 her time
        (invite,) = sim.expect_email("fay@example.com", "a", at_local="08:00")
        (nudge,) = sim.expect_email("fay@example.com", "nudge", at_local="14:00")
        assert nudge.sent_at - invite.sent_at == timedelta(days=2, hours=6)
        # And Gus took the event's path, the pause gone with the wait
        sim.expect_email("gus@example.com", "thanks")
        sim.expect_no_email("gus@example.com", "nudge")
        assert "paused" not in _enrollment(sim, "gus@example.com", "bought?").context


def test_an_ended_enrollment_is_not_touched_a_waiting_one_is() -> None:
    short = Workflow(
        "short",
        trigger=on_event("demo.requested"),
        send_window=WEEKDAYS,
        steps=[send_email("welcome", id="only")],  # its last step: completed when written
    )
    with Simulation(_registry(short, B2B), start=SATURDAY_10) as sim:
        sim.track("hu@example.com", "demo.requested")  # both emails held until Monday
        ended = _enrollment(sim, "hu@example.com", "short")
        assert (ended.status, ended.wake_at) == ("completed", None)
        assert "paused" not in ended.context
        assert not [n for n in ended.context["trail"] if n.get("kind") == "paused"]
        assert _enrollment(sim, "hu@example.com", "b2b").wake_at == TUESDAY_9
        sim.advance(days=3)
        assert _sent_at(sim, "hu@example.com", "only") == MONDAY_9


def test_an_email_of_an_earlier_pass_leaves_the_current_wait_alone() -> None:
    """a is held past a wait until a time of day (absolute, not moved); the pass after it
    writes b (queued behind a) and parks at a relative wait: that wait counts from b, and a's
    own later hold does not move it again."""
    flow = Workflow(
        "later",
        trigger=on_event("demo.requested"),
        send_window=send_window("12:00", "17:00"),
        steps=[
            send_email("demo_invitation", id="a"),
            wait_until("10:00"),
            send_email("guide", id="b"),
            wait(hours=1),
            send_email("trial_nudge", id="c"),
        ],
    )
    with Simulation(_registry(flow)) as sim:
        sim.track("ivo@example.com", "demo.requested")  # Monday 09:00: a held until 12:00
        sim.advance(days=1)
        noon = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        assert _sent_at(sim, "ivo@example.com", "a") == noon
        assert _sent_at(sim, "ivo@example.com", "b") == noon + timedelta(seconds=1)
        assert _sent_at(sim, "ivo@example.com", "c") == noon + timedelta(hours=1, seconds=1)
        trail = _enrollment(sim, "ivo@example.com", "later").context["trail"]
        paused = [n["note"] for n in trail if n.get("kind") == "paused"]
        assert len(paused) == 1 and "while email b was held" in paused[0]


def pause_reads(seen: list[str]) -> list[str]:
    """The statements reading held emails' enrollments (pauses.py), among ``seen``."""
    prefix = (
        "SELECT enrollments.id, enrollments.workflow, enrollments.version, enrollments.position"
    )
    return [s for s in seen if " ".join(s.split()).startswith(prefix)]


def test_the_pause_costs_a_read_only_when_an_email_is_held() -> None:
    with Simulation(_registry(B2B), start=MONDAY_9) as sim:
        # Given an email inside the window: sent, and no enrollment read for it
        with statements(sim.runtime.db) as seen:
            sim.track("jo@example.com", "demo.requested")
        assert _sent_at(sim, "jo@example.com", "a") == MONDAY_9
        assert pause_reads(seen) == []
        # When one is held (Saturday): one read of its enrollment
        sim.advance(days=5)
        with statements(sim.runtime.db) as seen:
            sim.track("kim@example.com", "demo.requested")
        assert len(pause_reads(seen)) == 1
        assert _enrollment(sim, "kim@example.com", "b2b").wake_at == datetime(
            2026, 1, 20, 9, 0, tzinfo=UTC
        )
