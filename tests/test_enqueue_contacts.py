"""A batch of events enqueues a few contacts per job, not one broker round trip per contact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine.api.events import EventIn, record_all
from engine.models import Event, EventStatus
from engine.runtime import CONTACTS_PER_JOB, Runtime
from tests.support import make_runtime


@pytest.fixture
def runtime(tmp_path: Path):  # type: ignore[no-untyped-def]
    rt, _, _ = make_runtime(f"sqlite:///{tmp_path}/jl.db", broker_url="inline://")
    yield rt
    rt.close()


def queued(rt: Runtime) -> list[tuple[str, tuple]]:
    return [(m.actor_name, m.args) for m in rt.broker.pending]  # type: ignore[attr-defined]


def test_contacts_are_enqueued_in_chunks_and_a_lone_one_as_before(runtime: Runtime) -> None:
    runtime.enqueue_contacts([*range(1, 2 * CONTACTS_PER_JOB + 2), 3, 5])  # repeats once each
    jobs = queued(runtime)
    assert [name for name, _ in jobs] == ["process_contacts", "process_contacts", "process_contact"]
    assert jobs[0][1] == (list(range(1, CONTACTS_PER_JOB + 1)),)
    assert jobs[2][1] == (2 * CONTACTS_PER_JOB + 1,)


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


def test_one_failing_contact_does_not_stop_the_others_and_the_job_raises(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[int] = []

    def process(contact_id: int) -> None:
        if contact_id == 2:
            raise RuntimeError("database went away")
        done.append(contact_id)

    monkeypatch.setattr(runtime, "process_contact", process)
    with pytest.raises(RuntimeError, match="database went away"):
        runtime.process_contacts([1, 2, 3])
    assert done == [1, 3]
