"""Retention and churn: who was a customer in the period, and how many of them churned.

A customer is a contact in a customer-journey stage (onboarding onwards, in the default
journey). The customers of a period are those in such a stage at some time in it: in one
when it began (their last stage change before ``since`` led there) or entering one during
it. Churned are the customers who moved from a customer stage to an exit stage (churned) in
the period; the churn rate is churned / customers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CompoundSelect, Select, func, select, union_all
from sqlmodel import Session, col

from engine.models import StageTransition
from engine.reports.figures import Retention
from engine.reports.period import Period
from engine.stages import Journey

COMPUTED_FROM = (
    "stage_transitions: customers = contacts in a customer-journey stage at some time in the "
    "period (at its start, by their last stage change before it, or entering one in it); "
    "new = those entering a customer stage in it from outside the customer journey (a buyer "
    "stage, or created or imported straight into it); churned = those moving from a "
    "customer stage to an exit stage in it (even if they came back); came back = those "
    "moving from an exit stage to a customer stage in it; churn rate = churned / customers"
)


def retention_figures(session: Session, journey: Journey, period: Period) -> Retention:
    customer = [s.name for s in journey.stages if s.journey == "customer"]
    exits = [s.name for s in journey.stages if s.journey == "exit"]
    moves = period.holds(col(StageTransition.at))
    entering: Select[Any] = select(col(StageTransition.contact_id).label("contact_id")).where(
        *moves, col(StageTransition.to_stage).in_(customer)
    )
    at_start = _at_start(customer, period)
    every = entering if at_start is None else union_all(entering, at_start)

    # COUNT(DISTINCT) rather than DISTINCT in a subquery: it sorts, where PostgreSQL 15
    # would hash a million contacts and, short of work_mem, could spill for minutes.
    def contacts(query: Select[Any] | CompoundSelect) -> int:
        rows = query.subquery()
        found = session.execute(select(func.count(func.distinct(rows.c.contact_id))))
        return int(found.scalar_one())

    def contacts_moving(sources: list[str], dests: list[str]) -> int:
        return contacts(
            select(col(StageTransition.contact_id).label("contact_id")).where(
                *moves,
                col(StageTransition.from_stage).in_(sources),
                col(StageTransition.to_stage).in_(dests),
            )
        )

    outside = [s.name for s in journey.stages if s.journey not in ("customer", "exit")] + [""]
    return Retention(
        computed_from=COMPUTED_FROM,
        customers=contacts(every),
        at_start=0 if at_start is None else contacts(at_start),
        new_customers=contacts_moving(outside, customer),
        churned=contacts_moving(customer, exits),
        reactivated=contacts_moving(exits, customer),
    )


def _at_start(customer: list[str], period: Period) -> Select[Any] | None:
    """The contacts in a customer stage when the period began: those whose last stage
    change before it (latest time, then latest id) led into one."""
    if period.since is None:
        return None
    ranked = (
        select(
            col(StageTransition.contact_id).label("contact_id"),
            col(StageTransition.to_stage).label("stage"),
            func.row_number()
            .over(
                partition_by=col(StageTransition.contact_id),
                order_by=(col(StageTransition.at).desc(), col(StageTransition.id).desc()),
            )
            .label("latest"),
        )
        .where(col(StageTransition.at) < period.since)
        .subquery()
    )
    return select(ranked.c.contact_id).where(ranked.c.latest == 1, ranked.c.stage.in_(customer))
