"""A pipeline transaction reads a contact's enrollments once and keeps them coherent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlmodel import Session, select

from engine import EventRule, build_registry
from engine.enrollments import live_enrollments
from engine.entry import start_enrollment
from engine.known_enrollments import PastEntry, keep_enrollments, known_for, load
from engine.models import Contact
from engine.pipeline_jobs import process_contact_job
from engine.runtime import Runtime
from engine.stages import Guard, Journey, Stage, Transition
from engine.steps import send_email, wait
from engine.workflow import Workflow, on_event, on_stage_entered, reenter_always
from tests.support import enrollments, events, make_runtime

TEMPLATES = Path("workflows/templates")


class _Fuse:
    """A guard that raises while fuses are left, then holds: a bug that goes away."""

    def __init__(self, fuses: int) -> None:
        self.fuses = fuses
        self.calls = 0

    def __call__(self, _subject: object) -> bool:
        self.calls += 1
        if self.fuses:
            self.fuses -= 1
            raise RuntimeError("guard broke")
        return True


@contextmanager
def _enrollment_reads(runtime: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def hit(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The pipeline's reads; not a send's check of its enrollment's withdrawal mark
        # (engine/withdrawals.py: a JSON key of the context, at claim time).
        withdrawal_mark = "JSON_EXTRACT(enrollments.context" in statement
        if (
            statement.lstrip().startswith("SELECT")
            and "FROM enrollments" in statement
            and not withdrawal_mark
        ):
            seen.append(statement)

    sa_event.listen(runtime.db, "before_cursor_execute", hit)
    try:
        yield seen
    finally:
        sa_event.remove(runtime.db, "before_cursor_execute", hit)


def test_an_enrollment_rolled_back_with_its_failed_event_is_not_seen_by_the_next(
    tmp_path: Path,
) -> None:
    # Given an event that moves a contact from a to b, where a workflow starts, then on to
    # c through a guard that breaks for the first pass over the events and for the first
    # event of the one-by-one retry
    fuse = _Fuse(2)
    journey = Journey(
        stages=(Stage("a", "buyer"), Stage("b", "buyer"), Stage("c", "buyer")),
        transitions=(
            Transition("to_b", ("a",), "b"),
            Transition("to_c", ("b",), "c", guards=(Guard("fuse", fuse),)),
        ),
        initial="a",
    )
    registry = build_registry(
        journey=journey,
        rules=[EventRule("x.signup", triggers=("to_b", "to_c"))],
        workflows=[
            Workflow(
                "in_b",
                trigger=on_stage_entered("b"),
                steps=[wait(days=3), send_email("guide")],
            )
        ],
        templates_dir=TEMPLATES,
    )
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = registry
    try:
        recorded = runtime.track("ro@example.com", "x.signup", idempotency_key="one")
        runtime.track("ro@example.com", "x.signup", idempotency_key="two")
        # When one job applies both events (called here: two workers racing for the two
        # messages would burn the guard's fuses in another order)
        runtime.sync_versions()
        process_contact_job(runtime.db, registry, recorded.contact_id, now=clock.now())
        # Then the first event failed and took its "in_b" enrollment with it
        by_key = {e.idempotency_key: e for e in events(runtime)}
        assert by_key["api:one"].status == "failed"
        assert by_key["api:two"].status == "processed"
        assert fuse.calls == 3  # first pass, first event retried, second event
        # and the second event, not fooled by the rolled-back one, entered it afresh
        got = [(e.workflow, e.entry, e.cause_event_id) for e in enrollments(runtime)]
        assert got == [("in_b", 1, by_key["api:two"].id)]
    finally:
        runtime.close()


def test_an_event_that_moves_the_stage_and_starts_a_workflow_reads_enrollments_once(
    tmp_path: Path,
) -> None:
    # Given a contact in a welcome workflow, and a trial event that moves them to decision,
    # where another workflow starts
    registry = build_registry(
        rules=[EventRule("x.signup", score=1), EventRule("x.trial", triggers=("evaluate",))],
        workflows=[
            Workflow(
                "welcome",
                trigger=on_event("x.signup"),
                steps=[send_email("guide", id="hello"), wait(days=3), send_email("guide")],
            ),
            Workflow(
                "decision",
                trigger=on_stage_entered("decision"),
                steps=[send_email("guide", id="decide")],
            ),
        ],
        templates_dir=TEMPLATES,
    )
    runtime, _clock, email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = registry
    runtime.start()
    try:
        runtime.track("on@example.com", "x.signup")
        runtime.drain()
        # When the trial event is processed
        with _enrollment_reads(runtime) as reads:
            runtime.track("on@example.com", "x.trial")
            runtime.drain()
        # Then the stage change, the new workflow's re-entry check and the event's own
        # reactions shared one load of the contact's enrollments (two statements: the live
        # ones as objects, each workflow's ended latest entry as a row)
        assert len(reads) == 2
        assert sorted((e.workflow, e.status) for e in enrollments(runtime)) == [
            ("decision", "completed"),
            ("welcome", "waiting"),
        ]
        assert len(email.sent) == 2
    finally:
        runtime.close()


def test_the_kept_enrollments_follow_starts_and_ends_and_end_with_the_transaction(
    tmp_path: Path,
) -> None:
    registry = build_registry(
        workflows=[
            Workflow("one", trigger=on_event("x.one"), steps=[wait(days=1), send_email("guide")]),
            Workflow("two", trigger=on_event("x.two"), steps=[wait(days=1), send_email("guide")]),
        ],
        templates_dir=TEMPLATES,
        events=["x.one", "x.two"],
    )
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = registry
    try:
        runtime.track("ke@example.com", "x.one")
        runtime.start()
        runtime.drain()
        with Session(runtime.db) as session, _enrollment_reads(runtime) as reads:
            keep_enrollments(session)
            contact = session.exec(select(Contact)).one()
            first = live_enrollments(session, contact.id)  # type: ignore[arg-type]
            assert [e.workflow for e in first] == ["one"]
            # a start is seen without a read, and an end by its status alone
            start_enrollment(
                session,
                registry,
                contact,
                registry.workflows["two"],
                now=clock.now(),
                cause_event_id=None,
                why="test",
            )
            first[0].status = "exited"
            assert [e.workflow for e in live_enrollments(session, contact.id)] == ["two"]  # type: ignore[arg-type]
            assert len(reads) == 2  # one load: live enrollments, ended latest entries
            session.commit()
            # a new transaction reads the database again, as any caller that did not opt in
            assert [e.workflow for e in live_enrollments(session, contact.id)] == ["two"]  # type: ignore[arg-type]
            assert len(reads) == 3
    finally:
        runtime.close()


def test_ended_entries_are_kept_as_rows_only_the_latest_per_workflow(tmp_path: Path) -> None:
    # Given two contacts: one entered "again" twice (both ended) and waits in "one"; the
    # other has only ended enrollments
    registry = build_registry(
        workflows=[
            Workflow("one", trigger=on_event("x.one"), steps=[wait(days=1), send_email("guide")]),
            Workflow(
                "again",
                trigger=on_event("x.two"),
                steps=[send_email("guide")],
                reentry=reenter_always(),
            ),
        ],
        templates_dir=TEMPLATES,
        events=["x.one", "x.two"],
    )
    runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = registry
    runtime.start()
    try:
        for email, types in (
            ("a@example.com", ("x.two", "x.two", "x.one")),
            ("b@example.com", ("x.two",)),
        ):
            for event_type in types:
                runtime.track(email, event_type)
                runtime.drain()
        ids = {e.id: e for e in enrollments(runtime)}
        with Session(runtime.db) as session:
            a, b = session.exec(select(Contact).order_by(Contact.id)).all()
            keep_enrollments(session)
            # When both contacts' enrollments are loaded at once
            load(session, [a.id, b.id])  # type: ignore[list-item]
            known_a = known_for(session, a.id)  # type: ignore[arg-type]
            known_b = known_for(session, b.id)  # type: ignore[arg-type]
        # Then the live one is an object, each workflow's latest ended entry a plain row,
        # older entries are left out, and each list is in id order
        assert known_a is not None and known_b is not None
        assert [(type(e).__name__, e.workflow, e.entry) for e in known_a] == [
            ("PastEntry", "again", 2),
            ("Enrollment", "one", 1),
        ]
        assert [(type(e).__name__, e.workflow, e.entry) for e in known_b] == [
            ("PastEntry", "again", 1)
        ]
        past = known_a[0]
        assert isinstance(past, PastEntry)
        assert (past.status, past.started_at) == (ids[past.id].status, ids[past.id].started_at)
    finally:
        runtime.close()
