"""Reports probe: a small history written straight into the tables, whose every figure was
worked out by hand (below, next to each expectation), read back on SQLite and PostgreSQL;
and what the report says about its own definitions, its period and its p-values."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from sqlmodel import Session

from engine import Workflow, build_registry, lifecycle_journey, on_event, send_email, split
from engine.db import make_engine
from engine.errors import ValidationError
from engine.models import Action, Contact, Enrollment, Event, StageTransition
from engine.registry import Registry
from engine.reports import Period, Report, build_report, html_report, print_report, reading
from engine.reports.significance import p_text, two_proportion_p_value
from tests.language_support import TEMPLATES
from workflows.rules import RULES

TRIAL = Workflow(
    "trial_ab",
    trigger=on_event("trial.started"),
    goals=[on_event("order.completed")],
    steps=[
        split(
            A=[send_email("trial_offer", id="offer_a")],
            B=[send_email("trial_offer", id="offer_b")],
            C=[send_email("trial_offer", id="offer_c")],
            id="offer",
        )
    ],
)
WELCOME = Workflow(
    "w",
    trigger=on_event("page.viewed"),
    steps=[send_email("welcome", id="s1"), send_email("guide", id="s2")],
)
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def registry() -> Registry:
    return build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=[TRIAL, WELCOME],
        templates_dir=TEMPLATES,
        events=["nps.answered"],
    )


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Rows:
    """Writes the rows of one history; ``ids[n]`` is contact cn's id."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.keys = 0
        self.ids: dict[int, int] = {}

    def key(self) -> str:
        self.keys += 1
        return f"probe:{self.keys}"

    def contacts(self, count: int) -> None:
        for n in range(1, count + 1):
            row = Contact(
                email=f"c{n}@example.com",
                stage="awareness",
                stage_entered_at=t("2026-01-01"),
                created_at=t("2026-01-01"),
                updated_at=t("2026-01-01"),
            )
            self.session.add(row)
            self.session.flush()
            assert row.id is not None
            self.ids[n] = row.id

    def moves(self, n: int, *path: tuple[str, str]) -> None:
        """Contact cn's stage changes: (stage, time) in order, from no stage."""
        previous = ""
        for stage, at in path:
            self.session.add(
                StageTransition(
                    contact_id=self.ids[n],
                    from_stage=previous,
                    to_stage=stage,
                    trigger="t",
                    at=t(at),
                )
            )
            previous = stage

    def email(self, n: int, step: str, sent: str | None, status: str = "sent") -> int:
        row = Action(
            contact_id=self.ids[n],
            kind="email",
            idempotency_key=self.key(),
            status=status,
            reason={"workflow": "w", "step": step},
            next_attempt_at=t("2026-01-01"),
            created_at=t("2026-01-01"),
            updated_at=t("2026-01-01"),
            completed_at=None if sent is None else t(sent),
        )
        self.session.add(row)
        self.session.flush()
        assert row.id is not None
        return row.id

    def event(self, n: int, kind: str, at: str, **properties: Any) -> None:
        self.session.add(
            Event(
                contact_id=self.ids[n],
                type=kind,
                properties=properties,
                idempotency_key=self.key(),
                status="processed",
                occurred_at=t(at),
                received_at=t(at),
            )
        )

    def split_enrollments(self, *variants: tuple[str, int, int], at: str) -> None:
        """(variant, converted, entered) per variant, each enrollment of a contact of its
        own (``ab1@example.com``, ...: a contact is the unit of an A/B test)."""
        number = 0
        for variant, converted, entered in variants:
            for i in range(entered):
                number += 1
                person = Contact(
                    email=f"ab{number}@example.com",
                    stage="awareness",
                    stage_entered_at=t("2026-01-01"),
                    created_at=t("2026-01-01"),
                    updated_at=t("2026-01-01"),
                )
                self.session.add(person)
                self.session.flush()
                assert person.id is not None
                self.session.add(
                    Enrollment(
                        contact_id=person.id,
                        workflow="trial_ab",
                        version="v1",
                        entry=1,
                        status="converted" if i < converted else "completed",
                        context={"variants": {"offer": variant}},
                        started_at=t(at),
                        updated_at=t(at),
                    )
                )


