"""The default playbook in virtual time: what a marketer expects of each journey stage.

Every test runs the real ``workflows`` package (its WORKFLOWS, RULES, EVENTS, GUARDRAILS and
JOURNEY) on SQLite with a virtual clock that starts on Monday 2 March 2026, 10:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors import RecordingEmailConnector
from engine import VirtualClock, build_registry
from engine.models import Action, Enrollment
from engine.runtime import Runtime
from engine.testing import Simulation
from tests.language_support import TEMPLATES
from tests.support import actions, contact, enrollments, make_runtime
from workflows import EVENTS, GUARDRAILS, JOURNEY, RULES, WORKFLOWS

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@contextmanager
def playbook(
    tmp_path: Path, *, start: datetime = MONDAY
) -> Iterator[tuple[Runtime, VirtualClock, RecordingEmailConnector]]:
    """``tests.language_support.running`` with the whole default playbook: its journey,
    rules, extra events and guard rails as well as its workflows."""
    registry = build_registry(
        journey=JOURNEY,
        rules=RULES,
        workflows=WORKFLOWS,
        templates_dir=TEMPLATES,
        events=EVENTS,
        guardrails=GUARDRAILS,
    )
    runtime, clock, email = make_runtime(
        f"sqlite:///{tmp_path}/jl.db",
        broker_url="inline://",  # one job after another, as in the simulator: deterministic
        clock=VirtualClock(start),
        outbox_dir=tmp_path / "outbox",
    )
    runtime.registry = registry
    runtime.start()
    try:
        yield runtime, clock, email
    finally:
        runtime.close()


def steps(email: RecordingEmailConnector, to: str, workflow: str) -> list[str]:
    """The steps of ``workflow`` that emailed ``to``, in the order they were sent."""
    return [
        m.categories[1].split(":", 1)[1]
        for m in email.sent
        if m.to == to and m.categories[1].startswith(f"{workflow}:")
    ]


def sent_at(email: RecordingEmailConnector, to: str, workflow: str, step: str) -> datetime:
    (message,) = [m for m in email.sent if m.to == to and m.categories[1] == f"{workflow}:{step}"]
    return message.sent_at


def enrollment(rt: Runtime, to: str, workflow: str) -> Enrollment:
    who = contact(rt, to).id
    (found,) = [e for e in enrollments(rt) if e.contact_id == who and e.workflow == workflow]
    return found


def crm_tasks(rt: Runtime, to: str) -> list[Action]:
    who = contact(rt, to).id
    return [a for a in actions(rt) if a.contact_id == who and a.kind == "crm.task"]


def run_for(rt: Runtime, clock: VirtualClock, *, days: float, step_hours: float = 6) -> None:
    """Let ``days`` pass as the scheduler would see them: the clock stops at every instant
    something falls due (a wake-up, a held email), and at least every ``step_hours``."""
    end = clock.now() + timedelta(days=days)
    rt.run_until_idle()
    while clock.now() < end:
        now = clock.now()
        upcoming = [
            *(e.wake_at for e in enrollments(rt) if e.status == "waiting" and e.wake_at),
            *(a.next_attempt_at for a in actions(rt) if a.status == "pending"),
        ]
        due = min((t for t in upcoming if t > now), default=end)
        clock.set(min(due, now + timedelta(hours=step_hours), end))
        rt.run_until_idle()


def customer(rt: Runtime, address: str, stage: str, tz: str = "UTC", **attributes: object) -> None:
    """An imported customer: in ``stage``, no emails sent (imports start no workflow)."""
    rt.upsert_contact(
        address, stage=stage, timezone=tz, attributes={"first_name": "Sam", **attributes}
    )


# --- awareness ----------------------------------------------------------------------------


def test_awareness_teaches_on_a_schedule_and_stops_when_the_lead_moves_on(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        # Given a new lead in Madrid
        rt.track("ana@example.com", "page.viewed", timezone="Europe/Madrid")
        rt.run_until_idle()
        assert steps(email, "ana@example.com", "awareness_nurture") == ["welcome"]
        run_for(rt, clock, days=3)
        assert steps(email, "ana@example.com", "awareness_nurture") == ["welcome", "guide"]
        # The checklist waits 4 days, then for a weekday morning, 10:00 in Madrid
        run_for(rt, clock, days=6)
        assert steps(email, "ana@example.com", "awareness_nurture")[-1] == "checklist"
        checklist = sent_at(email, "ana@example.com", "awareness_nurture", "checklist")
        assert checklist == datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # Tuesday, 10:00 CET

        # When she downloads two guides she becomes marketing-qualified: converted
        rt.track("ana@example.com", "content.downloaded", idempotency_key="d1")
        rt.track("ana@example.com", "content.downloaded", idempotency_key="d2")
        # a buyer straight from awareness converts too; a trial is just a move on
        rt.track("bo@example.com", "page.viewed")
        rt.track("cy@example.com", "page.viewed")
        rt.run_until_idle()
        rt.track("bo@example.com", "order.completed", {"total": 49})
        rt.track("cy@example.com", "trial.started")
        run_for(rt, clock, days=30)

        ana = enrollment(rt, "ana@example.com", "awareness_nurture")
        assert (ana.status, ana.context["end_reason"]) == (
            "converted",
            "goal reached: entered consideration",
        )
        bo = enrollment(rt, "bo@example.com", "awareness_nurture")
        assert (bo.status, bo.context["end_reason"]) == (
            "converted",
            "goal reached: entered purchase",
        )
        cy = enrollment(rt, "cy@example.com", "awareness_nurture")
        assert (cy.status, cy.context["end_reason"]) == ("exited", "left stage awareness")
        # and nothing more of the series reached any of them
        assert steps(email, "ana@example.com", "awareness_nurture") == [
            "welcome",
            "guide",
            "checklist",
        ]
        assert steps(email, "bo@example.com", "awareness_nurture") == ["welcome"]


def test_a_lead_who_stays_gets_the_whole_series_within_the_weekly_cap(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        rt.track("di@example.com", "page.viewed")
        run_for(rt, clock, days=30)
        assert steps(email, "di@example.com", "awareness_nurture") == [
            "welcome",
            "guide",
            "checklist",
            "webinar",
            "roundup",
        ]
        assert enrollment(rt, "di@example.com", "awareness_nurture").status == "completed"


# --- consideration ------------------------------------------------------------------------


def test_a_new_mql_becomes_a_sales_task_and_gets_the_comparison(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        rt.track("ed@example.com", "content.downloaded", idempotency_key="d1")
        rt.run_until_idle()
        assert crm_tasks(rt, "ed@example.com") == []  # 12 points: not qualified yet
        # When the score passes the MQL threshold (20)
        rt.track("ed@example.com", "content.downloaded", idempotency_key="d2")
        rt.run_until_idle()
        assert contact(rt, "ed@example.com").stage == "consideration"
        # Then sales gets a task due in two days, and the lead the comparison guide
        (task,) = crm_tasks(rt, "ed@example.com")
        assert task.payload["subject"].startswith("New MQL")
        assert task.payload["due_at"] == (MONDAY + timedelta(days=2)).isoformat()
        assert steps(email, "ed@example.com", "consideration_compare") == ["comparison"]
        run_for(rt, clock, days=2)
        assert steps(email, "ed@example.com", "consideration_compare") == ["comparison", "demo"]
        # Customer reviews three days later, on the next weekday morning (Monday 9 March)
        run_for(rt, clock, days=5)
        assert steps(email, "ed@example.com", "consideration_compare")[-1] == "reviews"
        assert sent_at(email, "ed@example.com", "consideration_compare", "reviews") == datetime(
            2026, 3, 9, 10, 0, tzinfo=UTC
        )
        # Starting a trial ends the series as converted
        rt.track("ed@example.com", "trial.started")
        run_for(rt, clock, days=10)
        assert "pricing" not in steps(email, "ed@example.com", "consideration_compare")
        assert enrollment(rt, "ed@example.com", "consideration_compare").status == "converted"


# --- decision -----------------------------------------------------------------------------


def test_the_trial_reminder_goes_3_days_before_the_trial_ends_at_9_in_her_time_zone(
    tmp_path: Path,
) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        # Given a lead in New York who starts a trial ending on 16 March at 05:00 her time
        rt.track(
            "fe@example.com",
            "trial.started",
            timezone="America/New_York",
            attributes={"trial_ends_at": "2026-03-16"},
        )
        rt.run_until_idle()
        # It is 05:00 in New York: quiet hours hold the trial offer until 08:00 (13:00 UTC)
        assert steps(email, "fe@example.com", "decision_trial") == []
        welcome, offer = (a for a in actions(rt) if a.reason.get("step") in ("welcome", "offer"))
        assert welcome.reason["held"][-1]["rule"] == "quiet hours 21:00-08:00 (America/New_York)"
        assert offer.reason["held"][-1]["rule"].startswith("queued behind an earlier held email")
        clock.set(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
        rt.run_until_idle()
        clock.advance(seconds=1)  # it was queued one second behind the welcome
        rt.run_until_idle()
        assert steps(email, "fe@example.com", "decision_trial") == ["offer"]
        waiting = enrollment(rt, "fe@example.com", "decision_trial")
        # 13 March, 09:00 in New York (daylight time since 8 March) is 13:00 UTC
        assert waiting.wake_at == datetime(2026, 3, 13, 13, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 13, 12, 59, tzinfo=UTC))
        rt.run_until_idle()
        assert steps(email, "fe@example.com", "decision_trial") == ["offer"]
        clock.advance(minutes=1)
        rt.run_until_idle()
        assert steps(email, "fe@example.com", "decision_trial") == ["offer", "reminder"]
        assert sent_at(email, "fe@example.com", "decision_trial", "reminder") == datetime(
            2026, 3, 13, 13, 0, tzinfo=UTC
        )
        (reminder,) = [a for a in actions(rt) if a.reason.get("step") == "reminder"]
        assert reminder.payload["data"]["code"] == "TRIAL20"
        # She opens the reminder but does not buy: a nudge 4 days later, and a call for sales
        rt.track("fe@example.com", "email.opened", {"action_id": reminder.id})
        run_for(rt, clock, days=4)
        assert steps(email, "fe@example.com", "decision_trial") == ["offer", "reminder", "nudge"]
        (call,) = crm_tasks(rt, "fe@example.com")
        assert call.payload["subject"].startswith("Trial ended without a purchase")
        assert enrollment(rt, "fe@example.com", "decision_trial").status == "completed"


def test_a_buyer_gets_no_nudge_and_a_demo_request_gets_a_trial_invitation(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        rt.track("gu@example.com", "trial.started", attributes={"trial_ends_at": "2026-03-16"})
        rt.track("hu@example.com", "demo.requested")
        run_for(rt, clock, days=2)
        rt.track("gu@example.com", "order.completed", {"total": 149})
        run_for(rt, clock, days=20)
        assert steps(email, "gu@example.com", "decision_trial") == ["offer"]
        gu = enrollment(rt, "gu@example.com", "decision_trial")
        assert (gu.status, gu.context["end_reason"]) == (
            "converted",
            "goal reached: entered purchase",
        )
        # No trial end known for a demo request: the reminder comes after four days
        assert steps(email, "hu@example.com", "decision_trial") == [
            "invitation",
            "reminder",
            "nudge",
        ]
        assert sent_at(email, "hu@example.com", "decision_trial", "reminder") == MONDAY + timedelta(
            days=4
        )
        assert crm_tasks(rt, "hu@example.com") == []  # never opened anything: no call


# --- purchase -----------------------------------------------------------------------------


def test_the_order_confirmation_goes_at_once_and_the_satisfaction_check_a_week_later(
    tmp_path: Path,
) -> None:
    late = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # inside quiet hours in London
    with playbook(tmp_path, start=late) as (rt, clock, email):
        customer(rt, "ida@example.com", "decision", tz="Europe/London")
        rt.track("ida@example.com", "order.completed", {"total": 149})
        rt.run_until_idle()
        # The confirmation is transactional: quiet hours do not hold it
        assert steps(email, "ida@example.com", "purchase_thanks") == ["thanks"]
        assert sent_at(email, "ida@example.com", "purchase_thanks", "thanks") == late
        assert contact(rt, "ida@example.com").stage == "onboarding"
        run_for(rt, clock, days=8)
        assert steps(email, "ida@example.com", "purchase_thanks") == ["thanks", "satisfaction"]
        # a week later (Monday 9 March, late), on the next weekday morning at 10:00
        assert sent_at(email, "ida@example.com", "purchase_thanks", "satisfaction") == datetime(
            2026, 3, 10, 10, 0, tzinfo=UTC
        )
        # A low rating becomes a task for customer success
        rt.track("ida@example.com", "survey.answered", {"survey": "satisfaction", "rating": 2})
        rt.run_until_idle()
        (task,) = [
            t for t in crm_tasks(rt, "ida@example.com") if t.reason["workflow"] == "purchase_thanks"
        ]
        assert task.payload["subject"].startswith("Unhappy new customer")
        assert "unhappy_new_customer" in contact(rt, "ida@example.com").attributes["tags"]


# --- onboarding ---------------------------------------------------------------------------


def test_onboarding_follows_the_customers_progress_and_offers_help_when_it_stalls(
    tmp_path: Path,
) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        for who in ("jo@example.com", "kai@example.com"):
            customer(rt, who, "decision")
            rt.track(who, "order.completed", {"total": 49})
        rt.run_until_idle()
        # Jo connects her data the next day, then builds a dashboard: each step, the next lesson
        run_for(rt, clock, days=1)
        rt.track("jo@example.com", "product.step_completed", {"step": "data_connected"})
        run_for(rt, clock, days=1)
        rt.track("jo@example.com", "product.step_completed", {"step": "dashboard_created"})
        rt.run_until_idle()
        assert steps(email, "jo@example.com", "onboarding_guide") == [
            "welcome",
            "next_steps",
            "almost_there",
        ]
        # Kai does nothing: tips after two days, then help and a task for the onboarding team
        assert steps(email, "kai@example.com", "onboarding_guide") == ["welcome", "tips"]
        assert crm_tasks(rt, "kai@example.com") == []
        run_for(rt, clock, days=5)
        assert steps(email, "kai@example.com", "onboarding_guide") == ["welcome", "tips", "help"]
        (task,) = crm_tasks(rt, "kai@example.com")
        assert task.payload["subject"] == "Onboarding stalled: offer a setup call"
        # Reaching first value moves Jo to engagement: the guide ends as converted
        rt.track("jo@example.com", "product.activated")
        rt.run_until_idle()
        assert enrollment(rt, "jo@example.com", "onboarding_guide").status == "converted"
        assert crm_tasks(rt, "jo@example.com") == []
        # service mail, not marketing: never held by the weekly cap
        onboarding = [a for a in actions(rt) if a.reason.get("workflow") == "onboarding_guide"]
        assert all(not a.payload["marketing"] for a in onboarding if a.kind == "email")


# --- engagement ---------------------------------------------------------------------------


def test_an_active_customer_gets_tips_a_course_and_a_feedback_survey(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "lea@example.com", "onboarding")
        rt.track("lea@example.com", "product.activated")
        run_for(rt, clock, days=28)
        assert steps(email, "lea@example.com", "engagement_education") == [
            "tips",
            "academy",
            "survey",
        ]
        # tips 3 days after activation, at 10:00 on a weekday (Thursday 5 March)
        assert sent_at(email, "lea@example.com", "engagement_education", "tips") == datetime(
            2026, 3, 5, 10, 0, tzinfo=UTC
        )
        rt.track("lea@example.com", "survey.answered", {"survey": "feedback", "nps": None})
        rt.run_until_idle()
        assert steps(email, "lea@example.com", "engagement_education")[-1] == "survey_thanks"
        assert "gave_feedback" in contact(rt, "lea@example.com").attributes["tags"]
        assert enrollment(rt, "lea@example.com", "engagement_education").status == "completed"


# --- retention ----------------------------------------------------------------------------


def test_an_inactive_customer_gets_the_win_back_and_the_account_team_a_task(
    tmp_path: Path,
) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "max@example.com", "retention")
        customer(rt, "ned@example.com", "engagement")
        customer(rt, "oda@example.com", "onboarding")  # not a user yet: not "inactive"
        for who in ("max@example.com", "ned@example.com", "oda@example.com"):
            rt.track(who, "product.inactive", {"days": 14})
        rt.run_until_idle()
        assert steps(email, "max@example.com", "retention_winback") == ["winback"]
        assert steps(email, "ned@example.com", "retention_winback") == ["winback"]
        assert steps(email, "oda@example.com", "retention_winback") == []
        # Ned comes back within the week: converted. Max does not: at risk.
        run_for(rt, clock, days=3)
        rt.track("ned@example.com", "product.used", {"sessions": 2})
        run_for(rt, clock, days=5)
        assert enrollment(rt, "ned@example.com", "retention_winback").status == "converted"
        assert steps(email, "ned@example.com", "retention_winback") == ["winback"]
        assert steps(email, "max@example.com", "retention_winback") == ["winback", "offer"]
        (task,) = crm_tasks(rt, "max@example.com")
        assert task.payload["subject"].startswith("At-risk account")
        assert crm_tasks(rt, "ned@example.com") == []


def test_renewal_reminders_follow_renews_at_in_the_customers_time_zone(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "pia@example.com", "engagement", tz="Europe/Madrid")
        rt.track("pia@example.com", "subscription.renewed", attributes={"renews_at": "2026-04-01"})
        rt.run_until_idle()
        assert contact(rt, "pia@example.com").stage == "retention"
        waiting = enrollment(rt, "pia@example.com", "retention_renewal")
        # two weeks before, 09:00 in Madrid (winter time: 08:00 UTC)
        assert waiting.wake_at == datetime(2026, 3, 18, 8, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 18, 8, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert steps(email, "pia@example.com", "retention_renewal") == ["reminder"]
        assert email.sent[-1].subject == "Your Acme subscription renews on 2026-04-01"
        # three days before: 29 March, the day Madrid moves to summer time, 09:00 is 07:00 UTC
        waiting = enrollment(rt, "pia@example.com", "retention_renewal")
        assert waiting.wake_at == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
        clock.set(waiting.wake_at)
        rt.run_until_idle()
        # no product use in three weeks: the account team hears about it
        (task,) = crm_tasks(rt, "pia@example.com")
        assert task.payload["subject"].startswith("Renewal at risk")


def test_a_renewing_customer_who_uses_the_product_raises_no_alarm(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "quin@example.com", "engagement")
        customer(rt, "rio@example.com", "engagement")  # no renewal date: nothing to remind of
        rt.track("quin@example.com", "subscription.renewed", attributes={"renews_at": "2026-04-01"})
        rt.track("rio@example.com", "subscription.renewed")
        rt.run_until_idle()  # each event applied when it happens, as workers do
        clock.set(datetime(2026, 3, 20, 10, 0, tzinfo=UTC))
        rt.track("quin@example.com", "product.used", {"sessions": 3})
        rt.run_until_idle()
        clock.set(datetime(2026, 3, 30, 10, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert steps(email, "quin@example.com", "retention_renewal") == ["reminder"]
        assert crm_tasks(rt, "quin@example.com") == []
        assert enrollment(rt, "quin@example.com", "retention_renewal").status == "completed"
        assert [e for e in enrollments(rt) if e.workflow == "retention_renewal"] == [
            enrollment(rt, "quin@example.com", "retention_renewal")
        ]
        assert steps(email, "rio@example.com", "retention_renewal") == []


def test_a_churned_customer_is_asked_why_and_offered_a_comeback(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "sol@example.com", "engagement")
        rt.track("sol@example.com", "subscription.cancelled", {"reason": "price"})
        run_for(rt, clock, days=32)
        assert steps(email, "sol@example.com", "churned_winback") == ["why", "comeback"]
        (comeback,) = [m for m in email.sent if m.categories[1] == "churned_winback:comeback"]
        assert "COMEBACK30" in comeback.text
        rt.track("sol@example.com", "order.completed", {"total": 49})
        rt.run_until_idle()
        assert contact(rt, "sol@example.com").stage == "engagement"


# --- loyalty ------------------------------------------------------------------------------


def test_a_repeat_purchase_earns_a_reward_code_then_an_exclusive_offer(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "tao@example.com", "retention")
        rt.track("tao@example.com", "order.completed", {"total": 149})
        rt.run_until_idle()
        assert contact(rt, "tao@example.com").stage == "loyalty"
        assert steps(email, "tao@example.com", "loyalty_reward") == ["reward"]
        (reward,) = [m for m in email.sent if m.categories[1] == "loyalty_reward:reward"]
        assert reward.subject == "A thank-you for coming back: LOYAL15"
        run_for(rt, clock, days=16)
        assert steps(email, "tao@example.com", "loyalty_reward") == ["reward", "exclusive"]
        # A milestone order brings a gift, whatever else is going on
        rt.track("tao@example.com", "order.completed", {"total": 49, "order_number": 10})
        rt.track("tao@example.com", "order.completed", {"total": 49, "order_number": 11})
        rt.run_until_idle()
        assert steps(email, "tao@example.com", "loyalty_milestone") == ["gift"]
        assert "MILESTONE20" in email.sent[-1].text


# --- advocacy -----------------------------------------------------------------------------


def test_a_loyal_promoter_is_invited_to_refer_and_review(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "uma@example.com", "loyalty")
        customer(rt, "vic@example.com", "loyalty")
        # Uma answers NPS 10 (outside any survey): the rule makes her an advocate
        rt.track("uma@example.com", "nps.answered", {"score": 10})
        rt.run_until_idle()
        assert contact(rt, "uma@example.com").stage == "advocacy"
        assert steps(email, "uma@example.com", "advocacy_referral") == ["referral"]
        run_for(rt, clock, days=1)
        rt.track("uma@example.com", "referral.sent", {"referred": "friend@example.org"})
        run_for(rt, clock, days=5)
        assert steps(email, "uma@example.com", "advocacy_referral") == [
            "referral",
            "referral_thanks",
            "review",
        ]
        rt.track("uma@example.com", "review.posted", {"site": "g2"})
        # (the thank-you is the 4th email in a week: the cap holds it until Monday)
        run_for(rt, clock, days=2)
        assert steps(email, "uma@example.com", "advocacy_referral")[-1] == "review_thanks"
        # Vic posts a review first: an advocate too, and not asked for a review again
        rt.track("vic@example.com", "review.posted", {"site": "capterra"})
        run_for(rt, clock, days=10)
        assert contact(rt, "vic@example.com").stage == "advocacy"
        assert steps(email, "vic@example.com", "advocacy_referral") == ["referral"]


# --- NPS ----------------------------------------------------------------------------------


def _surveyed(rt: Runtime, clock: VirtualClock, *people: str) -> None:
    """Customers using the product on Monday: Tuesday's 10:00 check surveys them."""
    for who in people:
        customer(rt, who, "engagement")
        rt.track(who, "product.used", {"sessions": 1})
    run_for(rt, clock, days=2)


