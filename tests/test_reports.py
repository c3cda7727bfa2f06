"""Reports from the live tables: a small known history, run through the real pipeline in
virtual time (stages, emails, opens and clicks, an A/B split, NPS answers, orders, a churn),
and the exact figures the report must give for it, whole and over periods; on SQLite and on
PostgreSQL, and on an empty database."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from sqlmodel import Session, col, select

from engine import (
    Registry,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    on_stage_entered,
    send_email,
    split,
    wait,
)
from engine.errors import ValidationError
from engine.executor import choose_variant
from engine.models import Action, Contact, Enrollment, EnrollmentStatus
from engine.reports import Period, Report, build_report, parse_moment, reading
from engine.reports.significance import two_proportion_p_value
from engine.runtime import Runtime
from engine.virtual_time import advance_to
from tests.language_support import TEMPLATES
from tests.support import make_runtime, new_contact
from workflows.rules import RULES

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
END = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)  # when the history stops, and reports are made

WELCOME = Workflow(
    "welcome_series",
    trigger=on_stage_entered("awareness"),
    goals=[on_stage_entered("decision")],
    steps=[send_email("welcome", id="welcome"), wait(days=2), send_email("guide", id="guide")],
)
TRIAL = Workflow(
    "trial_ab",
    trigger=on_event("trial.started"),
    goals=[on_event("order.completed")],
    steps=[
        split(
            A=[send_email("trial_offer", id="offer_a")],
            B=[send_email("trial_offer", id="offer_b")],
            id="offer",
        ),
        wait(days=5),
        send_email("trial_reminder", id="reminder"),
    ],
)
ONBOARDING = Workflow(  # no goal
    "customer_onboarding",
    trigger=on_stage_entered("onboarding"),
    steps=[send_email("onboarding_welcome", id="hello", marketing=False)],
)


def registry() -> Registry:
    return build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=[WELCOME, TRIAL, ONBOARDING],
        templates_dir=TEMPLATES,
        events=["nps.answered"],
    )


def at(day: int, hour: int = 9, minute: int = 0) -> datetime:
    return START.replace(hour=hour, minute=minute) + timedelta(days=day)


class History:
    """The runtime, driven event by event at given virtual times."""

    def __init__(self, runtime: Runtime, clock: VirtualClock) -> None:
        self.runtime = runtime
        self.clock = clock

    def at(self, when: datetime) -> History:
        advance_to(self.runtime, self.clock, when)
        return self

    def track(self, email: str, event_type: str, **properties: Any) -> None:
        self.runtime.track(email, event_type, properties)
        self.runtime.run_until_idle()

    def email_id(self, email: str, workflow: str, step: str | None = None) -> int:
        """The id of the (only) email of ``workflow`` (at ``step``) sent to ``email``."""
        with Session(self.runtime.db) as session:
            query = (
                select(Action.id)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(
                    Contact.email == email,
                    Action.kind == "email",
                    Action.status == "sent",
                    col(Action.reason)["workflow"].as_string() == workflow,
                )
            )
            if step is not None:
                query = query.where(col(Action.reason)["step"].as_string() == step)
            (found,) = session.exec(query).all()
        assert found is not None
        return found

    def engage(
        self,
        email: str,
        event_type: str,
        workflow: str,
        step: str | None = None,
        *,
        as_int: bool = False,
    ) -> None:
        """An engagement event naming the email, as SendGrid's webhook records it (the id as
        text), or as a number (another source)."""
        action_id = self.email_id(email, workflow, step)
        self.track(email, event_type, action_id=action_id if as_int else str(action_id))


def live_through_the_history(history: History) -> None:
    """Five contacts, from 5 January to 2 February 2026 (see the expectations below)."""
    h = history
    h.at(at(0, 9)).track("ana@example.com", "page.viewed")  # awareness: welcome
    h.at(at(0, 10)).track("bo@example.com", "page.viewed")
    h.at(at(0, 11)).track("cy@example.com", "page.viewed")
    h.at(at(0, 15)).engage("cy@example.com", "email.opened", "welcome_series", "welcome")
    h.at(at(0, 16)).engage("ana@example.com", "email.delivered", "welcome_series", "welcome")
    h.engage("cy@example.com", "email.delivered", "welcome_series", "welcome")
    h.at(at(1, 9)).track("ana@example.com", "trial.started")  # decision: a variant's offer
    h.at(at(1, 10)).engage("ana@example.com", "email.opened", "trial_ab")
    h.engage("ana@example.com", "email.clicked", "trial_ab")
    h.at(at(1, 12)).track("bo@example.com", "trial.started")
    h.at(at(1, 12, 30)).engage("bo@example.com", "email.clicked", "trial_ab")  # no open seen
    # cy opens the welcome again (one opened email, two opens), named by a number this time
    h.at(at(1, 13)).engage("cy@example.com", "email.opened", "welcome_series", as_int=True)
    h.at(at(2, 9)).track("ana@example.com", "order.completed", total=120, currency="EUR")
    # cy's guide goes out at day 2, 11:00; she unsubscribes from it the next day
    h.at(at(3, 9)).engage("cy@example.com", "email.unsubscribed", "welcome_series", "guide")
    h.at(at(3, 10)).track("dee@example.com", "order.completed", total=80, currency="EUR")
    h.at(at(4, 10)).track("dee@example.com", "subscription.cancelled")  # churned
    h.at(at(4, 11)).engage("dee@example.com", "email.spam_reported", "welcome_series")
    h.at(at(5, 9)).track("ana@example.com", "nps.answered", score=10)
    h.track("bo@example.com", "nps.answered", score=8)
    h.track("dee@example.com", "nps.answered", score=3)
    h.track("ana@example.com", "nps.answered", score="9")  # text: not a score the rules read
    # bo's reminder goes out at day 6, 12:00, and bounces
    h.at(at(6, 13)).engage("bo@example.com", "email.bounced", "trial_ab", "reminder")
    h.at(at(7, 9)).track("ana@example.com", "nps.answered", score=9)
    h.track("ana@example.com", "order.completed", total=30, currency="EUR")
    h.track("ana@example.com", "order.completed", total="n/a", currency="EUR")
    h.at(datetime(2026, 2, 2, 9, 0, tzinfo=UTC)).track("fay@example.com", "page.viewed")
    h.at(END)


@contextmanager
def lived(url: str, tmp_path: Path) -> Iterator[History]:
    runtime, clock, _email = make_runtime(
        url, broker_url="inline://", clock=VirtualClock(START), outbox_dir=tmp_path / "outbox"
    )
    runtime.registry = registry()
    runtime.start()
    try:
        history = History(runtime, clock)
        live_through_the_history(history)
        yield history
    finally:
        runtime.close()


@pytest.fixture
def history(sqlite_url: str, tmp_path: Path) -> Iterator[History]:
    with lived(sqlite_url, tmp_path) as history:
        yield history


def report_of(history: History, since: str | None = None, until: str | None = None) -> Report:
    period = Period.parse(since, until, now=history.clock.now())
    with reading(history.runtime.db) as session:
        return build_report(
            session,
            history.runtime.registry,
            since=period.since,
            until=period.until,
            now=history.clock.now(),
        )


# --- what the whole history must give --------------------------------------------------------


def funnel(report: Report) -> dict[str, tuple[Any, ...]]:
    """stage -> (entered, reached, conversion, median days, stays ended)."""
    return {
        s.stage: (s.entered, s.reached, s.conversion, s.median_days_in_stage, s.stays_ended)
        for s in report.funnel.stages
    }


def emails(report: Report) -> dict[str, tuple[int, ...]]:
    """workflow:step -> (sent, delivered, opened, clicked, bounced, unsubscribed, spam)."""
    return {
        f"{s.workflow}:{s.step}": (
            s.sent,
            s.delivered,
            s.opened,
            s.clicked,
            s.bounced,
            s.unsubscribed,
            s.spam_reported,
        )
        for s in report.emails.steps
    }


def variant_of(email: str) -> str:
    return choose_variant({"A": 50, "B": 50}, f"{email}:trial_ab:offer")


def assert_the_whole_history(report: Report, history: History) -> None:
    # Funnel: ana got to onboarding, bo to decision, cy and fay stayed in awareness, dee
    # went straight to purchase and onboarding (counted at awareness..onboarding) and churned
    assert report.empty is False
    assert [s.stage for s in report.funnel.stages][-1] == "churned"
    assert funnel(report) == {
        "awareness": (5, 5, None, 1.0, 3),  # stays ended: dee 0, ana 1.0, bo 1.083 days
        "consideration": (0, 3, 0.6, None, 0),
        "decision": (2, 3, 1.0, 1.0, 1),
        "purchase": (2, 2, 0.6667, 0.0, 2),
        "onboarding": (2, 2, 1.0, 1.0, 1),
        "engagement": (0, 0, 0.0, None, 0),
        "retention": (0, 0, None, None, 0),
        "loyalty": (0, 0, None, None, 0),
        "advocacy": (0, 0, None, None, 0),
        "churned": (1, 1, None, None, 0),
    }
    # Emails: ana's offer was opened and clicked, bo's clicked; cy opened her welcome twice,
    # unsubscribed from her guide; bo's reminder bounced; dee reported her welcome as spam
    ana, bo = variant_of("ana@example.com"), variant_of("bo@example.com")
    assert ana != bo, "the history wants both variants drawn"
    assert emails(report) == {
        "customer_onboarding:hello": (2, 0, 0, 0, 0, 0, 0),
        f"trial_ab:offer_{ana.lower()}": (1, 0, 1, 1, 0, 0, 0),
        f"trial_ab:offer_{bo.lower()}": (1, 0, 1, 1, 0, 0, 0),  # a click implies an open
        "trial_ab:reminder": (1, 0, 0, 0, 1, 0, 0),
        "welcome_series:guide": (1, 0, 0, 0, 0, 1, 0),
        "welcome_series:welcome": (5, 2, 1, 0, 0, 0, 1),
    }
    total = report.emails.total
    assert (total.sent, total.opened, total.clicked) == (11, 3, 2)
    welcome = report.emails.steps[-1]
    assert (welcome.rates.delivered, welcome.rates.opened, welcome.rates.spam_reported) == (
        0.4,
        0.2,
        0.2,
    )
    assert report.emails.steps[1].rates.click_to_open == 1.0
    # Goals: the welcome converts on reaching decision (ana, bo), fay's still waits; the
    # trial converts on an order (ana); onboarding has no goal
    goals = {
        g.workflow: (g.has_goal, g.entered, g.converted, g.running, g.conversion)
        for g in report.goals.workflows
    }
    assert goals == {
        "customer_onboarding": (False, 2, 0, 0, 0.0),
        "trial_ab": (True, 2, 1, 0, 0.5),
        "welcome_series": (True, 5, 2, 1, 0.4),
    }
    (test,) = report.goals.ab_tests
    assert (test.workflow, test.split) == ("trial_ab", "offer")
    figures = {v.variant: (v.entered, v.converted, v.p_value) for v in test.variants}
    assert figures == {ana: (1, 1, None), bo: (1, 0, None)}
    assert "too few to tell" in test.verdict
    # NPS: 10, 8, 3 and 9 (the text "9" ignored): 2 promoters, 1 passive, 1 detractor
    nps = report.nps
    assert (nps.answers, nps.promoters, nps.passives, nps.detractors, nps.ignored) == (
        4,
        2,
        1,
        1,
        1,
    )
    assert nps.nps == 25.0
    # Retention: ana and dee became customers, dee churned
    kept = report.retention
    assert (kept.customers, kept.at_start, kept.new_customers, kept.churned) == (2, 0, 2, 1)
    assert (kept.reactivated, kept.churn_rate) == (0, 0.5)
    # Revenue: 120 + 30 from ana, 80 from dee, in EUR; the order without a total ignored
    (eur,) = report.revenue.lines
    assert (eur.currency, eur.orders, eur.revenue, eur.customers) == ("EUR", 3, 230.0, 2)
    assert eur.revenue_per_customer == 115.0
    assert report.revenue.ignored_orders == 1


def test_the_report_of_a_known_history_gives_its_exact_figures(history: History) -> None:
    assert_the_whole_history(report_of(history), history)


def test_each_section_says_what_it_is_computed_from(history: History) -> None:
    report = report_of(history)
    assert "stage_transitions" in report.funnel.computed_from
    assert "properties.action_id" in report.emails.computed_from
    assert "order.completed" in report.revenue.computed_from
    assert "properties.total" in report.revenue.computed_from
    assert "nps.answered" in report.nps.computed_from
    # And the JSON a script reads carries the derived figures too
    data = report.model_dump(mode="json")
    assert data["nps"]["nps"] == 25.0
    assert data["retention"]["churn_rate"] == 0.5
    assert data["emails"]["total"]["rates"]["opened"] == round(3 / 11, 4)
    assert data["revenue"]["lines"][0]["revenue_per_customer"] == 115.0


# --- periods ----------------------------------------------------------------------------------


def test_a_period_counts_only_what_happened_in_it(history: History) -> None:
    # When the report covers 8 and 9 January (dee's order and churn)
    report = report_of(history, since="2026-01-08", until="2026-01-09")
    assert report.since == datetime(2026, 1, 8, tzinfo=UTC)
    assert report.until == datetime(2026, 1, 10, tzinfo=UTC)  # the end of that day
    # Then the funnel is dee's alone, with the stays that ended in it (dee's, not ana's)
    assert funnel(report) == {
        "awareness": (1, 1, None, 0.0, 1),
        "consideration": (0, 1, 1.0, None, 0),
        "decision": (0, 1, 1.0, None, 0),
        "purchase": (1, 1, 1.0, 0.0, 1),
        "onboarding": (1, 1, 1.0, 1.0, 1),
        "engagement": (0, 0, 0.0, None, 0),
        "retention": (0, 0, None, None, 0),
        "loyalty": (0, 0, None, None, 0),
        "advocacy": (0, 0, None, None, 0),
        "churned": (1, 1, None, None, 0),
    }
    # And the emails sent in it, with what became of them since (dee's spam report)
    assert emails(report) == {
        "customer_onboarding:hello": (1, 0, 0, 0, 0, 0, 0),
        "welcome_series:welcome": (1, 0, 0, 0, 0, 0, 1),
    }
    # And ana, a customer when it began, counts among its customers with dee
    kept = report.retention
    assert (kept.customers, kept.at_start, kept.new_customers, kept.churned) == (2, 1, 1, 1)
    (eur,) = report.revenue.lines
    assert (eur.orders, eur.revenue, eur.customers) == (1, 80.0, 1)
    assert report.nps.answers == 0 and report.nps.nps is None
    # Nothing reported these two emails delivered or opened: the report says so
    assert len(report.notes) == 2
    assert "email.delivered" in report.notes[0] and "opened and clicked read 0" in report.notes[1]
    assert [(g.workflow, g.entered) for g in report.goals.workflows] == [
        ("customer_onboarding", 1),
        ("welcome_series", 1),
    ]


def test_a_period_after_the_history_has_only_fay_and_the_customers_still_there(
    history: History,
) -> None:
    report = report_of(history, since="2026-02-01")
    assert funnel(report)["awareness"] == (1, 1, None, None, 0)
    assert funnel(report)["consideration"] == (0, 0, 0.0, None, 0)
    assert emails(report) == {"welcome_series:welcome": (1, 0, 0, 0, 0, 0, 0)}
    kept = report.retention
    assert (kept.customers, kept.at_start, kept.churned, kept.churn_rate) == (1, 1, 0, 0.0)
    assert report.revenue.lines == [] and report.goals.ab_tests == []
    # An age is counted back from now: 30 days before 2 February reaches back to 3 January
    assert report_of(history, since="30d").funnel == report_of(history).funnel


def test_period_bounds_as_people_write_them() -> None:
    now = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    assert parse_moment("30d", now=now, field="since") == now - timedelta(days=30)
    assert parse_moment(" 6h ", now=now, field="since") == now - timedelta(hours=6)
    assert parse_moment("90m", now=now, field="since") == now - timedelta(minutes=90)
    june = datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_moment("2026-06-01", now=now, field="since") == june
    assert parse_moment("2026-06-01", now=now, field="until", end_of_day=True) == june.replace(
        day=2
    )
    assert parse_moment("2026-06-01T09:00+02:00", now=now, field="since") == june.replace(hour=7)
    assert parse_moment("2026-06-01 09:30", now=now, field="since") == june.replace(
        hour=9, minute=30
    )
    with pytest.raises(ValidationError) as bad:
        parse_moment("last week", now=now, field="since")
    assert bad.value.field == "since" and "'last week'" in str(bad.value)
    with pytest.raises(ValidationError) as backwards:
        Period.parse("2026-06-05", "2026-06-01", now=now)
    assert backwards.value.field == "until"
    assert Period.parse(None, None, now=now) == Period()


# --- nothing to report ------------------------------------------------------------------------


def test_an_empty_database_says_no_data_and_divides_by_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    runtime, clock, _ = make_runtime(sqlite_url, outbox_dir=tmp_path / "outbox")
    try:
        runtime.registry = registry()
        with reading(runtime.db) as session:
            report = build_report(session, runtime.registry, now=clock.now())
    finally:
        runtime.close()
    assert report.empty is True
    assert report.notes == ["no data in this period (everything recorded)"]
    assert all(s.reached == 0 and s.conversion is None for s in report.funnel.stages)
    assert all(s.median_days_in_stage is None for s in report.funnel.stages)
    assert report.emails.steps == [] and report.emails.total.sent == 0
    assert report.emails.total.rates.opened is None
    assert report.goals.workflows == [] and report.goals.ab_tests == []
    assert report.nps.answers == 0 and report.nps.nps is None
    assert report.retention.customers == 0 and report.retention.churn_rate is None
    assert report.revenue.lines == [] and report.revenue.ignored_orders == 0


# --- A/B significance -------------------------------------------------------------------------


def test_the_p_value_is_the_two_sided_two_proportion_z_test() -> None:
    # 20/100 against 35/100: pooled 27.5%
    pooled = 55 / 200
    z = (0.35 - 0.20) / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    expected = 2 * (1 - NormalDist().cdf(z))
    assert two_proportion_p_value(20, 100, 35, 100) == pytest.approx(expected, rel=1e-9)
    assert two_proportion_p_value(20, 100, 35, 100) == pytest.approx(0.0175, abs=1e-4)
    assert two_proportion_p_value(50, 100, 50, 100) == pytest.approx(1.0)
    # Too few expected conversions (or non-conversions) in a variant: no answer, not a guess
    assert two_proportion_p_value(1, 10, 3, 10) is None
    assert two_proportion_p_value(98, 100, 100, 100) is None
    assert two_proportion_p_value(0, 0, 5, 10) is None


def test_a_split_with_enough_enrollments_gets_a_p_value_and_a_verdict(
    sqlite_url: str, tmp_path: Path
) -> None:
    # Given 100 enrollments drawn A (20 converted) and 100 drawn B (35 converted)
    runtime, clock, _ = make_runtime(sqlite_url, outbox_dir=tmp_path / "outbox")
    try:
        runtime.registry = registry()
        now = clock.now()
        with Session(runtime.db) as session:
            for entry in range(200):
                variant, index = ("A", entry) if entry < 100 else ("B", entry - 100)
                converted = index < (20 if variant == "A" else 35)
                person = new_contact(f"p{entry}@example.com", now)  # a contact each
                session.add(person)
                session.flush()
                session.add(
                    Enrollment(
                        contact_id=person.id,  # type: ignore[arg-type]
                        workflow="trial_ab",
                        version="v1",
                        entry=1,
                        status=EnrollmentStatus.CONVERTED
                        if converted
                        else EnrollmentStatus.COMPLETED,
                        context={"variants": {"offer": variant}},
                        started_at=now,
                        updated_at=now,
                    )
                )
            session.commit()
        with reading(runtime.db) as session:
            report = build_report(session, runtime.registry, now=now)
    finally:
        runtime.close()
    # Then B is compared with A, and found unlikely to differ by chance
    (test,) = report.goals.ab_tests
    a, b = test.variants
    assert (a.variant, a.entered, a.converted, a.conversion, a.p_value) == ("A", 100, 20, 0.2, None)
    assert (b.variant, b.entered, b.converted, b.conversion) == ("B", 100, 35, 0.35)
    assert b.p_value == pytest.approx(0.0175, abs=1e-4)
    assert test.verdict == (
        "B 35% vs A 20%: p = 0.018, a difference this large is unlikely to be chance (p < 0.05)"
    )


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_same_history_gives_the_same_figures_on_postgresql(
    pg_db_url: str, tmp_path: Path
) -> None:
    with lived(pg_db_url, tmp_path) as history:
        assert_the_whole_history(report_of(history), history)
        during = report_of(history, since="2026-01-08", until="2026-01-09")
        assert funnel(during)["onboarding"] == (1, 1, 1.0, 1.0, 1)
        assert (during.retention.customers, during.retention.at_start) == (2, 1)


@pytest.mark.parametrize("text", ["0001-01-01T00:00+01:00", "9999-12-31T23:00-05:00", "9999-12-31"])
def test_a_period_end_outside_the_calendar_is_a_validation_error_not_a_crash(text: str) -> None:
    from engine.errors import ValidationError
    from engine.reports.period import parse_moment

    with pytest.raises(ValidationError) as refused:
        parse_moment(text, now=datetime(2026, 6, 1, tzinfo=UTC), field="until", end_of_day=True)
    assert refused.value.field == "until"
    assert "outside the calendar" in str(refused.value)
