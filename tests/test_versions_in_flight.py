"""Enrollments finish on the version they started (DESIGN.md, principle 5), whatever a
release changes meanwhile: a batched send holds an in-flight email by the send window and
cap of the version that wrote it, as the one-by-one path does
(``tests/test_probe_semantics_versions.py``), and a condition goal or exit is the one of the
enrollment's version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from connectors.fakes import FakeSendGrid
from engine import (
    Guardrails,
    Workflow,
    at_most,
    attribute,
    build_registry,
    on_condition,
    on_event,
    on_stage_entered,
    send_email,
    send_window,
    wait,
)
from engine.db import transaction
from engine.enrollments import remember_version
from engine.models import Action, ActionStatus
from engine.runtime import Runtime
from engine.testing import Simulation
from tests.test_batch_guardrails import _world
from tests.test_broadcast import KEY, add_contacts
from tests.test_probe_semantics_versions import registry as semantics_registry

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


def _release(runtime: Runtime, workflow: Workflow) -> None:
    """Version 2 of the workflow replaces version 1 now, as a deploy does."""
    current = runtime.registry
    registry = build_registry(
        journey=current.journey,
        rules=current.rules.rules,
        workflows=[workflow],
        templates_dir=current.templates.directory,
        guardrails=current.guardrails,
    )
    with transaction(runtime.db) as session:
        remember_version(session, registry, workflow, START)
    runtime.registry = registry


def _sent_at(runtime: Runtime) -> list[datetime | None]:
    with Session(runtime.db) as session:
        found = session.exec(select(Action).where(Action.kind == "email")).all()
    assert {a.status for a in found} == {ActionStatus.SENT}, [a.reason for a in found]
    return sorted(a.completed_at for a in found)  # type: ignore[type-var]


def test_a_batched_email_keeps_its_versions_send_window(tmp_path: Path, fake: FakeSendGrid) -> None:
    # Given version 1 sends 09:00-17:00 only, 12 hours after a campaign's contacts enter
    v1 = Workflow(
        "office_hours",
        trigger=on_stage_entered("consideration"),
        send_window=send_window("09:00", "17:00"),
        steps=[wait(hours=12, id="pause"), send_email("spring_sale", id="sale")],
    )
    v2 = Workflow(
        "office_hours",
        trigger=on_stage_entered("consideration"),
        steps=[wait(hours=13, id="pause"), send_email("spring_sale", id="sale")],
    )
    for runtime, clock in _world(tmp_path, fake, [v1], Guardrails()):
        add_contacts(runtime, 20)
        runtime.broadcast("office_hours")
        runtime.run_until_idle()
        # When version 2, with no window, is released, and their wait ends at 22:00
        _release(runtime, v2)
        clock.set(START + timedelta(hours=12, minutes=1))
        runtime.run_until_idle()
        assert fake.requests == []  # held by version 1's window, in one batch
        clock.set(datetime(2026, 3, 3, 9, 1, tzinfo=UTC))
        runtime.run_until_idle()
        # Then they went at 09:00 the next morning, in one request
        assert [len(r.body["personalizations"]) for r in fake.requests] == [20]
        assert set(_sent_at(runtime)) == {datetime(2026, 3, 3, 9, 1, tzinfo=UTC)}


def test_a_batched_email_keeps_its_versions_own_cap(tmp_path: Path, fake: FakeSendGrid) -> None:
    # Given version 1 sends at most one email a week, two a day apart
    v1 = Workflow(
        "weekly",
        trigger=on_stage_entered("consideration"),
        cap=at_most(1, per_days=7),
        steps=[
            send_email("spring_sale", id="first"),
            wait(days=1, id="pause"),
            send_email("sale_reminder", id="second"),
        ],
    )
    v2 = Workflow(
        "weekly",
        trigger=on_stage_entered("consideration"),
        steps=[
            send_email("spring_sale", id="first"),
            wait(days=2, id="pause"),
            send_email("sale_reminder", id="second"),
        ],
    )
    for runtime, clock in _world(tmp_path, fake, [v1], Guardrails()):
        add_contacts(runtime, 5)
        runtime.broadcast("weekly")
        runtime.run_until_idle()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [5]
        _release(runtime, v2)
        # When a day later their second email is due
        clock.set(START + timedelta(days=1, minutes=1))
        runtime.run_until_idle()
        # Then version 1's cap holds it for the rest of the week
        assert len(fake.requests) == 1
        clock.set(START + timedelta(days=7, minutes=1))
        runtime.run_until_idle()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [5, 5]


# --- condition goals of an in-flight version (the one-by-one pipeline) ---------------------


def _with_goal(goal: bool) -> Workflow:
    return Workflow(
        "upgrade_path",
        trigger=on_event("demo.requested"),
        goals=[on_condition(attribute("plan", "pro"))] if goal else [],
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email("guide", id="guide"),
        ],
    )


@pytest.mark.parametrize(("first_has_goal", "status"), [(True, "converted"), (False, "completed")])
def test_a_condition_goal_is_the_enrollments_versions(first_has_goal: bool, status: str) -> None:
    # Given version 1 (with or without a goal on the plan) and a contact in it
    with Simulation(semantics_registry([_with_goal(first_has_goal)])) as sim:
        sim.track("ana@example.com", "demo.requested")
        sim.advance(days=1)
        # When version 2, the other way round, is released, and her plan turns pro
        sim.deploy(_with_goal(not first_has_goal))
        sim.track("ana@example.com", "page.viewed", attributes={"plan": "pro"})
        sim.advance(days=3)
        # Then her enrollment ends as version 1 says
        sim.expect_enrollment("ana@example.com", "upgrade_path", status)


def test_a_version_stored_by_another_process_is_seen_within_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling deploy: newer workers store a version with a condition goal while this
    process runs; enrollments on it must be evaluated against it here too."""
    import engine.pipeline as pipeline
    from engine.db import make_engine, transaction
    from engine.enrollments import store_version
    from engine.models import metadata

    db = make_engine(f"sqlite:///{tmp_path}/jl.db")
    metadata.create_all(db)
    registry = semantics_registry([_with_goal(False)])
    now = [1000.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: now[0])
    try:
        with transaction(db) as session:
            assert pipeline._older_versions_have_conditions(session, registry) is False
            store_version(session, _with_goal(True), START)  # another process's release
        with transaction(db) as session:
            assert pipeline._older_versions_have_conditions(session, registry) is False  # cached
            now[0] += pipeline.OLDER_VERSIONS_READ_EVERY_S
            assert pipeline._older_versions_have_conditions(session, registry) is True
    finally:
        db.dispose()
