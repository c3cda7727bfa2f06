"""Revenue and revenue per customer from the ``order.completed`` events of the period.

Each order's ``total`` (a number, as the playbook's sources and the simulator send it) is
added up per ``currency`` (its ``currency`` property as given; none given is a line of its
own), never across currencies. Revenue per customer is the period's revenue over the
contacts who ordered in it: over the whole history (no ``since``) that is lifetime revenue
per paying customer, the usual first estimate of CLV; over a month, a month's worth.
Orders whose total is missing or not a number are counted as ignored.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlmodel import Session, col

from engine.models import Event
from engine.reports.figures import Revenue, RevenueLine
from engine.reports.period import Period
from engine.reports.sql import is_json_number

EVENT = "order.completed"
COMPUTED_FROM = (
    "order.completed events in the period (occurred_at): revenue = sum of properties.total "
    "per properties.currency; customers = distinct contacts with an order; revenue per "
    "customer = revenue / customers (lifetime value to date when the period is everything)"
)


def revenue_figures(session: Session, period: Period) -> Revenue:
    orders = (
        select(
            col(Event.contact_id).label("contact_id"),
            col(Event.properties)["currency"].as_string().label("currency"),
            col(Event.properties)["total"].as_string().label("total"),
            is_json_number(session, col(Event.properties), "total").label("number"),
        )
        .where(col(Event.type) == EVENT, *period.holds(col(Event.occurred_at)))
        .subquery()
    )
    revenue: dict[str | None, Decimal] = defaultdict(Decimal)
    count: dict[str | None, int] = defaultdict(int)
    ignored = 0
    # Grouped on the total's text: the sum is exact (decimal), and a total no database
    # cast could read is counted as ignored instead of failing the whole report.
    for currency, total, number, n in session.execute(
        select(orders.c.currency, orders.c.total, orders.c.number, func.count()).group_by(
            orders.c.currency, orders.c.total, orders.c.number
        )
    ):
        amount = _amount(total) if number else None
        if amount is None:
            ignored += int(n)
            continue
        revenue[currency] += amount * int(n)
        count[currency] += int(n)
    customers = {
        currency: int(n)
        for currency, n in session.execute(
            select(orders.c.currency, func.count(func.distinct(orders.c.contact_id)))
            .where(orders.c.number)
            .group_by(orders.c.currency)
        )
    }
    lines = [
        RevenueLine(
            currency=currency,
            orders=count[currency],
            revenue=float(revenue[currency]),
            customers=customers.get(currency, 0),
        )
        for currency in sorted(count, key=lambda c: (c is None, c or ""))
    ]
    return Revenue(computed_from=COMPUTED_FROM, lines=lines, ignored_orders=ignored)


def _amount(text: object) -> Decimal | None:
    try:
        amount = Decimal(str(text))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None
