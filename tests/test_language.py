"""The workflow language in virtual time: triggers, steps, goals, exits and re-entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import (
    Workflow,
    add_tag,
    attribute,
    branch,
    change_score,
    did_event,
    exit_workflow,
    gte,
    move_stage,
    on_condition,
    on_event,
    on_stage_left,
    opened,
    reenter_after,
    reenter_always,
    remove_tag,
    score,
    send_email,
    set_attribute,
    split,
    wait,
    wait_for_event,
    wait_until,
    wait_until_date,
)
from engine.executor import choose_variant
from tests.language_support import running, sent
from tests.support import actions, contact, enrollments


def big_order(**options: object) -> Workflow:
    return Workflow(
        "big_order",
        trigger=on_event("order.completed", total=gte(100)),
        steps=[send_email("thank_you", id="thanks", marketing=False)],
        **options,  # type: ignore[arg-type]
    )


def test_an_event_trigger_with_a_property_filter(tmp_path: Path) -> None:
    with running(tmp_path, [big_order()]) as (rt, _clock, email):
        rt.track("a@example.com", "order.completed", {"total": 50})
        rt.track("b@example.com", "order.completed", {"total": 150})
        rt.track("c@example.com", "order.completed", {"total": "200"})
        rt.drain()
        assert sorted(m.to for m in email.sent) == ["b@example.com", "c@example.com"]


def test_reentry_never_after_and_always(tmp_path: Path) -> None:
    for policy, expected in ((None, 1), (reenter_after(days=30), 2), (reenter_always(), 3)):
        workflow = big_order(reentry=policy) if policy else big_order()
        folder = tmp_path / str(expected)
        folder.mkdir()
        with running(folder, [workflow]) as (rt, clock, email):
            for gap in (0, 10, 30):  # orders on day 0, day 10 and day 40
                clock.advance(days=gap)
                rt.track("a@example.com", "order.completed", {"total": 120})
                rt.run_until_idle()
            assert len(email.sent) == expected, policy


def test_entry_criteria_keep_contacts_out(tmp_path: Path) -> None:
    vip_only = big_order(entry_if=attribute("plan", "enterprise"))
    with running(tmp_path, [vip_only]) as (rt, _clock, email):
        rt.track("a@example.com", "order.completed", {"total": 500}, attributes={"plan": "pro"})
        rt.track(
            "b@example.com", "order.completed", {"total": 500}, attributes={"plan": "enterprise"}
        )
        rt.drain()
        assert [m.to for m in email.sent] == ["b@example.com"]


def test_stage_left_trigger(tmp_path: Path) -> None:
    left = Workflow(
        "left_awareness",
        trigger=on_stage_left("awareness"),
        steps=[send_email("guide", id="guide")],
    )
    with running(tmp_path, [left]) as (rt, _clock, email):
        rt.track("a@example.com", "page.viewed")
        rt.drain()
        assert email.sent == []
        rt.track("a@example.com", "trial.started")
        rt.drain()
        assert sent(email) == ["left_awareness:guide"]


def test_a_condition_trigger_fires_once_when_it_turns_true(tmp_path: Path) -> None:
    hot = Workflow(
        "hot_lead",
        trigger=on_condition(score(gte(15)), name="hot lead"),
        steps=[send_email("demo_invitation", id="demo")],
    )
    with running(tmp_path, [hot]) as (rt, _clock, email):
        for i in range(6):  # 2 points each: 12 points, then 14, 16 (crossing), 18...
            rt.track("a@example.com", "page.viewed", idempotency_key=f"pv{i}")
        rt.track("a@example.com", "page.viewed", idempotency_key="pv6")
        rt.track("a@example.com", "page.viewed", idempotency_key="pv7")
        rt.drain()
        assert sent(email) == ["hot_lead:demo"]
        (enrollment,) = enrollments(rt)
        assert enrollment.context["trigger"] == "hot lead"


def test_wait_until_the_next_weekday_morning_in_the_contacts_time_zone_across_dst(
    tmp_path: Path,
) -> None:
    # Given a Madrid contact entering on Friday 27 March 2026, 20:00 local (19:00 UTC);
    # Europe moves its clocks forward on Sunday 29 March.
    morning = Workflow(
        "morning",
        trigger=on_event("demo.requested"),
        steps=[wait_until("09:00", weekdays_only=True), send_email("demo_invitation", id="demo")],
    )
    start = datetime(2026, 3, 27, 19, 0, tzinfo=UTC)
    with running(tmp_path, [morning], start=start) as (rt, clock, email):
        rt.track("ana@example.com", "demo.requested", timezone="Europe/Madrid")
        rt.run_until_idle()
        (waiting,) = [e for e in enrollments(rt) if e.workflow == "morning"]
        # Monday 30 March 09:00 in Madrid is 07:00 UTC (summer time), not 08:00
        assert waiting.wake_at == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 30, 6, 59, tzinfo=UTC))
        rt.run_until_idle()
        assert email.sent == []
        clock.advance(minutes=1)
        rt.run_until_idle()
        assert sent(email) == ["morning:demo"]
        assert email.sent[0].sent_at == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_wait_until_three_days_before_a_date_attribute(tmp_path: Path) -> None:
    reminder = Workflow(
        "trial_reminder",
        trigger=on_event("trial.started"),
        steps=[
            wait_until_date("trial_ends_at", days_before=3, time="10:00"),
            send_email("trial_reminder", id="reminder"),
        ],
    )
    with running(tmp_path, [reminder]) as (rt, clock, email):
        rt.track(
            "bo@example.com",
            "trial.started",
            timezone="America/New_York",
            attributes={"trial_ends_at": "2026-03-16"},
        )
        rt.run_until_idle()
        (waiting,) = [e for e in enrollments(rt) if e.workflow == "trial_reminder"]
        # 13 March, 10:00 in New York (EDT since 8 March) is 14:00 UTC
        assert waiting.wake_at == datetime(2026, 3, 13, 14, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 13, 14, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == ["trial_reminder:reminder"]


def _nudge() -> Workflow:
    return Workflow(
        "trial_nudge",
        trigger=on_event("trial.started"),
        steps=[
            wait_for_event(
                "order.completed",
                timeout=timedelta(days=7),
                id="bought?",
                on_event=[send_email("thank_you", id="thanks", marketing=False)],
                on_timeout=[send_email("trial_reminder", id="nudge")],
            ),
            send_email("loyalty_reward", id="after"),
        ],
    )


def test_wait_for_event_takes_the_event_path_when_it_comes_first(tmp_path: Path) -> None:
    with running(tmp_path, [_nudge()]) as (rt, clock, email):
        rt.track("a@example.com", "trial.started")
        rt.run_until_idle()
        clock.advance(days=2)
        rt.track("a@example.com", "order.completed", {"total": 10}, idempotency_key="o1")
        # a duplicate delivery of the same order, and a second order, during and after
        rt.track("a@example.com", "order.completed", {"total": 10}, idempotency_key="o1")
        rt.track("a@example.com", "order.completed", {"total": 12}, idempotency_key="o2")
        rt.run_until_idle()
        clock.advance(days=10)
        rt.run_until_idle()
        # (the receipt is transactional: its own queue, so the two may go out in any order)
        assert sorted(sent(email)) == ["trial_nudge:after", "trial_nudge:thanks"]
        (enrollment,) = enrollments(rt)
        assert enrollment.status == "completed"
        assert "event arrived first" in enrollment.context["trail"][0]["note"]


def test_wait_for_event_takes_the_timeout_path_when_time_runs_out(tmp_path: Path) -> None:
    with running(tmp_path, [_nudge()]) as (rt, clock, email):
        rt.track("a@example.com", "trial.started")
        rt.run_until_idle()
        clock.advance(days=7)
        rt.run_until_idle()
        assert sent(email) == ["trial_nudge:nudge", "trial_nudge:after"]


def test_a_branch_on_contact_data_and_one_on_engagement(tmp_path: Path) -> None:
    flow = Workflow(
        "branchy",
        trigger=on_event("demo.requested"),
        steps=[
            branch(
                attribute("plan", "enterprise"),
                then=[send_email("demo_invitation", id="sales_demo")],
                otherwise=[send_email("comparison_guide", id="self_serve")],
            ),
            wait(days=2),
            branch(
                opened(),
                then=[send_email("guide", id="engaged")],
                otherwise=[send_email("welcome", id="resend")],
            ),
        ],
    )
    with running(tmp_path, [flow]) as (rt, clock, email):
        rt.track("big@example.com", "demo.requested", attributes={"plan": "enterprise"})
        rt.track("small@example.com", "demo.requested")
        rt.run_until_idle()
        first = actions(rt)
        big_action = next(a for a in first if a.reason["step"] == "sales_demo")
        # big opens the email: an engagement event carrying the action id
        rt.track("big@example.com", "email.opened", {"action_id": big_action.id})
        clock.advance(days=2)
        rt.run_until_idle()
        assert sent(email, "big@example.com") == ["branchy:sales_demo", "branchy:engaged"]
        assert sent(email, "small@example.com") == ["branchy:self_serve", "branchy:resend"]


def test_an_ab_split_is_deterministic_weighted_and_recorded(tmp_path: Path) -> None:
    flow = Workflow(
        "ab",
        trigger=on_event("demo.requested"),
        steps=[
            split(
                A=[send_email("demo_invitation", id="a")],
                B=[send_email("comparison_guide", id="b")],
                weights={"A": 70, "B": 30},
                id="t1",
            )
        ],
    )
    assert choose_variant({"A": 70, "B": 30}, "1:ab:t1") == choose_variant(
        {"A": 70, "B": 30}, "1:ab:t1"
    )
    with running(tmp_path, [flow]) as (rt, _clock, email):
        for i in range(200):
            rt.track(f"p{i}@example.com", "demo.requested")
        rt.drain()
        steps = sent(email)
        share_a = steps.count("ab:a") / len(steps)
        assert len(steps) == 200
        assert 0.6 < share_a < 0.8
        assert {a.reason["variants"]["t1"] for a in actions(rt)} == {"A", "B"}
        for action in actions(rt):
            assert action.reason["step"] == action.reason["variants"]["t1"].lower()


def test_a_contacts_variant_does_not_depend_on_who_came_first(tmp_path: Path) -> None:
    # A golden journey or a simulation compared with production draws the same variant
    # for the same address, whatever row id the contact got.
    flow = Workflow(
        "ab_order",
        trigger=on_event("demo.requested"),
        steps=[split(A=[send_email("demo_invitation", id="a")], B=[], id="t1")],
    )
    drawn = set()
    for others in range(4):
        folder = tmp_path / str(others)
        folder.mkdir()
        with running(folder, [flow]) as (rt, _clock, _email):
            for n in range(others):
                rt.track(f"other{n}@example.com", "page.viewed")
            rt.track("ana@example.com", "demo.requested")
            rt.drain()
            (enrolled,) = enrollments(rt)
            drawn.add(enrolled.context["variants"]["t1"])
    assert drawn == {choose_variant({"A": 50, "B": 50}, "ana@example.com:ab_order:t1")}


def test_contact_steps_set_attributes_tags_score_and_stage(tmp_path: Path) -> None:
    flow = Workflow(
        "curate",
        trigger=on_event("webinar.attended"),
        steps=[
            set_attribute("segment", "webinar"),
            add_tag("warm"),
            add_tag("temp"),
            remove_tag("temp"),
            change_score(30),
            move_stage("qualify"),
            move_stage("activate"),
        ],
    )
    with running(tmp_path, [flow]) as (rt, _clock, _email):
        rt.track("a@example.com", "webinar.attended")
        rt.drain()
        a = contact(rt, "a@example.com")
        assert a.attributes == {"segment": "webinar", "tags": ["warm"]}
        assert a.score == 15 + 30
        assert a.stage == "consideration"  # qualify passed its guard; activate was skipped
        (enrollment,) = [e for e in enrollments(rt) if e.workflow == "curate"]
        assert any("does not allow activate" in t["note"] for t in enrollment.context["trail"])


def test_a_goal_reached_while_waiting_converts_and_stops_the_sends(tmp_path: Path) -> None:
    nurture = Workflow(
        "nurture",
        trigger=on_event("trial.started"),
        goals=[on_event("order.completed")],
        steps=[
            send_email("trial_offer", id="offer"),
            wait(days=3),
            send_email("trial_reminder", id="reminder"),
        ],
    )
    with running(tmp_path, [nurture]) as (rt, clock, email):
        rt.track("a@example.com", "trial.started")
        rt.run_until_idle()
        clock.advance(days=1)
        rt.track("a@example.com", "order.completed", {"total": 99})
        rt.run_until_idle()
        clock.advance(days=5)
        rt.run_until_idle()
        assert sent(email) == ["nurture:offer"]
        (enrollment,) = enrollments(rt)
        assert enrollment.status == "converted"
        assert enrollment.context["end_reason"].startswith("goal reached: order.completed")


def test_exit_rules_an_exit_step_and_unsubscribes(tmp_path: Path) -> None:
    flow = Workflow(
        "series",
        trigger=on_event("demo.requested"),
        exit_when=[on_event("subscription.cancelled")],
        steps=[
            send_email("welcome", id="one"),
            wait(days=1),
            branch(did_event("page.viewed"), then=[exit_workflow("engaged")]),
            send_email("guide", id="two"),
        ],
    )
    with running(tmp_path, [flow]) as (rt, clock, email):
        rt.track("quits@example.com", "demo.requested")
        rt.track("reads@example.com", "demo.requested")
        rt.track("stays@example.com", "demo.requested")
        rt.run_until_idle()
        rt.track("quits@example.com", "subscription.cancelled")
        rt.track("reads@example.com", "page.viewed")
        clock.advance(days=1)
        rt.run_until_idle()
        ends = {
            contact_email: e.context["end_reason"]
            for e in enrollments(rt)
            for contact_email in [_email_of(rt, e.contact_id)]
        }
        assert ends["quits@example.com"].startswith("exit on subscription.cancelled")
        assert ends["reads@example.com"] == "engaged"
        assert ends["stays@example.com"] == "completed"
        assert sent(email, "stays@example.com") == ["series:one", "series:two"]


def _email_of(rt, contact_id: int) -> str:
    from sqlmodel import Session

    from engine.models import Contact

    with Session(rt.db) as session:
        return session.get(Contact, contact_id).email  # type: ignore[union-attr]


def test_enrollments_finish_on_the_version_they_started_with(tmp_path: Path) -> None:
    v1 = Workflow(
        "evolving",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2),
            send_email("guide", id="old_second"),
        ],
    )
    v2 = Workflow(
        "evolving",
        trigger=on_event("trial.started"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2),
            send_email("trial_offer", id="new_second"),
        ],
    )
    assert v1.version != v2.version
    with running(tmp_path, [v1]) as (rt, clock, email):
        rt.track("early@example.com", "trial.started")
        rt.run_until_idle()
        # The code changes while she waits
        from engine import build_registry, lifecycle_journey
        from workflows.rules import RULES

        rt.registry = build_registry(
            journey=lifecycle_journey(),
            rules=RULES,
            workflows=[v2],
            templates_dir=rt.registry.templates.directory,
        )
        rt.track("late@example.com", "trial.started")
        rt.run_until_idle()
        clock.advance(days=2)
        rt.run_until_idle()
        assert sent(email, "early@example.com") == ["evolving:hello", "evolving:old_second"]
        assert sent(email, "late@example.com") == ["evolving:hello", "evolving:new_second"]
        versions = {e.version for e in enrollments(rt)}
        assert versions == {v1.version, v2.version}
