"""Email performance per workflow step: sent, delivered, opened, clicked, bounced,
unsubscribed, reported as spam.

The emails are the ``email`` actions sent in the period (``completed_at``), each named by
its ``reason``'s workflow and step. What became of each is read from the engagement events
that name it (``properties.action_id``: SendGrid's ``jl_action_id`` custom argument, or
any other source that says which email it is about), recorded whenever, so an email sent
on the period's last day still gets its opens. Every figure counts emails, not events: ten
opens of one email are one opened email.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import String, and_, case, cast, func, select
from sqlmodel import Session, col

from engine.models import Action, ActionStatus, Event
from engine.reports.figures import EmailCounts, Emails, EmailStep
from engine.reports.period import Period

COMPUTED_FROM = (
    "email actions sent in the period (status sent, by completed_at), per reason.workflow "
    "and reason.step; what became of each from the email.* events naming it in "
    "properties.action_id, whenever recorded. Each figure counts emails, not events: an "
    "email opened five times, or an event the provider reported twice, counts once (unique "
    "opens and clicks; total opens are not shown); a click counts as an open too; "
    "delivered: an email.delivered event; bounced: email.bounced (hard or blocked) or "
    "email.dropped; unsubscribed: email.unsubscribed or email.group_unsubscribed naming the "
    "email (one naming no email, as the one-click link's, counts in no step); opens include "
    "those of mail clients that open every email (Apple Mail Privacy Protection). Rates are "
    "of emails sent"
)

METRICS = {
    "email.delivered": "delivered",
    "email.clicked": "clicked",
    "email.bounced": "bounced",
    "email.dropped": "bounced",
    "email.unsubscribed": "unsubscribed",
    "email.group_unsubscribed": "unsubscribed",
    "email.spam_reported": "spam_reported",
}
"""Engagement event type -> the figure it counts towards (``opened`` is counted apart)."""
OPENED = ("email.opened", "email.clicked")  # a click implies an open
UNSUBSCRIBES = [t for t, metric in METRICS.items() if metric == "unsubscribed"]
NO_WORKFLOW = "(none)"


def email_figures(session: Session, period: Period) -> Emails:
    sent = (
        select(
            col(Action.id).label("id"),
            col(Action.contact_id).label("contact_id"),
            col(Action.reason)["workflow"].as_string().label("workflow"),
            col(Action.reason)["step"].as_string().label("step"),
        )
        .where(
            col(Action.kind) == "email",
            col(Action.status) == ActionStatus.SENT,
            *period.holds(col(Action.completed_at)),
        )
        .subquery()
    )
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for workflow, step, n in session.execute(
        select(sent.c.workflow, sent.c.step, func.count()).group_by(sent.c.workflow, sent.c.step)
    ):
        counts[(workflow or NO_WORKFLOW, step or "")]["sent"] = int(n)

    # Each email joined to the events naming it: the contact's email events (the index on
    # contact and type finds them), whose action_id is the email's id as text (SendGrid's
    # custom argument is a string; other sources may give a number, which matches too).
    engagement = (
        select(
            sent.c.workflow,
            sent.c.step,
            sent.c.id.label("action_id"),
            case(METRICS, value=col(Event.type), else_="opened").label("metric"),
            col(Event.type).in_(OPENED).label("opens"),
        )
        .join(
            Event,
            and_(
                col(Event.contact_id) == sent.c.contact_id,
                col(Event.type).in_([*METRICS, *OPENED]),
                col(Event.properties)["action_id"].as_string() == cast(sent.c.id, String),
            ),
        )
        .subquery()
    )
    by_metric = select(
        engagement.c.workflow,
        engagement.c.step,
        engagement.c.metric,
        func.count(func.distinct(engagement.c.action_id)),
    ).group_by(engagement.c.workflow, engagement.c.step, engagement.c.metric)
    for workflow, step, metric, n in session.execute(by_metric):
        if metric != "opened":
            counts[(workflow or NO_WORKFLOW, step or "")][metric] = int(n)
    opened = (
        select(
            engagement.c.workflow,
            engagement.c.step,
            func.count(func.distinct(engagement.c.action_id)),
        )
        .where(engagement.c.opens)
        .group_by(engagement.c.workflow, engagement.c.step)
    )
    for workflow, step, n in session.execute(opened):
        counts[(workflow or NO_WORKFLOW, step or "")]["opened"] = int(n)

    steps = [
        EmailStep(workflow=workflow, step=step, **_counts(found))
        for (workflow, step), found in sorted(counts.items())
    ]
    total = EmailCounts(**{name: sum(getattr(s, name) for s in steps) for name in _FIELDS})
    return Emails(
        computed_from=COMPUTED_FROM,
        steps=steps,
        total=total,
        unsubscribes_naming_no_email=_unsubscribes_naming_no_email(session, period),
    )


def _unsubscribes_naming_no_email(session: Session, period: Period) -> int:
    """Unsubscribe events of the period that name no email (the one-click link, the
    contacts API, the CLI): no step's unsubscribed figure holds them."""
    found = session.execute(
        select(func.count()).where(
            col(Event.type).in_(UNSUBSCRIBES),
            col(Event.properties)["action_id"].as_string().is_(None),
            *period.holds(col(Event.occurred_at)),
        )
    )
    return int(found.scalar_one())


_FIELDS = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "unsubscribed",
    "spam_reported",
)


def _counts(found: dict[str, int]) -> dict[str, int]:
    return {name: found.get(name, 0) for name in _FIELDS}