def write_march(url: str) -> None:
    """The history whose March 2026 is worked out in ``assert_march``."""
    db = make_engine(url)
    try:
        with Session(db) as session:
            rows = Rows(session)
            rows.contacts(9)
            # c1 goes all the way to onboarding in March; c2 skips consideration; c3 starts
            # exactly at the period's start and goes back from decision once; c4 began in
            # February; c5's move at exactly the period's end belongs to April; c6, a
            # customer since January, churns and comes back; c7 churns from onboarding
            rows.moves(
                1,
                ("awareness", "2026-03-02"),
                ("consideration", "2026-03-04"),
                ("decision", "2026-03-07"),
                ("purchase", "2026-03-08"),
                ("onboarding", "2026-03-08"),
            )
            rows.moves(2, ("awareness", "2026-03-02"), ("decision", "2026-03-03"))
            rows.moves(
                3,
                ("awareness", "2026-03-01"),
                ("consideration", "2026-03-06"),
                ("decision", "2026-03-07"),
                ("consideration", "2026-03-09T12:00"),
                ("decision", "2026-03-10"),
            )
            rows.moves(4, ("awareness", "2026-02-20"), ("consideration", "2026-03-02"))
            rows.moves(5, ("awareness", "2026-03-31T23:59:59"), ("consideration", "2026-04-01"))
            rows.moves(
                6,
                ("awareness", "2026-01-01"),
                ("purchase", "2026-01-10"),
                ("onboarding", "2026-01-10"),
                ("engagement", "2026-01-20"),
                ("churned", "2026-03-15"),
                ("engagement", "2026-03-25"),
            )
            rows.moves(
                7,
                ("awareness", "2026-02-01"),
                ("purchase", "2026-02-05"),
                ("onboarding", "2026-02-05"),
                ("churned", "2026-03-20"),
            )
            rows.moves(8, ("awareness", "2026-01-05"))
            # Emails of step s1: c1's opened three times and clicked twice (the provider
            # reporting again under new ids), c2's clicked without an open, c3's sent a
            # second before March (its March open is not March's), c4's sent in the last
            # microsecond of March and bouncing (blocked) in April, c5's sent at the end
            a1 = rows.email(1, "s1", "2026-03-02T10:00")
            rows.event(1, "email.delivered", "2026-03-02T10:01", action_id=str(a1))
            for _ in range(3):
                rows.event(1, "email.opened", "2026-03-02T11:00", action_id=str(a1))
            for _ in range(2):
                rows.event(1, "email.clicked", "2026-03-02T11:01", action_id=str(a1))
            a2 = rows.email(2, "s1", "2026-03-02T11:00")
            rows.event(2, "email.delivered", "2026-03-02T11:01", action_id=str(a2))
            rows.event(2, "email.clicked", "2026-03-02T12:00", action_id=str(a2))
            a3 = rows.email(3, "s1", "2026-02-28T23:59:59")
            rows.event(3, "email.opened", "2026-03-02T12:00", action_id=str(a3))
            a4 = rows.email(4, "s1", "2026-03-31T23:59:59.999999")
            rows.event(4, "email.bounced", "2026-04-01T02:00", action_id=str(a4), type="blocked")
            a5 = rows.email(5, "s1", "2026-04-01")
            rows.event(5, "email.opened", "2026-04-01T01:00", action_id=str(a5))
            # Step s2: c1's dropped, unsubscribed from and reported as spam; c2's failed;
            # c3's opened (named by a number) and unsubscribed from twice; c2 naming c3's
            # email is not an open of it
            a6 = rows.email(1, "s2", "2026-03-03")
            rows.event(1, "email.dropped", "2026-03-03T00:01", action_id=str(a6))
            rows.event(1, "email.unsubscribed", "2026-03-03T00:02", action_id=str(a6))
            rows.event(1, "email.spam_reported", "2026-03-03T00:03", action_id=str(a6))
            rows.email(2, "s2", None, status="failed")
            a8 = rows.email(3, "s2", "2026-03-05")
            rows.event(3, "email.opened", "2026-03-05T01:00", action_id=a8)
            rows.event(3, "email.unsubscribed", "2026-03-05T02:00", action_id=str(a8))
            rows.event(3, "email.group_unsubscribed", "2026-03-05T02:00", action_id=str(a8))
            rows.event(2, "email.opened", "2026-03-05T01:00", action_id=str(a8))
            # c8 unsubscribes by the one-click link: no email named
            rows.event(8, "email.unsubscribed", "2026-03-12", via="link")
            # NPS: the bands' edges 6/7 and 8/9, c1 answering twice, c6 at the start, c7 at
            # the end (April's), and three answers that are no score
            for n, score, at in (
                (1, 6, "2026-03-10"),
                (2, 7, "2026-03-10"),
                (3, 8, "2026-03-10"),
                (4, 9, "2026-03-10"),
                (5, 10, "2026-03-10"),
                (1, 9.0, "2026-03-11"),
                (6, 0, "2026-03-01"),
                (7, 10, "2026-04-01"),
            ):
                rows.event(n, "nps.answered", at, score=score)
            for score in ("9", 11, 8.5):
                rows.event(8, "nps.answered", "2026-03-12", score=score)
            # Orders: c7's at the start counts, c5's at the end does not, c4's has no total
            for n, total, currency, at in (
                (1, 100, "EUR", "2026-03-08"),
                (1, 50.5, "EUR", "2026-03-09"),
                (6, 20, "EUR", "2026-03-25"),
                (7, 30, "EUR", "2026-03-01"),
                (2, 10, "USD", "2026-03-09"),
                (3, 5, None, "2026-03-09"),
                (4, "abc", "EUR", "2026-03-09"),
                (5, 999, "EUR", "2026-04-01"),
            ):
                order: dict[str, Any] = {"total": total}
                if currency is not None:
                    order["currency"] = currency
                rows.event(n, "order.completed", at, **order)
            # A/B: 134/300 (A), 158/300 (B), 150/300 (C) enrollments converted
            rows.split_enrollments(
                ("A", 134, 300), ("B", 158, 300), ("C", 150, 300), at="2026-03-15"
            )
            session.commit()
    finally:
        db.dispose()


