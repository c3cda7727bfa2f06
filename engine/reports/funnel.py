"""The funnel: contacts reaching each stage, conversion from the stage before, time in stage.

``funnel_rows`` holds the rules, shared with the simulator (``engine.simulation_results``):
a contact counts at every stage up to the furthest one they reached, even one they skipped,
so the funnel only narrows; exit stages (churned) are counted apart, with no conversion.
``stage_figures`` applies them to the live tables over a period: stage transitions in it,
furthest stage per contact by ``GROUP BY``, and medians of the stays that ended in it, each
stay's length computed in SQL and the sorted lengths streamed once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, func, select
from sqlmodel import Session, col

from engine.db import UTCDateTime
from engine.models import StageTransition
from engine.reports.figures import Funnel, StageFigures
from engine.reports.period import Period
from engine.reports.sql import STREAM, days_between
from engine.stages import Journey

COMPUTED_FROM = (
    "stage_transitions whose time falls in the period. reached: a contact counts at every "
    "stage up to the furthest they entered in the period, even one they skipped or passed "
    "before the period (a contact created or imported straight into a later stage counts "
    "at every stage before it too), and going back a stage does not undo it; conversion: "
    "reached / reached of the stage before; median days: stays in the stage that ended in "
    "the period (entered whenever, left in it): contacts still in the stage are not in it"
)


_MS_A_DAY = 86_400_000


@dataclass
class FunnelRow:
    stage: str
    reached: int
    conversion: float | None  # reached / reached of the stage before, in journey order
    median_days_in_stage: float | None


def funnel_rows(
    stages: Sequence[str],
    exit_stages: Collection[str],
    furthest: Mapping[int, int],
    exits: Mapping[str, int],
    medians: Mapping[str, float | None],
) -> list[FunnelRow]:
    """The funnel in journey order, from how many contacts got furthest to each stage
    (``furthest``: its index in ``stages`` -> contacts) and how many reached each exit."""
    order = {stage: i for i, stage in enumerate(stages)}
    rows = []
    previous: int | None = None
    for stage in stages:
        if stage in exit_stages:
            rows.append(FunnelRow(stage, exits.get(stage, 0), None, None))
            continue
        count = sum(n for rank, n in furthest.items() if rank >= order[stage])
        conversion = (count / previous) if previous else None
        rows.append(FunnelRow(stage, count, conversion, medians.get(stage)))
        previous = count
    return rows


def stage_figures(session: Session, journey: Journey, period: Period) -> Funnel:
    stages = list(journey.stage_names)
    kinds = {s.name: s.journey for s in journey.stages}
    exit_stages = {s.name for s in journey.stages if s.journey == "exit"}
    furthest = _furthest(session, stages, exit_stages, period)
    entered = _entered(session, period)
    stays, medians = _medians(session, period)
    rows = funnel_rows(
        stages,
        exit_stages,
        furthest,
        {s: entered.get(s, 0) for s in exit_stages},
        {s: m for s, m in medians.items() if s not in exit_stages},
    )
    figures = [
        StageFigures(
            stage=row.stage,
            journey=kinds[row.stage],
            entered=entered.get(row.stage, 0),
            reached=row.reached,
            conversion=None if row.conversion is None else round(row.conversion, 4),
            median_days_in_stage=(
                None if row.median_days_in_stage is None else round(row.median_days_in_stage, 3)
            ),
            stays_ended=0 if row.stage in exit_stages else stays.get(row.stage, 0),
        )
        for row in rows
    ]
    return Funnel(computed_from=COMPUTED_FROM, stages=figures)


def _furthest(
    session: Session, stages: list[str], exit_stages: set[str], period: Period
) -> Counter[int]:
    """Furthest stage index entered in the period -> contacts (exit stages left out)."""
    rank = case(
        {stage: i for i, stage in enumerate(stages) if stage not in exit_stages},
        value=col(StageTransition.to_stage),
        else_=None,
    )
    per_contact = (
        select(col(StageTransition.contact_id), func.max(rank).label("furthest"))
        .where(*period.holds(col(StageTransition.at)))
        .group_by(col(StageTransition.contact_id))
        .subquery()
    )
    rows = session.execute(
        select(per_contact.c.furthest, func.count())
        .where(per_contact.c.furthest.is_not(None))
        .group_by(per_contact.c.furthest)
    )
    return Counter({int(furthest): int(n) for furthest, n in rows})


def _entered(session: Session, period: Period) -> dict[str, int]:
    rows = session.execute(
        select(col(StageTransition.to_stage), func.count(func.distinct(StageTransition.contact_id)))
        .where(*period.holds(col(StageTransition.at)))
        .group_by(col(StageTransition.to_stage))
    )
    return {stage: int(n) for stage, n in rows}


def _medians(session: Session, period: Period) -> tuple[dict[str, int], dict[str, float]]:
    """Per stage: how many stays ended in the period, and their median length in days.

    A stay is a transition into the stage and the contact's next transition (``LEAD``
    over their transitions in time order): the stays are sorted by the database and
    streamed once, keeping only the middle one or two values of each stage."""
    left = (
        func.lead(StageTransition.at, type_=UTCDateTime())
        .over(
            partition_by=col(StageTransition.contact_id),
            order_by=(col(StageTransition.at), col(StageTransition.id)),
        )
        .label("left_at")
    )
    # Only the contacts who moved in the period can have a stay end in it.
    movers: list[ColumnElement[bool]] = []
    if period.bounded:
        moved = select(col(StageTransition.contact_id)).where(
            *period.holds(col(StageTransition.at))
        )
        movers.append(col(StageTransition.contact_id).in_(moved))
    history = (
        select(
            col(StageTransition.to_stage).label("stage"),
            col(StageTransition.at).label("entered_at"),
            left,
        )
        .where(*movers)
        .subquery()
    )
    stays = (
        select(
            history.c.stage,
            days_between(session, history.c.entered_at, history.c.left_at).label("days"),
        )
        .where(history.c.left_at.is_not(None), *period.holds(history.c.left_at))
        .subquery()
    )
    counts = {
        stage: int(n)
        for stage, n in session.execute(select(stays.c.stage, func.count()).group_by(stays.c.stage))
    }
    middles: dict[str, list[float]] = {}
    position = 0
    current: str | None = None
    ordered = session.execute(
        select(stays.c.stage, stays.c.days)
        .order_by(stays.c.stage, stays.c.days)
        .execution_options(**STREAM)
    )
    for stage, days in ordered:
        if stage != current:
            current, position = stage, 0
        n = counts.get(stage, 0)
        if position in ((n - 1) // 2, n // 2):
            # In whole milliseconds (SQLite's julianday keeps no finer), so both databases
            # give one median: SQLite's 5 d 1 h reads 5.041666666511, PostgreSQL's
            # 5.041666666667, and their mean with 5 d 8 h rounded to 5.187 against 5.188.
            middles.setdefault(stage, []).append(round(float(days) * _MS_A_DAY) / _MS_A_DAY)
        position += 1
    medians = {
        stage: round(sum(values) * _MS_A_DAY / len(values)) / _MS_A_DAY
        for stage, values in middles.items()
    }
    return counts, medians
