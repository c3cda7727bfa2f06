"""Moving in-flight enrollments from an older workflow version to the current one.

Enrollments finish on the version they started with unless an operator moves them. A move
maps each enrollment's position by *step id*: the step it would run next (or the
``wait_for_event`` it is waiting in) must exist in the new version, or the enrollment is
refused and stays where it is. Steps it already passed are never run again: it continues
from the same step id, not from the top.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from engine.executor import LIVE, workflow_for
from engine.models import Enrollment
from engine.registry import Registry

END = "(end)"


@dataclass
class MigrationPlan:
    workflow: str
    target_version: str
    moves: list[tuple[int, int]] = field(default_factory=list)  # (enrollment id, new position)
    landing: Counter[str] = field(default_factory=Counter)  # step id -> count
    refused: Counter[str] = field(default_factory=Counter)  # "version@step" -> count

    @property
    def movable(self) -> int:
        return len(self.moves)


def plan_migration(session: Session, registry: Registry, name: str) -> MigrationPlan:
    current = registry.workflows.get(name)
    if current is None:
        raise KeyError(f"no workflow named {name!r}; known: {sorted(registry.workflows)}")
    plan = MigrationPlan(name, current.version)
    new_index = {node.id: i for i, node in enumerate(current.program)}
    rows = session.exec(
        select(Enrollment).where(
            Enrollment.workflow == name,
            col(Enrollment.status).in_(LIVE),
            Enrollment.version != current.version,
        )
    ).all()
    for enrollment in rows:
        old = workflow_for(session, registry, name, enrollment.version)
        if old is None:
            plan.refused[f"{enrollment.version}@(unknown version)"] += 1
            continue
        if enrollment.position >= len(old.program):
            plan.moves.append((enrollment.id, len(current.program)))  # type: ignore[arg-type]
            plan.landing[END] += 1
            continue
        step_id = old.program[enrollment.position].id
        if step_id not in new_index:
            plan.refused[f"{enrollment.version}@{step_id}"] += 1
            continue
        plan.moves.append((enrollment.id, new_index[step_id]))  # type: ignore[arg-type]
        plan.landing[step_id] += 1
    return plan


def apply_migration(session: Session, plan: MigrationPlan) -> int:
    """Move the planned enrollments (those still live on an older version); return how many."""
    moved = 0
    for enrollment_id, position in plan.moves:
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment is None or enrollment.status not in LIVE:
            continue
        trail = [
            *enrollment.context.get("trail", []),
            {
                "step": "(migration)",
                "note": f"moved from version {enrollment.version} to {plan.target_version}",
            },
        ]
        enrollment.context = {**enrollment.context, "trail": trail[-50:]}
        enrollment.version = plan.target_version
        enrollment.position = position
        session.add(enrollment)
        moved += 1
    return moved
