"""What a report holds: plain figures, each section saying what it is computed from.

These are the JSON the CLI prints with ``--json`` and ``GET /v1/reports`` answers (their
field descriptions are the OpenAPI document's). Rates are fractions (0.25 is 25%), or null
when there is nothing to divide by.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, computed_field


def rate(part: int, whole: int) -> float | None:
    """``part / whole``, rounded to 4 places; None when ``whole`` is 0."""
    return round(part / whole, 4) if whole else None


# --- funnel ---------------------------------------------------------------------------------


class StageFigures(BaseModel):
    stage: str
    journey: str = Field(
        description="buyer, customer, or exit (churned: counted apart, outside the funnel)."
    )
    entered: int = Field(description="Contacts who entered this stage in the period.")
    reached: int = Field(
        description="Contacts who got at least this far in the period: a contact counts at "
        "every stage up to the furthest one they entered in it, even one they skipped, so the "
        "funnel only narrows (the simulator's rule). For an exit stage, those who entered it."
    )
    conversion: float | None = Field(
        description="reached / reached of the stage before (journey order); null for the "
        "first stage and exit stages."
    )
    median_days_in_stage: float | None = Field(
        description="Median days spent in the stage, over the stays that ended (the contact "
        "moved on) in the period; null when none did, and for exit stages."
    )
    stays_ended: int = Field(description="How many stays the median is taken over.")


class Funnel(BaseModel):
    computed_from: str
    stages: list[StageFigures]


# --- emails -----------------------------------------------------------------------------------


class EmailRates(BaseModel):
    delivered: float | None
    opened: float | None
    clicked: float | None
    click_to_open: float | None = Field(description="clicked / opened.")
    bounced: float | None
    unsubscribed: float | None
    spam_reported: float | None


class EmailCounts(BaseModel):
    sent: int = Field(description="Email actions sent in the period (status sent).")
    delivered: int = Field(description="Of them, emails with an email.delivered event.")
    opened: int = Field(
        description="Emails opened at least once (email.opened, or email.clicked: a click "
        "implies an open, as opened() conditions count it); each email once."
    )
    clicked: int = Field(description="Emails with at least one email.clicked.")
    bounced: int = Field(description="Emails with an email.bounced or email.dropped event.")
    unsubscribed: int = Field(
        description="Emails whose recipient unsubscribed from them (email.unsubscribed or "
        "email.group_unsubscribed naming the email)."
    )
    spam_reported: int = Field(description="Emails reported as spam (email.spam_reported).")

    @computed_field(description="Each count / sent, except click_to_open (clicked / opened).")  # type: ignore[prop-decorator]
    @property
    def rates(self) -> EmailRates:
        return EmailRates(
            delivered=rate(self.delivered, self.sent),
            opened=rate(self.opened, self.sent),
            clicked=rate(self.clicked, self.sent),
            click_to_open=rate(self.clicked, self.opened),
            bounced=rate(self.bounced, self.sent),
            unsubscribed=rate(self.unsubscribed, self.sent),
            spam_reported=rate(self.spam_reported, self.sent),
        )


class EmailStep(EmailCounts):
    workflow: str
    step: str


class Emails(BaseModel):
    computed_from: str
    steps: list[EmailStep] = Field(description="Per workflow step, by workflow and step.")
    total: EmailCounts
    unsubscribes_naming_no_email: int = Field(
        default=0,
        description="email.unsubscribed and email.group_unsubscribed events of the period "
        "(occurred_at) naming no email (the one-click link, the contacts API): counted in no "
        "step's unsubscribed.",
    )


# --- goals and A/B tests --------------------------------------------------------------------


class WorkflowGoals(BaseModel):
    workflow: str
    has_goal: bool | None = Field(
        description="Whether the workflow, as loaded now, has goals; null when it is not "
        "among the workflows loaded (removed or renamed since)."
    )
    entered: int = Field(description="Enrollments started in the period (re-entries count).")
    converted: int = Field(description="Of them, enrollments that reached a goal (so far).")
    running: int = Field(description="Of them, still running or waiting: may yet convert.")

    @computed_field(description="converted / entered.")  # type: ignore[prop-decorator]
    @property
    def conversion(self) -> float | None:
        return rate(self.converted, self.entered)


class VariantFigures(BaseModel):
    variant: str
    entered: int
    converted: int
    running: int
    conversion: float | None
    p_value: float | None = Field(
        description="Two-sided two-proportion z-test of this variant's conversion against "
        "the first variant's; null for the first, and when the samples are too small."
    )


class SplitTest(BaseModel):
    workflow: str
    split: str
    variants: list[VariantFigures] = Field(description="In name order; the first is the base.")
    verdict: str = Field(description="What the figures say, in plain words.")


class Goals(BaseModel):
    computed_from: str
    workflows: list[WorkflowGoals]
    ab_tests: list[SplitTest]


# --- NPS, retention, revenue ----------------------------------------------------------------


class Nps(BaseModel):
    computed_from: str
    answers: int = Field(description="nps.answered events with a score from 0 to 10.")
    promoters: int = Field(description="Scores 9-10.")
    passives: int = Field(description="Scores 7-8.")
    detractors: int = Field(description="Scores 0-6.")
    ignored: int = Field(description="nps.answered events without a usable score.")

    @computed_field(description="% promoters - % detractors, -100 to 100.")  # type: ignore[prop-decorator]
    @property
    def nps(self) -> float | None:
        if not self.answers:
            return None
        return round(100 * (self.promoters - self.detractors) / self.answers, 1)


class Retention(BaseModel):
    computed_from: str
    customers: int = Field(
        description="Contacts in a customer-journey stage at some time in the period: at "
        "its start, or entering one during it."
    )
    at_start: int = Field(description="Of them, in a customer stage when the period began.")
    new_customers: int = Field(
        description="Contacts who entered the customer journey in the period from outside "
        "it (the buyer journey, or created there)."
    )
    churned: int = Field(description="Customers who moved to an exit stage in the period.")
    reactivated: int = Field(description="Contacts who came back from an exit stage.")

    @computed_field(description="churned / customers.")  # type: ignore[prop-decorator]
    @property
    def churn_rate(self) -> float | None:
        return rate(self.churned, self.customers)


class RevenueLine(BaseModel):
    currency: str | None = Field(description="properties.currency as given; null when none.")
    orders: int
    revenue: float = Field(description="Sum of properties.total.")
    customers: int = Field(description="Distinct contacts with an order.")

    @computed_field(description="revenue / customers.")  # type: ignore[prop-decorator]
    @property
    def revenue_per_customer(self) -> float | None:
        return round(self.revenue / self.customers, 2) if self.customers else None


class Revenue(BaseModel):
    computed_from: str
    lines: list[RevenueLine] = Field(description="One per currency.")
    ignored_orders: int = Field(description="order.completed events without a numeric total.")


# --- the report -------------------------------------------------------------------------------


class Report(BaseModel):
    since: datetime | None = Field(description="The period's start (included); null: the start.")
    until: datetime | None = Field(description="Its end (excluded); null: now.")
    period: str = Field(description="The period in words.", examples=["since 2026-06-01 00:00 UTC"])
    generated_at: datetime
    empty: bool = Field(
        description="Nothing happened in the period: no stage change, email, enrollment, "
        "NPS answer or order."
    )
    funnel: Funnel
    emails: Emails
    goals: Goals
    nps: Nps
    retention: Retention
    revenue: Revenue
    notes: list[str] = Field(description="What to keep in mind reading these figures.")
