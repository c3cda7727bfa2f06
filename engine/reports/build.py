"""``build_report``: every section of a report, read from one session over one period."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from engine.registry import Registry
from engine.reports.emails import email_figures
from engine.reports.figures import Emails, Report
from engine.reports.funnel import stage_figures
from engine.reports.goals import goal_figures
from engine.reports.nps import nps_figures
from engine.reports.period import Period
from engine.reports.retention import retention_figures
from engine.reports.revenue import revenue_figures


def build_report(
    session: Session,
    registry: Registry,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime,
) -> Report:
    """The report of ``since`` (included) to ``until`` (excluded), UTC, either open, from
    the tables ``session`` reads; ``registry`` gives the journey's stages in order and which
    workflows have goals. Reads with SQL aggregates, and streams the one walk it needs
    (medians), so memory does not grow with the number of contacts. Give it a session of
    ``reading``: one snapshot for every section."""
    period = Period(since, until)
    funnel = stage_figures(session, registry.journey, period)
    emails = email_figures(session, period)
    goals = goal_figures(session, registry.workflows, period)
    nps = nps_figures(session, period)
    retention = retention_figures(session, registry.journey, period)
    revenue = revenue_figures(session, period)
    empty = not (
        any(s.entered for s in funnel.stages)
        or emails.total.sent
        or goals.workflows
        or nps.answers + nps.ignored
        or revenue.lines
        or revenue.ignored_orders
    )
    return Report(
        since=since,
        until=until,
        period=period.describe(),
        generated_at=now,
        empty=empty,
        funnel=funnel,
        emails=emails,
        goals=goals,
        nps=nps,
        retention=retention,
        revenue=revenue,
        notes=_notes(emails, empty=empty, period=period),
    )


def _notes(emails: Emails, *, empty: bool, period: Period) -> list[str]:
    if empty:
        return [f"no data in this period ({period.describe()})"]
    notes = []
    total = emails.total
    if total.sent and not total.delivered:
        notes.append(
            "no delivery reports (email.delivered) name these emails: the email connector or "
            "the provider's webhook does not send them, so delivered reads 0"
        )
    if total.sent and not total.opened:
        silent = not (total.bounced or total.unsubscribed or total.spam_reported)
        notes.append(
            "no opens or clicks name these emails: without the provider's event webhook "
            '(SendGrid\'s, see README "Webhooks") opened and clicked read 0'
            + (
                ", and so do bounced, unsubscribed and spam, which come the same way: 0% there "
                "means not reported, not none"
                if silent
                else ""
            )
        )
    if emails.unsubscribes_naming_no_email:
        notes.append(
            f"{emails.unsubscribes_naming_no_email} unsubscribe(s) in the period name no "
            "email (the one-click link, the contacts API): they are in no step's unsubscribed "
            "figure"
        )
    return notes


@contextmanager
def reading(db: Engine) -> Iterator[Session]:
    """A session for a report. On PostgreSQL its queries share one snapshot (REPEATABLE
    READ, read only), so the sections agree with each other while events keep arriving,
    and aggregate by sorting: a hash aggregation of a million contacts that outgrows
    ``work_mem`` was seen to spill for minutes on PostgreSQL 15, where sorting takes a
    second."""
    with Session(db) as session:
        if db.dialect.name == "postgresql":
            session.connection(
                execution_options={
                    "isolation_level": "REPEATABLE READ",
                    "postgresql_readonly": True,
                }
            )
            session.execute(text("SET LOCAL enable_hashagg = off"))
        yield session