def report_of(url: str, since: str | None, until: str | None) -> Report:
    db = make_engine(url)
    try:
        period = Period.parse(since, until, now=NOW)
        with reading(db) as session:
            return build_report(
                session, registry(), since=period.since, until=period.until, now=NOW
            )
    finally:
        db.dispose()


def assert_march(report: Report) -> None:
    # Funnel. Furthest stage entered in March: c1 onboarding, c2 and c3 decision, c4
    # consideration, c5 awareness, c6 engagement (c7 only churned: outside the funnel)
    stages = {
        s.stage: (s.entered, s.reached, s.conversion, s.median_days_in_stage, s.stays_ended)
        for s in report.funnel.stages
    }
    assert stages == {
        # stays ended: c2 1, c1 2, c3 5, c4 10 (began in February): (2 + 5) / 2
        "awareness": (4, 6, None, 3.5, 4),
        # c3 twice and c1, c4: 3 contacts; reached 5 / 6; stays c3 0.5, c3 1, c1 3
        "consideration": (3, 5, round(5 / 6, 4), 1.0, 3),
        # c2 and c3 still in decision: only c1's 1 day and c3's 2.5 ended: (1 + 2.5) / 2
        "decision": (3, 4, 0.8, 1.75, 2),
        "purchase": (1, 2, 0.5, 0.0, 1),
        # c7's February-to-20-March stay: 43 days; c1 is still there
        "onboarding": (1, 2, 1.0, 43.0, 1),
        # c6's 20 January to 15 March: 54 days
        "engagement": (1, 1, 0.5, 54.0, 1),
        "retention": (0, 0, 0.0, None, 0),
        "loyalty": (0, 0, None, None, 0),
        "advocacy": (0, 0, None, None, 0),
        "churned": (2, 2, None, None, 0),
    }
    steps = {
        s.step: (s.sent, s.delivered, s.opened, s.clicked, s.bounced, s.unsubscribed)
        for s in report.emails.steps
    }
    assert steps == {"s1": (3, 2, 2, 2, 1, 0), "s2": (2, 0, 1, 0, 1, 2)}
    assert report.emails.steps[1].spam_reported == 1
    assert report.emails.total.rates.opened == 0.6 and report.emails.total.rates.bounced == 0.4
    assert report.emails.unsubscribes_naming_no_email == 1
    # A/B: p-values against A, checked by hand from the pooled z below
    (test,) = report.goals.ab_tests
    a, b, c = test.variants
    assert (a.entered, a.converted, b.converted, c.converted) == (300, 134, 158, 150)
    assert b.p_value == pytest.approx(pooled_z_p(134, 300, 158, 300), rel=1e-9)
    assert c.p_value == pytest.approx(pooled_z_p(134, 300, 150, 300), rel=1e-9)
    # NPS: 6 and 0 detractors; 7, 8 passives; 9, 10, 9.0 promoters: (3 - 2) / 7
    nps = report.nps
    assert (nps.answers, nps.promoters, nps.passives, nps.detractors, nps.ignored) == (
        7,
        3,
        2,
        2,
        3,
    )
    assert nps.nps == 14.3
    # Customers: c6, c7 at the start, c1 new; c6 and c7 churned, c6 came back
    kept = report.retention
    assert (kept.customers, kept.at_start, kept.new_customers, kept.churned) == (3, 2, 1, 2)
    assert (kept.reactivated, kept.churn_rate) == (1, 0.6667)
    lines = {
        line.currency: (line.orders, line.revenue, line.customers, line.revenue_per_customer)
        for line in report.revenue.lines
    }
    assert lines == {
        "EUR": (4, 200.5, 3, 66.83),
        "USD": (1, 10.0, 1, 10.0),
        None: (1, 5.0, 1, 5.0),
    }
    assert report.revenue.ignored_orders == 1


