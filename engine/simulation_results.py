"""What a simulation found: each shard's counts read from its database as it ends
(``count_shard``, streaming, so memory does not grow with the simulated days), added up
across shards (``merge_shards``) into a ``SimulationResult``: funnel, emails per step, goals
per workflow and per A/B variant, stages per day. The funnel's rules are shared with the
reports of a live database (``engine.reports.funnel``)."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from engine.enrollments import LIVE
from engine.models import Action, Enrollment, StageTransition
from engine.registry import Registry
from engine.reports.funnel import FunnelRow, funnel_rows
from engine.runtime import Runtime

# --- results ------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    label: str
    contacts: int
    days: int
    seed: int
    events: int
    seconds: float
    funnel: list[FunnelRow]
    emails: dict[str, int]  # "workflow:step" -> sent
    goals: dict[str, tuple[int, int]]  # workflow -> (entered, converted)
    variants: dict[str, tuple[int, int]]  # "workflow:split=variant" -> (entered, converted)
    daily: list[dict[str, int]]  # per day: stage -> contacts
    stages: list[str]
    without_goal: frozenset[str] = frozenset()  # workflows with no goal: none can convert
    # workflow -> enrollments still running when the run ended (counted as not converted
    # in ``goals``: a short run understates conversion)
    running: dict[str, int] = field(default_factory=dict)
    # "workflow:step" -> (actions that failed, the first one's error): a template or step
    # that raised. Its emails are missing from ``emails``; a run with any is not one to trust.
    failed: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The workflows run (empty: not known), so that a comparison tells a workflow one side
    # lacks from one nobody entered.
    workflows: frozenset[str] = frozenset()


# --- the report -------------------------------------------------------------------------------


@dataclass
class ShardPart:
    """What one shard found, in a form shards add up from (and a process can return)."""

    events: int
    furthest: Counter[int]  # furthest stage rank (journey order) -> contacts
    exits: Counter[str]  # exit stage (churned) -> contacts who reached it
    durations: dict[str, list[float]]  # stage -> days spent there, per completed stay
    emails: Counter[str]  # "workflow:step" -> sent
    goals: dict[str, list[int]]  # workflow -> [entered, converted]
    variants: dict[str, list[int]]  # "workflow:split=variant" -> [entered, converted]
    daily: list[Counter[str]]
    running: Counter[str] = field(default_factory=Counter)  # workflow -> still running
    failed: dict[str, list[Any]] = field(default_factory=dict)  # key -> [count, first error]


def count_shard(
    runtime: Runtime, registry: Registry, events: int, daily: list[Counter[str]]
) -> ShardPart:
    """Add up a finished shard, streaming its rows (a contact's path at a time), so the peak
    memory of the report does not grow with the days simulated."""
    stages = list(registry.journey.stage_names)
    order = {stage: i for i, stage in enumerate(stages)}
    exit_stages = {s.name for s in registry.journey.stages if s.journey == "exit"}
    durations: dict[str, list[float]] = defaultdict(list)
    furthest: Counter[int] = Counter()
    exits: Counter[str] = Counter()
    goals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    running: Counter[str] = Counter()
    variants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    emails: Counter[str] = Counter()

    def add_path(path: list[tuple[str, datetime]]) -> None:
        for (stage, entered), (_next, left) in itertools.pairwise(path):
            durations[stage].append((left - entered).total_seconds() / 86400)
        # A funnel counts a contact at every stage up to the furthest they reached: skipping
        # consideration on the way to a trial still passed through it, as funnels are read.
        ranks = [order[stage] for stage, _ in path if stage not in exit_stages]
        if ranks:
            furthest[max(ranks)] += 1
        exits.update({stage for stage, _ in path if stage in exit_stages})

    streamed = {"yield_per": 2000}
    with Session(runtime.db) as session:
        moves = session.execute(
            select(StageTransition.contact_id, StageTransition.to_stage, StageTransition.at)
            .order_by(
                col(StageTransition.contact_id), col(StageTransition.at), col(StageTransition.id)
            )
            .execution_options(**streamed)
        )
        current: int | None = None
        path: list[tuple[str, datetime]] = []
        for contact_id, stage, at in moves:
            if contact_id != current and path:
                add_path(path)
                path = []
            current = contact_id
            path.append((stage, at))
        if path:
            add_path(path)
        enrollments = session.execute(
            select(
                Enrollment.workflow, Enrollment.status, Enrollment.context, Enrollment.entry
            ).execution_options(**streamed)
        )
        for workflow, status, context, entry in enrollments:
            goals[workflow][0] += 1
            goals[workflow][1] += status == "converted"
            if status in LIVE:
                running[workflow] += 1
            if entry != 1:  # A/B: each contact once, as the live report counts her
                continue
            for split_id, variant in (context.get("variants") or {}).items():
                key = f"{workflow}:{split_id}={variant}"
                variants[key][0] += 1
                variants[key][1] += status == "converted"
        sent = session.execute(
            select(Action.reason)
            .where(Action.kind == "email", Action.status == "sent")
            .execution_options(**streamed)
        )
        for (reason,) in sent:
            emails[f"{reason.get('workflow')}:{reason.get('step')}"] += 1
        failed: dict[str, list[Any]] = {}
        for reason, error in session.execute(
            select(Action.reason, Action.error)
            .where(Action.status == "failed")
            .order_by(col(Action.id))
            .execution_options(**streamed)
        ):
            key = f"{reason.get('workflow')}:{reason.get('step')}"
            failed.setdefault(key, [0, error or ""])[0] += 1
    return ShardPart(
        events=events,
        furthest=furthest,
        exits=exits,
        durations=dict(durations),
        emails=emails,
        goals=dict(goals),
        variants=dict(variants),
        daily=daily,
        running=running,
        failed=failed,
    )


def merge_shards(
    parts: list[ShardPart],
    registry: Registry,
    label: str,
    contacts: int,
    days: int,
    seed: int,
    seconds: float,
) -> SimulationResult:
    stages = list(registry.journey.stage_names)
    exit_stages = {s.name for s in registry.journey.stages if s.journey == "exit"}
    furthest: Counter[int] = Counter()
    exits: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    emails: Counter[str] = Counter()
    goals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    variants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    daily: list[Counter[str]] = [Counter() for _ in range(days)]
    running: Counter[str] = Counter()
    failed: dict[str, tuple[int, str]] = {}
    for part in parts:
        for key, (count, error) in part.failed.items():
            before, first = failed.get(key, (0, error))
            failed[key] = (before + count, first)
        furthest.update(part.furthest)
        exits.update(part.exits)
        for stage, spans in part.durations.items():
            durations[stage].extend(spans)
        emails.update(part.emails)
        running.update(part.running)
        for into, found in ((goals, part.goals), (variants, part.variants)):
            for key, (entered, converted) in found.items():
                into[key][0] += entered
                into[key][1] += converted
        for total, today in zip(daily, part.daily, strict=True):
            total.update(today)
    medians = {stage: statistics.median(spans) for stage, spans in durations.items() if spans}
    funnel = funnel_rows(stages, exit_stages, furthest, exits, medians)
    return SimulationResult(
        label=label,
        contacts=contacts,
        days=days,
        seed=seed,
        events=sum(p.events for p in parts),
        seconds=seconds,
        funnel=funnel,
        emails=dict(sorted(emails.items())),
        goals={k: (v[0], v[1]) for k, v in sorted(goals.items())},
        variants={k: (v[0], v[1]) for k, v in sorted(variants.items())},
        daily=[dict(d) for d in daily],
        stages=stages,
        without_goal=frozenset(n for n, w in registry.workflows.items() if not w.goals),
        running=dict(sorted(running.items())),
        failed=dict(sorted(failed.items())),
        workflows=frozenset(registry.workflows),
    )