def test_the_nps_check_passes_by_customers_not_using_the_product(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        customer(rt, "idle@example.com", "engagement")  # imported, never used the product
        rt.track("lead@example.com", "product.used")  # uses it, but is no customer
        _surveyed(rt, clock, "busy@example.com")
        assert steps(email, "busy@example.com", "nps_survey") == ["survey"]
        assert steps(email, "idle@example.com", "nps_survey") == []
        assert steps(email, "lead@example.com", "nps_survey") == []


def test_nps_answers_branch_into_promoter_passive_and_detractor_paths(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        people = ("wes@example.com", "xia@example.com", "yan@example.com", "zed@example.com")
        _surveyed(rt, clock, *people)
        for who in people:
            # at the first weekly check, Tuesday 10:00 in their time zone
            assert steps(email, who, "nps_survey") == ["survey"]
        assert sent_at(email, people[0], "nps_survey", "survey") == datetime(
            2026, 3, 3, 10, 0, tzinfo=UTC
        )
        # When they answer 6, 9 and 7 (the edges of each group), and Zed does not answer
        rt.track("wes@example.com", "nps.answered", {"score": 6})
        rt.track("xia@example.com", "nps.answered", {"score": 9})
        rt.track("yan@example.com", "nps.answered", {"score": 7})
        rt.run_until_idle()
        # Then the detractor gets the recovery email at once and a CRM task is written
        assert steps(email, "wes@example.com", "nps_survey") == ["survey", "recovery"]
        (task,) = crm_tasks(rt, "wes@example.com")
        assert task.payload["subject"].startswith("NPS detractor")
        assert "detractor" in contact(rt, "wes@example.com").attributes["tags"]
        # the promoter (not loyal yet, so no move to advocacy) is asked for a review here
        assert steps(email, "xia@example.com", "nps_survey") == ["survey", "promoter_thanks"]
        assert contact(rt, "xia@example.com").stage == "engagement"
        assert "promoter" in contact(rt, "xia@example.com").attributes["tags"]
        assert steps(email, "yan@example.com", "nps_survey") == ["survey", "passive_thanks"]
        assert crm_tasks(rt, "xia@example.com") == crm_tasks(rt, "yan@example.com") == []
        # Zed gets one reminder; his late answer (a detractor) is handled all the same
        run_for(rt, clock, days=6)
        assert steps(email, "zed@example.com", "nps_survey") == ["survey", "reminder"]
        rt.track("zed@example.com", "nps.answered", {"score": 5})
        rt.run_until_idle()
        assert steps(email, "zed@example.com", "nps_survey")[-1] == "recovery_late"
        assert len(crm_tasks(rt, "zed@example.com")) == 1


def test_the_nps_survey_comes_back_every_90_days_not_sooner(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        _surveyed(rt, clock, "amy@example.com")
        clock.advance(hours=3)
        rt.track("amy@example.com", "nps.answered", {"score": 8})
        rt.run_until_idle()
        answered = clock.now()  # Wednesday 4 March, 13:00
        # A month later she is still using the product: the weekly checks pass her by
        clock.advance(days=30)
        rt.track("amy@example.com", "product.used", {"sessions": 4})
        run_for(rt, clock, days=10)
        assert steps(email, "amy@example.com", "nps_survey") == ["survey", "passive_thanks"]
        # She goes on using it: the first check once 90 days have passed since her answer
        # (Tuesday 2 June 13:00) asks again, Tuesday 9 June at 10:00, not the one before
        clock.set(answered + timedelta(days=85, hours=-3))  # Thursday 28 May, 10:00
        rt.track("amy@example.com", "product.used", {"sessions": 2})
        run_for(rt, clock, days=14)
        surveys = [
            m.sent_at for m in email.to("amy@example.com") if m.categories[1] == "nps_survey:survey"
        ]
        assert surveys == [
            datetime(2026, 3, 3, 10, 0, tzinfo=UTC),
            datetime(2026, 6, 9, 10, 0, tzinfo=UTC),
        ]
        assert [e.entry for e in enrollments(rt) if e.workflow == "nps_survey"] == [1, 2]


# --- guard rails --------------------------------------------------------------------------


def test_the_weekly_cap_defers_the_4th_marketing_email_and_says_why(tmp_path: Path) -> None:
    with playbook(tmp_path) as (rt, clock, email):
        # Monday: the welcome and (as she qualifies at once) the comparison guide
        rt.track("bea@example.com", "content.downloaded", idempotency_key="d1")
        rt.track("bea@example.com", "content.downloaded", idempotency_key="d2")
        rt.run_until_idle()
        run_for(rt, clock, days=2)  # Wednesday: the demo invitation, the third this week
        assert len(email.to("bea@example.com")) == 3
        # Thursday she starts a trial: the trial offer would be the 4th email in 7 days
        clock.advance(days=1)
        rt.track("bea@example.com", "trial.started")
        rt.run_until_idle()
        assert len(email.to("bea@example.com")) == 3
        (held,) = [a for a in actions(rt) if a.reason.get("step") == "offer"]
        assert held.status == "pending"
        assert held.reason["held"][0]["rule"] == "frequency cap: 3 per 7 days"
        # It goes out once Monday's emails leave the 7-day window
        run_for(rt, clock, days=5)
        assert sent_at(email, "bea@example.com", "decision_trial", "offer") == MONDAY + timedelta(
            days=7
        )


# --- with the harness, as you would write them in your own repository --------------------
#
# The tests above drive a ``Runtime`` by hand; these use the ``journeyline_sim`` fixture
# that ships with the package (``engine.testing``): the same pipeline in virtual time,
# starting Monday 5 January 2026, 09:00 UTC. A failed expectation prints the timeline.


def test_an_order_with_a_renewal_date_brings_the_notice_and_flags_an_idle_account(
    journeyline_sim: Simulation,
) -> None:
    sim = journeyline_sim
    # Given two customers in New York whose orders say they renew on 10 February
    for who in ("uma@example.com", "vic@example.com"):
        sim.contact_import(who, stage="engagement", timezone="America/New_York")
        sim.track(who, "order.completed", {"total": 149}, attributes={"renews_at": "2026-02-10"})
    # When Vic uses the product in the meantime and Uma does not
    sim.advance(days=20)
    sim.track("vic@example.com", "product.used", {"sessions": 3})
    sim.advance(days=30)
    # Then both get the renewal notice two weeks ahead, at 09:00 their time
    for who in ("uma@example.com", "vic@example.com"):
        (notice,) = sim.expect_email(
            who, "reminder", workflow="retention_renewal_after_order", at_local="09:00"
        )
        assert notice.sent_at.date().isoformat() == "2026-01-27"
        sim.expect_enrollment(who, "retention_renewal_after_order", "completed")

    # And only Uma's account team gets an at-risk task, three days before the renewal
    def tasks(who: str) -> list[str]:
        timeline = sim.timeline(who)
        assert timeline is not None
        return [e.summary for e in timeline.entries if e.summary.startswith("crm.task")]

    assert tasks("uma@example.com") == ["crm.task retention_renewal_after_order/at_risk_task: sent"]
    assert tasks("vic@example.com") == []


def test_every_shipped_workflow_has_a_test() -> None:
    """A workflow added to ``workflows/`` without a test of its behaviour fails this: its
    name, quoted, in some test file of ``tests/`` (this one, or one of your own)."""
    source = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    untested = [w.name for w in WORKFLOWS if f'"{w.name}"' not in source]
    assert untested == [], f"workflows with no test in tests/: {untested}"