def pooled_z_p(converted_a: int, entered_a: int, converted_b: int, entered_b: int) -> float:
    """The two-sided p of the pooled two-proportion z-test, written out again."""
    pooled = (converted_a + converted_b) / (entered_a + entered_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / entered_a + 1 / entered_b))
    z = abs(converted_b / entered_b - converted_a / entered_a) / se
    return 2 * (1 - 0.5 * (1 + math.erf(z / math.sqrt(2))))


@pytest.fixture
def march(sqlite_url: str) -> Iterator[str]:
    write_march(sqlite_url)
    yield sqlite_url


def test_march_gives_the_figures_worked_out_by_hand(march: str) -> None:
    assert_march(report_of(march, "2026-03-01", "2026-03-31"))


@pytest.mark.postgres
def test_march_gives_the_same_figures_on_postgresql(march: str, pg_db_url: str) -> None:
    write_march(pg_db_url)
    on_sqlite = report_of(march, "2026-03-01", "2026-03-31")
    on_postgres = report_of(pg_db_url, "2026-03-01", "2026-03-31")
    assert_march(on_postgres)
    assert on_postgres.model_dump(mode="json") == on_sqlite.model_dump(mode="json")


def test_a_period_starting_at_a_utc_offset_moves_its_bounds(march: str) -> None:
    # From 1 March 00:00 in UTC+02:00, that is 28 February 22:00 UTC: c3's s1 email of
    # 23:59:59 falls in it, and an order at 1 April 00:00 UTC is still outside
    report = report_of(march, "2026-03-01T00:00+02:00", "2026-04-01T00:00Z")
    assert report.since == t("2026-02-28T22:00")
    (s1, _s2) = report.emails.steps
    assert (s1.sent, s1.opened) == (4, 3)
    assert report.revenue.lines[0].orders == 4


# --- the p-value beside its verdict ---------------------------------------------------------


def test_a_p_value_just_under_005_is_called_so_and_not_shown_as_005(march: str) -> None:
    # 134/300 against 158/300: p = 0.04996
    p = two_proportion_p_value(134, 300, 158, 300)
    assert p is not None and 0.0499 < p < 0.05
    report = report_of(march, "2026-03-01", "2026-03-31")
    b = report.goals.ab_tests[0].variants[1]
    assert b.p_value is not None and b.p_value < 0.05
    verdict = report.goals.ab_tests[0].verdict
    assert "B 53% vs A 45%: p = 0.04996, a difference this large is unlikely" in verdict
    page = html_report(report)
    assert "<td>0.04996</td>" in page


def test_p_values_are_never_rounded_across_005() -> None:
    assert p_text(0.0496) == "0.0496"  # not 0.050 beside "p < 0.05"
    assert p_text(0.049962) == "0.04996"
    assert p_text(0.0499999999999) == "<0.05"
    assert p_text(0.05) == "0.050" and p_text(0.0504) == "0.050"
    assert p_text(0.018) == "0.018" and p_text(0.0004) == "<0.001"


