"""Goals per workflow and per A/B variant: enrollments started in the period, how many
reached a goal, and for the variants of one split whether their difference could be chance.

An enrollment counts in the period it started in, with what became of it so far: one that
converts next week counts as converted in this period's report then. Variants are the ones
drawn for the enrollment (``context["variants"]``: split id -> variant).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import func, select
from sqlmodel import Session, col

from engine.models import Enrollment, EnrollmentStatus
from engine.reports.figures import Goals, SplitTest, VariantFigures, WorkflowGoals, rate
from engine.reports.period import Period
from engine.reports.significance import (
    MIN_EXPECTED,
    SIGNIFICANT,
    p_text,
    two_proportion_p_value,
)
from engine.reports.terminal import pct
from engine.workflow import Workflow

COMPUTED_FROM = (
    "enrollments started in the period: entered = enrollments (re-entries count), "
    "converted = those that reached a goal so far, running = those still active or waiting; "
    "conversion = converted / entered, the running ones counted as not converted (yet); "
    "A/B: each contact once, by her first enrollment in the period (a contact who re-enters "
    "draws the same variant: her entries are not so many people), with its drawn variant; "
    "p-values from a two-sided, pooled "
    "two-proportion z-test of each variant against the first in name order, none (too few) "
    f"under {MIN_EXPECTED} expected conversions or non-conversions in a variant"
)
RUNNING = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)


def goal_figures(session: Session, workflows: Mapping[str, Workflow], period: Period) -> Goals:
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # entered, converted, running
    for workflow, status, n in session.execute(
        select(col(Enrollment.workflow), col(Enrollment.status), func.count())
        .where(*period.holds(col(Enrollment.started_at)))
        .group_by(col(Enrollment.workflow), col(Enrollment.status))
    ):
        _add(tally[workflow], status, int(n))
    rows = [
        WorkflowGoals(
            workflow=name,
            has_goal=bool(workflows[name].goals) if name in workflows else None,
            entered=entered,
            converted=converted,
            running=running,
        )
        for name, (entered, converted, running) in sorted(tally.items())
    ]
    return Goals(
        computed_from=COMPUTED_FROM,
        workflows=rows,
        ab_tests=_split_tests(session, workflows, period),
    )


def _add(into: list[int], status: str, n: int) -> None:
    into[0] += n
    into[1] += n if status == EnrollmentStatus.CONVERTED else 0
    into[2] += n if status in RUNNING else 0


def _split_tests(
    session: Session, workflows: Mapping[str, Workflow], period: Period
) -> list[SplitTest]:
    # A contact is the unit: one who re-enters draws the same variant again, and counting
    # her entries as so many people would make the test look surer than it is. Each
    # contact's first entry of the period counts. Grouped on the variants' JSON text: few
    # distinct values per workflow, parsed here.
    first_entries = (
        select(func.min(col(Enrollment.id)))
        .where(*period.holds(col(Enrollment.started_at)))
        .group_by(col(Enrollment.contact_id), col(Enrollment.workflow))
    )
    drawn = (
        select(
            col(Enrollment.workflow).label("workflow"),
            col(Enrollment.status).label("status"),
            col(Enrollment.context)["variants"].as_string().label("variants"),
        )
        .where(col(Enrollment.id).in_(first_entries))
        .subquery()
    )
    tally: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0])
    )
    for workflow, status, variants, n in session.execute(
        select(drawn.c.workflow, drawn.c.status, drawn.c.variants, func.count())
        .where(drawn.c.variants.is_not(None))
        .group_by(drawn.c.workflow, drawn.c.status, drawn.c.variants)
    ):
        try:
            chosen = json.loads(variants)
        except ValueError:
            continue
        if not isinstance(chosen, dict):
            continue
        for split, variant in chosen.items():
            _add(tally[(workflow, str(split))][str(variant)], status, int(n))
    tests = []
    for (workflow, split), by_variant in sorted(tally.items()):
        names = sorted(by_variant)
        base = by_variant[names[0]]
        variants = [
            VariantFigures(
                variant=name,
                entered=entered,
                converted=converted,
                running=running,
                conversion=rate(converted, entered),
                # Not rounded: 0.04996 rounded to 0.05 would be called chance (and read so
                # by a script comparing the JSON with 0.05) though it is under 0.05.
                p_value=(
                    None if i == 0 else two_proportion_p_value(base[1], base[0], converted, entered)
                ),
            )
            for i, (name, (entered, converted, running)) in enumerate(
                (name, by_variant[name]) for name in names
            )
        ]
        has_goal = bool(workflows[workflow].goals) if workflow in workflows else None
        tests.append(
            SplitTest(
                workflow=workflow,
                split=split,
                variants=variants,
                verdict=verdict(variants, has_goal=has_goal),
            )
        )
    return tests


def verdict(variants: list[VariantFigures], *, has_goal: bool | None) -> str:
    """What the variants' figures say, in plain words."""
    if has_goal is False:
        return "no goal: the workflow has nothing to convert to, so nothing to compare"
    if len(variants) < 2:
        only = variants[0].variant if variants else "?"
        return f"only variant {only} was drawn in the period: nothing to compare"
    base = variants[0]
    said = []
    for other in variants[1:]:
        figures = (
            f"{other.variant} {pct(other.conversion)} vs {base.variant} {pct(base.conversion)}"
        )
        if other.p_value is None:
            said.append(
                f"{figures}: too few to tell (the test needs at least {MIN_EXPECTED} "
                "conversions and as many non-conversions expected in each variant)"
            )
        elif other.p_value < SIGNIFICANT:
            said.append(
                f"{figures}: p {_p(other.p_value)}, a difference this large is unlikely "
                "to be chance (p < 0.05)"
            )
        else:
            said.append(f"{figures}: p {_p(other.p_value)}, could well be chance")
    if len(variants) > 2:
        said.append(
            f"each variant is set against {base.variant} on its own, with no correction for "
            f"making {len(variants) - 1} comparisons: one p < 0.05 among them is likelier to "
            "be chance than its p says"
        )
    running = sum(v.running for v in variants)
    if running:
        said.append(f"{running} enrollment(s) still running may yet convert")
    return "; ".join(said)


def _p(value: float) -> str:
    text = p_text(value)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"
