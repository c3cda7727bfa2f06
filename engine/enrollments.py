"""Enrollments as they are read: the workflow version each runs on, and the live ones.

An enrollment finishes on the version of its workflow it started with: ``remember_version``
stores each version's spec once, so ``workflow_for`` can give an enrollment its own version
after the code has moved on. ``live_enrollments`` are a contact's running and waiting
enrollments (from the transaction's copy, engine/known_enrollments.py, when it keeps one);
``count_at_steps`` counts a workflow's live enrollments at each step.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from engine import known_enrollments
from engine.models import Enrollment, WorkflowVersion
from engine.registry import Registry
from engine.spec import from_spec
from engine.workflow import Workflow

LIVE = known_enrollments.LIVE


def workflow_for(session: Session, registry: Registry, name: str, version: str) -> Workflow | None:
    """The definition an enrollment runs on: the current one, or its own older version."""
    current = registry.workflows.get(name)
    if current is not None and current.version == version:
        return current
    cache: dict[tuple[str, str], Workflow] = registry.__dict__.setdefault("_versions", {})
    if (name, version) not in cache:
        row = session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.workflow == name, WorkflowVersion.version == version
            )
        ).first()
        if row is None:
            return None
        cache[(name, version)] = from_spec(row.spec)
    return cache[(name, version)]


def older_versions(session: Session, registry: Registry) -> list[Workflow]:
    """Every stored version of the registry's workflows other than the current ones."""
    rows = session.exec(
        select(WorkflowVersion.workflow, WorkflowVersion.version, WorkflowVersion.spec).where(
            col(WorkflowVersion.workflow).in_(list(registry.workflows))
        )
    ).all()
    return [
        from_spec(spec)
        for name, version, spec in rows
        if registry.workflows[name].version != version
    ]


def known_version(registry: Registry, name: str, version: str) -> Workflow | None:
    """An older version of a workflow this process has already read (``workflow_for``),
    without a query; None if it has not."""
    cache: dict[tuple[str, str], Workflow] = registry.__dict__.get("_versions", {})
    return cache.get((name, version))


def remember_version(
    session: Session, registry: Registry, workflow: Workflow, now: datetime
) -> None:
    """Store this version's spec once, so enrollments on it can finish after the code moves
    on. Checked once per process per version; concurrent writers meet the unique key."""
    seen: set[tuple[str, str]] = registry.__dict__.setdefault("_stored_versions", set())
    key = (workflow.name, workflow.version)
    if key in seen:
        return
    store_version(session, workflow, now)
    seen.add(key)


def store_version(session: Session, workflow: Workflow, now: datetime) -> datetime:
    """Store this version's spec unless it is stored already; return when it first was."""
    query = select(WorkflowVersion.created_at).where(
        WorkflowVersion.workflow == workflow.name, WorkflowVersion.version == workflow.version
    )
    created = session.exec(query).first()
    if created is not None:
        return created
    try:
        with session.begin_nested():
            session.add(
                WorkflowVersion(
                    workflow=workflow.name,
                    version=workflow.version,
                    spec=workflow.spec,
                    created_at=now,
                )
            )
    except IntegrityError:  # another worker stored the same version a moment ago
        return session.exec(query).one()
    return now


def live_enrollments(session: Session, contact_id: int) -> list[Enrollment]:
    """The contact's active and waiting enrollments, in id order."""
    known = known_enrollments.known_for(session, contact_id)
    if known is not None:
        return sorted((e for e in known if isinstance(e, Enrollment) and e.status in LIVE), key=_id)
    return list(
        session.exec(
            select(Enrollment)
            .where(Enrollment.contact_id == contact_id, col(Enrollment.status).in_(LIVE))
            .order_by(col(Enrollment.id))
        ).all()
    )


def _id(enrollment: Enrollment) -> tuple[bool, int]:
    """Id order; enrollments not written yet last, in the order they were started (the
    order their ids will follow)."""
    return (enrollment.id is None, enrollment.id or 0)


def count_at_steps(session: Session, workflow: str) -> dict[tuple[str, int], int]:
    """(version, position) -> live enrollments, for diagrams and migrations."""
    rows = session.exec(
        select(Enrollment.version, Enrollment.position, func.count())
        .where(Enrollment.workflow == workflow, col(Enrollment.status).in_(LIVE))
        .group_by(col(Enrollment.version), col(Enrollment.position))
    ).all()
    return {(v, p): n for v, p, n in rows}