def test_three_variants_say_they_are_not_corrected_for_several_comparisons(march: str) -> None:
    verdict = report_of(march, "2026-03-01", "2026-03-31").goals.ab_tests[0].verdict
    assert "no correction for making 2 comparisons" in verdict


# --- definitions and the period, said on the report ------------------------------------------


def test_the_email_table_says_each_email_counts_once_and_what_counts_as_what(
    march: str,
) -> None:
    said = report_of(march, "2026-03-01", "2026-03-31").emails.computed_from
    assert "counts once" in said and "unique opens and clicks" in said
    assert "a click counts as an open" in said
    assert "email.dropped" in said and "blocked" in said
    assert "one-click link" in said


def test_unsubscribes_naming_no_email_are_counted_in_a_note(march: str) -> None:
    report = report_of(march, "2026-03-01", "2026-03-31")
    assert report.notes == [
        "1 unsubscribe(s) in the period name no email (the one-click link, the contacts API): "
        "they are in no step's unsubscribed figure"
    ]


def test_the_header_says_which_end_of_the_period_is_in_it(march: str) -> None:
    report = report_of(march, "2026-03-01", "2026-03-31")
    out = io.StringIO()
    print_report(report, Console(file=out, width=200))
    assert (
        "Journeyline report: 2026-03-01 00:00 to 2026-04-01 00:00 UTC (the start included, "
        "the end excluded)" in out.getvalue()
    )
    assert "(the start included, the end excluded); generated" in html_report(report)


def test_a_compact_iso_date_as_until_means_the_end_of_that_day() -> None:
    spelled = Period.parse("2026-03-01", "2026-03-31", now=NOW)
    compact = Period.parse("20260301", "20260331", now=NOW)
    assert compact == spelled
    assert compact.until == t("2026-04-01")


def test_a_period_bound_with_seconds_is_described_with_them() -> None:
    period = Period.parse("90m", None, now=datetime(2026, 5, 1, 10, 0, 47, 500, tzinfo=UTC))
    assert period.describe() == "since 2026-05-01 08:30:47 UTC"
    assert Period.parse("2026-03-01", None, now=NOW).describe() == "since 2026-03-01 00:00 UTC"


def test_an_offset_whose_plus_a_url_turned_into_a_space_gets_a_hint() -> None:
    with pytest.raises(ValidationError) as refused:
        Period.parse("2026-03-01T00:00 02:00", None, now=NOW)
    assert "write the + of a UTC offset as %2B" in str(refused.value)


# --- rounding as people round ---------------------------------------------------------------


def test_shares_and_the_nps_round_halves_up_from_the_exact_figure(sqlite_url: str) -> None:
    # March: 8 answers, 1 promoter (12.5%), 4 passives, 3 detractors (37.5%): NPS -25.
    # April: 52 answers, 7 promoters, 45 passives: NPS 13.46, 13.5 in the JSON's one place
    db = make_engine(sqlite_url)
    try:
        with Session(db) as session:
            rows = Rows(session)
            rows.contacts(1)
            for score in (10, 8, 8, 8, 8, 0, 0, 0):
                rows.event(1, "nps.answered", "2026-03-02", score=score)
            for i in range(52):
                rows.event(1, "nps.answered", "2026-04-02", score=9 if i < 7 else 7)
            session.commit()
    finally:
        db.dispose()

    def shown(report: Report) -> str:
        out = io.StringIO()
        print_report(report, Console(file=out, width=200))
        return out.getvalue()

    march = report_of(sqlite_url, "2026-03-01", "2026-03-31")
    assert "1 (13%)" in shown(march) and "3 (38%)" in shown(march)
    assert "│ -25 │" in shown(march)
    april = report_of(sqlite_url, "2026-04-01", "2026-04-30")
    assert april.nps.nps == 13.5  # the JSON's figure, to one place
    assert "│ +13 │" in shown(april)  # 13.46 rounds to 13, not 13.5 to 14
    assert "<b>+13</b>NPS" in html_report(april)


