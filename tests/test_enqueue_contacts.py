"""A batch of events enqueues a few contacts per job, not one broker round trip per contact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from engine import pipeline, pipeline_jobs
from engine.api.events import EventIn, record_all
from engine.models import Action, Contact, Enrollment, Event, EventStatus
from engine.runtime import Runtime
from engine.settings import CONTACTS_PER_JOB
from tests.support import make_runtime, statements

PER_JOB = 10  # small, so that a few dozen contacts make several jobs


@pytest.fixture
def runtime(tmp_path: Path):  # type: ignore[no-untyped-def]
    rt, _, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db", broker_url="inline://", contacts_per_job=PER_JOB
    )
    yield rt
    rt.close()


def queued(rt: Runtime) -> list[tuple[str, tuple]]:
    return [(m.actor_name, m.args) for m in rt.broker.pending]  # type: ignore[attr-defined]


def test_contacts_are_enqueued_in_chunks_and_a_lone_one_as_before(runtime: Runtime) -> None:
    runtime.enqueue_contacts([*range(1, 2 * PER_JOB + 2), 3, 5])  # repeats once each
    jobs = queued(runtime)
    assert [name for name, _ in jobs] == ["process_contacts", "process_contacts", "process_contact"]
    assert jobs[0][1] == (list(range(1, PER_JOB + 1)),)
    assert jobs[2][1] == (2 * PER_JOB + 1,)


def test_contacts_per_job_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYLINE_CONTACTS_PER_JOB", "50")
    rt, _, _ = make_runtime(f"sqlite:///{tmp_path}/jl.db", broker_url="inline://")
    try:
        rt.enqueue_contacts(range(1, 121))
        assert [len(args[0]) for _, args in queued(rt)] == [50, 50, 20]
    finally:
        rt.close()


def test_by_default_a_full_api_batch_is_one_job(tmp_path: Path) -> None:
    rt, _, _ = make_runtime(f"sqlite:///{tmp_path}/jl.db", broker_url="inline://")
    try:
        rt.enqueue_contacts(range(1, CONTACTS_PER_JOB + 1))
        assert [name for name, _ in queued(rt)] == ["process_contacts"]
    finally:
        rt.close()


def test_a_batch_of_events_for_many_contacts_is_processed_through_few_jobs(
    runtime: Runtime,
) -> None:
    items = [EventIn(email=f"c{i}@example.com", type="trial.started") for i in range(25)]
    record_all(runtime, items)
    assert [name for name, _ in queued(runtime)] == ["process_contacts"] * 3
    runtime.run_until_idle()
    with Session(runtime.db) as session:
        statuses = {e.status for e in session.exec(select(Event)).all()}
    assert statuses == {EventStatus.PROCESSED}


def test_a_job_of_contacts_runs_in_one_transaction(runtime: Runtime) -> None:
    items = [EventIn(email=f"c{i}@example.com", type="page.viewed") for i in range(10)]
    record_all(runtime, items)
    runtime.broker.pending.clear()  # type: ignore[attr-defined]
    ids = sorted(contact_ids(runtime))
    runtime.sync_versions()  # once per process, in a transaction of its own
    begins: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN"):
            begins.append(statement)

    event.listen(runtime.db, "before_cursor_execute", count)
    try:
        runtime.process_contacts(ids)
    finally:
        event.remove(runtime.db, "before_cursor_execute", count)
    assert len(begins) == 1  # one transaction for the ten contacts, not ten
    assert statuses(runtime) == {EventStatus.PROCESSED}


def test_a_workflow_error_on_one_contact_fails_that_event_only(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [EventIn(email=f"c{i}@example.com", type="page.viewed") for i in range(3)]
    record_all(runtime, items)
    runtime.broker.pending.clear()  # type: ignore[attr-defined]
    bad = contact_id_of(runtime, "c1@example.com")
    real = pipeline.apply_event

    def apply(session, registry, contact, ev, *, now, **options):  # type: ignore[no-untyped-def]
        if contact.id == bad and ev.type == "page.viewed":
            raise RuntimeError("a rule divided by zero")
        return real(session, registry, contact, ev, now=now, **options)

    monkeypatch.setattr(pipeline, "apply_event", apply)
    runtime.process_contacts(sorted(contact_ids(runtime)))  # does not raise
    with Session(runtime.db) as session:
        rows = session.exec(select(Event).where(Event.type == "page.viewed")).all()
    by_contact = {e.contact_id: e for e in rows}
    assert by_contact[bad].status == EventStatus.FAILED
    assert "a rule divided by zero" in (by_contact[bad].error or "")
    assert {e.status for c, e in by_contact.items() if c != bad} == {EventStatus.PROCESSED}


def test_a_contact_that_cannot_be_processed_does_not_stop_the_others_and_the_job_raises(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [EventIn(email=f"c{i}@example.com", type="page.viewed") for i in range(3)]
    record_all(runtime, items)
    runtime.broker.pending.clear()  # type: ignore[attr-defined]
    bad = contact_id_of(runtime, "c1@example.com")
    real_lock = pipeline.lock_contact

    def together(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database went away")

    def lock(session, contact_id):  # type: ignore[no-untyped-def]
        if contact_id == bad:
            raise RuntimeError("database went away")
        return real_lock(session, contact_id)

    monkeypatch.setattr(pipeline_jobs, "_process_together", together)
    monkeypatch.setattr(pipeline, "lock_contact", lock)
    with pytest.raises(RuntimeError, match="database went away"):
        runtime.process_contacts(sorted(contact_ids(runtime)))
    with Session(runtime.db) as session:
        rows = session.exec(select(Event).where(Event.type == "page.viewed")).all()
    left = {e.contact_id for e in rows if e.status == EventStatus.PENDING}
    assert left == {bad}  # the others were processed and committed; the retry does this one


def contact_ids(rt: Runtime) -> set[int]:
    with Session(rt.db) as session:
        return set(session.exec(select(Contact.id)).all())  # type: ignore[arg-type]


def contact_id_of(rt: Runtime, email: str) -> int:
    with Session(rt.db) as session:
        found = session.exec(select(Contact.id).where(Contact.email == email)).one()
    return found  # type: ignore[return-value]


def statuses(rt: Runtime) -> set[str]:
    with Session(rt.db) as session:
        return {e.status for e in session.exec(select(Event)).all()}


def test_a_job_writes_one_insert_per_table_each_action_keyed_to_its_own_enrollment(
    runtime: Runtime,
) -> None:
    items = [EventIn(email=f"c{i}@example.com", type="trial.started") for i in range(10)]
    record_all(runtime, items)
    runtime.broker.pending.clear()  # type: ignore[attr-defined]
    runtime.sync_versions()
    with statements(runtime.db) as seen:
        effects = runtime.process_contacts(sorted(contact_ids(runtime)))
    inserts = [s.split("(")[0].strip() for s in seen if s.startswith("INSERT")]
    assert sorted(inserts) == [
        "INSERT INTO actions",
        "INSERT INTO enrollments",
        "INSERT INTO stage_transitions",
    ]
    with Session(runtime.db) as session:
        actions = session.exec(select(Action)).all()
        enrollments = {e.id: e for e in session.exec(select(Enrollment)).all()}
    assert len(actions) == 20  # welcome (contact.created) and trial offer, for each
    assert sorted(effects.actions + effects.transactional) == sorted(a.id for a in actions)
    for action in actions:
        enrollment = enrollments[action.enrollment_id]
        assert enrollment.contact_id == action.contact_id
        assert action.idempotency_key == f"enrollment:{enrollment.id}:step:{action.reason['step']}"


def test_a_job_writes_each_event_status_and_time_in_one_statement(runtime: Runtime) -> None:
    # Given pending events of three contacts: two known types and one nothing names
    items = [
        EventIn(email="k1@example.com", type="page.viewed"),
        EventIn(email="k2@example.com", type="trial.started"),
        EventIn(email="u@example.com", type="mystery.happened"),
    ]
    record_all(runtime, items)
    runtime.broker.pending.clear()  # type: ignore[attr-defined]
    runtime.sync_versions()
    with statements(runtime.db) as seen:
        runtime.process_contacts(sorted(contact_ids(runtime)))
    # Then each event has its own outcome and the job's time
    with Session(runtime.db) as session:
        rows = session.exec(select(Event).where(Event.type != "contact.created")).all()
    assert {e.type: e.status for e in rows} == {
        "page.viewed": EventStatus.PROCESSED,
        "trial.started": EventStatus.PROCESSED,
        "mystery.happened": EventStatus.UNMAPPED,
    }
    assert {e.processed_at for e in rows} == {runtime.clock.now()}
    # written together: one UPDATE of events for the job
    assert len([s for s in seen if s.lstrip().startswith("UPDATE events")]) == 1
