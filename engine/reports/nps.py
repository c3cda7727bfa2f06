"""NPS from the ``nps.answered`` events of the period: each answer's ``score``.

Promoters score 9-10, passives 7-8, detractors 0-6; NPS is % promoters - % detractors.
Every answer counts (a contact who answered twice in the period counts twice). A score
counts when it is a number, as the event rules read it, and a whole one from 0 to 10 (``9``
or ``9.0``); a missing one, text, a fraction or a value outside 0-10 is counted as ignored,
not guessed at.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session, col

from engine.models import Event
from engine.reports.figures import Nps
from engine.reports.period import Period
from engine.reports.sql import is_json_number

EVENT = "nps.answered"
COMPUTED_FROM = (
    "nps.answered events in the period (occurred_at), properties.score: promoters 9-10, "
    "passives 7-8, detractors 0-6; NPS = % promoters - % detractors; each answer counts (a "
    "contact who answered twice in the period counts twice); a score that is not a whole "
    "number from 0 to 10 is ignored"
)


def nps_figures(session: Session, period: Period) -> Nps:
    answers = (
        select(
            col(Event.properties)["score"].as_string().label("score"),
            is_json_number(session, col(Event.properties), "score").label("number"),
        )
        .where(col(Event.type) == EVENT, *period.holds(col(Event.occurred_at)))
        .subquery()
    )
    counts = {"promoters": 0, "passives": 0, "detractors": 0, "ignored": 0}
    for score, number, n in session.execute(
        select(answers.c.score, answers.c.number, func.count()).group_by(
            answers.c.score, answers.c.number
        )
    ):
        counts[_kind(score) if number else "ignored"] += int(n)
    answered = counts["promoters"] + counts["passives"] + counts["detractors"]
    return Nps(computed_from=COMPUTED_FROM, answers=answered, **counts)


def _kind(text: object) -> str:
    try:
        score = float(str(text))
    except ValueError:
        return "ignored"
    if not 0 <= score <= 10 or not score.is_integer():
        return "ignored"
    if score >= 9:
        return "promoters"
    return "passives" if score >= 7 else "detractors"