def test_a_narrow_terminal_never_cuts_a_figure(march: str) -> None:
    # At 60 columns the email table is squeezed: names give way, figures stay whole
    report = report_of(march, "2026-03-01", "2026-03-31")
    out = io.StringIO()
    print_report(report, Console(file=out, width=60))
    (s2,) = [line for line in out.getvalue().splitlines() if line.split("│")[0].strip() == "s2"]
    assert [cell.strip() for cell in s2.split("│")[1:]] == [
        "2",
        "0%",
        "50%",
        "0%",
        "50%",
        "100%",  # not "10…"
        "50%",
    ]


def test_each_section_states_the_choices_behind_its_figures(march: str) -> None:
    report = report_of(march, "2026-03-01", "2026-03-31")
    assert "contacts still in the stage are not in it" in report.funnel.computed_from
    assert "imported straight into a later stage" in report.funnel.computed_from
    assert "the running ones counted as not converted" in report.goals.computed_from
    assert "first in name order" in report.goals.computed_from
    assert "answered twice in the period counts twice" in report.nps.computed_from
    assert "new = those entering a customer stage" in report.retention.computed_from
    assert "(even if they came back)" in report.retention.computed_from


def write_two_engagement_stays(url: str) -> None:
    """Stays of 5 days 1 hour and 5 days 8 hours: a median of 5.1875 days."""
    db = make_engine(url)
    try:
        with Session(db) as session:
            rows = Rows(session)
            rows.contacts(2)
            rows.moves(1, ("engagement", "2026-01-20T20:00"), ("retention", "2026-01-25T21:00"))
            rows.moves(2, ("engagement", "2026-01-23T02:00"), ("retention", "2026-01-28T10:00"))
            session.commit()
    finally:
        db.dispose()


def engagement_median(url: str) -> float | None:
    report = report_of(url, None, None)
    (engagement,) = [s for s in report.funnel.stages if s.stage == "engagement"]
    return engagement.median_days_in_stage


def test_a_median_of_stays_is_the_same_on_sqlite_as_in_exact_arithmetic(sqlite_url: str) -> None:
    # SQLite's julianday gives 5.041666666511 and 5.333333333023: their mean rounded to
    # 5.187, where the exact 5.1875 (and PostgreSQL) give 5.188
    write_two_engagement_stays(sqlite_url)
    assert engagement_median(sqlite_url) == round(5.1875, 3) == 5.188


@pytest.mark.postgres
def test_the_median_of_stays_is_the_same_on_postgresql(pg_db_url: str) -> None:
    write_two_engagement_stays(pg_db_url)
    assert engagement_median(pg_db_url) == 5.188


def test_a_period_starting_in_the_future_is_refused_not_reported_as_zeros() -> None:
    """Nothing has happened in it: its churn and conversion rates would read 0%."""
    with pytest.raises(ValidationError) as future:
        Period.parse("2027-01-01", None, now=NOW)
    assert future.value.field == "since" and "in the future" in str(future.value)
    assert Period.parse(NOW.isoformat(), None, now=NOW).since == NOW  # now itself is fine


def test_an_ab_test_counts_each_contact_once_however_often_she_re_entered(
    sqlite_url: str,
) -> None:
    """Re-entries draw the same variant: counted as people, 20 entries of one contact
    would weigh like 20 contacts agreeing. Goals still count every enrollment."""
    db = make_engine(sqlite_url)
    try:
        with Session(db) as session:
            rows = Rows(session)
            rows.contacts(2)
            for n, variant, entries in ((1, "A", 20), (2, "B", 1)):
                for entry in range(1, entries + 1):
                    session.add(
                        Enrollment(
                            contact_id=rows.ids[n],
                            workflow="trial_ab",
                            version="v1",
                            entry=entry,
                            status="converted",
                            context={"variants": {"offer": variant}},
                            started_at=t("2026-03-15") + timedelta(minutes=entry),
                            updated_at=t("2026-03-15"),
                        )
                    )
            session.commit()
    finally:
        db.dispose()
    report = report_of(sqlite_url, "2026-03-01", "2026-03-31")
    (test,) = report.goals.ab_tests
    assert [(v.variant, v.entered, v.converted) for v in test.variants] == [
        ("A", 1, 1),
        ("B", 1, 1),
    ]
    assert report.goals.workflows[0].entered == 21
