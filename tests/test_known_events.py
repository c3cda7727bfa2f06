"""A batch job reads its contacts' past events once per condition type, not once per contact,
and decides exactly what reading them one contact at a time decides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine import EventRule, build_registry
from engine.conditions import Condition, did_event, opened
from engine.known_events import batch, properties_since, statements
from engine.models import Contact
from engine.pipeline_jobs import process_contact_job
from engine.registry import Registry
from engine.runtime import Runtime
from engine.steps import Step, branch, send_email, wait
from engine.workflow import Workflow, on_event
from tests.support import actions, enrollments, make_runtime
from tests.support import statements as sql_statements

TEMPLATES = Path("workflows/templates")


def _registry(*workflows: Workflow) -> Registry:
    return build_registry(
        rules=[EventRule("x.trial", score=1)],
        workflows=list(workflows),
        templates_dir=TEMPLATES,
        events=["x.go", "x.buy"],
    )


ON_TRIAL = Workflow(
    "follow",
    trigger=on_event("x.go"),
    steps=[
        branch(
            did_event("x.trial", within=timedelta(days=2), plan="team"),
            id="trial?",
            then=[send_email("guide", id="yes")],
            otherwise=[send_email("guide", id="no")],
        )
    ],
)


def _a_day_later(
    name: str, condition: Condition, *, yes: str, no: str, first: Step | None = None
) -> Workflow:
    """On ``x.go``: ``first`` (if any), a day's wait, then an email ``yes`` or ``no`` as
    ``condition`` holds."""
    return Workflow(
        name,
        trigger=on_event("x.go"),
        steps=[
            *([first] if first else []),
            wait(days=1),
            branch(
                condition,
                id="then?",
                then=[send_email("guide", id=yes)],
                otherwise=[send_email("guide", id=no)],
            ),
        ],
    )


def _event_reads(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().startswith("SELECT") and "FROM events" in s]


def _steps(runtime: Runtime) -> dict[str, str]:
    """The step of each contact's email action, by the contact's email."""
    with Session(runtime.db) as session:
        emails = dict(session.exec(select(Contact.id, Contact.email)).all())  # type: ignore[arg-type]
    return {emails[a.contact_id]: a.reason["step"] for a in actions(runtime)}


def _trials_then_go(runtime: Runtime) -> list[int]:
    """Five contacts: a trial on the team plan three days ago (b), now (a, e), on another
    plan now (d), none (c); then ``x.go`` for each. Their ids, with the ``x.go`` events
    pending."""
    clock = runtime.clock
    runtime.track("b@example.com", "x.trial", {"plan": "team"})
    clock.advance(timedelta(days=3))  # type: ignore[attr-defined]
    runtime.track("a@example.com", "x.trial", {"plan": "team"})
    runtime.track("d@example.com", "x.trial", {"plan": "starter"})
    runtime.track("e@example.com", "x.trial", {"plan": "team"})
    ids = [
        runtime.track(f"{name}@example.com", "x.go").contact_id
        for name in ("a", "b", "c", "d", "e")
    ]
    return ids


EXPECTED = {
    "a@example.com": "yes",
    "b@example.com": "no",  # too long ago
    "c@example.com": "no",  # no trial
    "d@example.com": "no",  # another plan
    "e@example.com": "yes",
}


def test_a_batch_job_reads_the_events_a_branch_needs_once_for_all_its_contacts(
    tmp_path: Path,
) -> None:
    runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")  # no worker started
    runtime.registry = _registry(ON_TRIAL)
    try:
        ids = _trials_then_go(runtime)
        with sql_statements(runtime.db) as seen:
            runtime.process_contacts(ids)
        assert _steps(runtime) == EXPECTED
        # one read of x.trial events for the five contacts, besides the job's read of their
        # pending events
        reads = _event_reads(seen)
        assert len([s for s in reads if "events.type IN" in s]) == 1, reads
    finally:
        runtime.close()


def test_one_contact_at_a_time_decides_the_same_reading_its_own_events(tmp_path: Path) -> None:
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = _registry(ON_TRIAL)
    try:
        ids = _trials_then_go(runtime)
        runtime.sync_versions()
        with sql_statements(runtime.db) as seen:
            for contact_id in ids:
                process_contact_job(runtime.db, runtime.registry, contact_id, now=clock.now())
        assert _steps(runtime) == EXPECTED
        # each contact read its own events: no batch read
        own = [s for s in _event_reads(seen) if "events.type IN" in s]
        assert len(own) == len(ids) and all("events.contact_id IN (?)" in s for s in own), own
    finally:
        runtime.close()


def test_waking_a_batch_reads_events_since_each_enrollment_began(tmp_path: Path) -> None:
    # Given a workflow that waits a day, then asks whether the contact bought since entering
    later = _a_day_later("later", did_event("x.buy"), yes="thanks", no="nudge")
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = _registry(later)
    runtime.start()
    try:
        # p bought before entering, q after, r never
        runtime.track("p@example.com", "x.buy")
        clock.advance(timedelta(minutes=5))
        for name in ("p", "q", "r"):
            runtime.track(f"{name}@example.com", "x.go")
        runtime.drain()
        clock.advance(timedelta(hours=2))
        runtime.track("q@example.com", "x.buy")
        runtime.drain()
        clock.advance(timedelta(days=1))
        waiting = [e.id for e in enrollments(runtime) if e.status == "waiting"]
        assert len(waiting) == 3
        # When the three wake in one job
        with sql_statements(runtime.db) as seen:
            runtime.wake_many(waiting)  # type: ignore[arg-type]
        # Then each got the branch its own history says, from one read of x.buy events
        assert _steps(runtime) == {
            "p@example.com": "nudge",
            "q@example.com": "thanks",
            "r@example.com": "nudge",
        }
        assert len([s for s in _event_reads(seen) if "events.type IN" in s]) == 1
    finally:
        runtime.close()


def test_the_batch_read_answers_later_bounds_reads_again_for_earlier_and_ends_with_the_transaction(
    tmp_path: Path,
) -> None:
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = _registry(ON_TRIAL)
    try:
        start = clock.now()
        a = runtime.track("a@example.com", "x.trial", {"n": 1}).contact_id
        clock.advance(timedelta(days=2))
        runtime.track("a@example.com", "x.trial", {"n": 2})
        b = runtime.track("b@example.com", "x.trial", {"n": 3}).contact_id
        outsider = runtime.track("c@example.com", "x.trial", {"n": 4}).contact_id
        with Session(runtime.db) as session:
            # not opted in: the contact's own events, read for it alone
            assert properties_since(session, a, ["x.trial"]) == [{"n": 1}, {"n": 2}]
            assert statements(session) == 0
            batch(session, [a, b])
            assert properties_since(session, outsider, ["x.trial"]) == [{"n": 4}]
            assert statements(session) == 0  # outside the batch: read alone too
            day = start + timedelta(days=1)
            assert properties_since(session, a, ["x.trial"], since=day) == [{"n": 2}]
            assert properties_since(session, b, ["x.trial"], since=day) == [{"n": 3}]
            assert statements(session) == 1
            # a later bound is answered from the same read
            later = start + timedelta(days=3)
            assert properties_since(session, a, ["x.trial"], since=later) == []
            assert statements(session) == 1
            # an earlier one reads again, for the whole batch
            assert properties_since(session, a, ["x.trial"], since=start) == [{"n": 1}, {"n": 2}]
            assert properties_since(session, a, ["x.trial"]) == [{"n": 1}, {"n": 2}]
            assert statements(session) == 3
            # by the time the event was received, not when it occurred
            assert properties_since(session, b, ["x.trial"], when="received_at", since=day) == [
                {"n": 3}
            ]
            session.commit()
            assert properties_since(session, a, ["x.trial"]) == [{"n": 1}, {"n": 2}]
            assert statements(session) == 0  # the batch is forgotten with its transaction
    finally:
        runtime.close()


@pytest.mark.parametrize("together", [True, False])
def test_engaged_reads_opens_for_the_batch(tmp_path: Path, together: bool) -> None:
    # Given a workflow that sends an email, waits, and branches on whether it was opened
    engaged = _a_day_later(
        "engaged", opened("hello"), yes="more", no="again", first=send_email("guide", id="hello")
    )
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = _registry(engaged)
    runtime.start()
    try:
        o, s = (runtime.track(f"{name}@example.com", "x.go").contact_id for name in "os")
        runtime.drain()
        first = {a.contact_id: a.id for a in actions(runtime)}
        runtime.track("o@example.com", "email.opened", {"action_id": first[o]})
        runtime.drain()
        clock.advance(timedelta(days=1, minutes=1))
        waiting = [e.id for e in enrollments(runtime) if e.status == "waiting"]
        if together:
            runtime.wake_many(waiting)  # type: ignore[arg-type]
        else:
            for enrollment_id in waiting:
                runtime.wake(enrollment_id)  # type: ignore[arg-type]
        runtime.drain()
        later = {
            a.contact_id: a.reason["step"]
            for a in actions(runtime)
            if a.id not in set(first.values())
        }
        assert later == {o: "more", s: "again"}
    finally:
        runtime.close()


def test_engaged_asks_for_the_emails_only_of_contacts_whose_opens_name_one(
    tmp_path: Path,
) -> None:
    # Given three contacts in a workflow that branches on whether its first email was
    # opened: one opened it, one opened an email of another workflow, one opened nothing
    engaged = _a_day_later(
        "engaged", opened("hello"), yes="more", no="again", first=send_email("guide", id="hello")
    )
    other = Workflow("other", trigger=on_event("x.buy"), steps=[send_email("guide", id="x")])
    runtime, clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = _registry(engaged, other)
    runtime.start()
    try:
        o, e, s = (runtime.track(f"{name}@example.com", "x.go").contact_id for name in "oes")
        runtime.track("e@example.com", "x.buy")
        runtime.drain()
        sent = {(a.contact_id, a.reason["workflow"]): a.id for a in actions(runtime)}
        runtime.track("o@example.com", "email.opened", {"action_id": str(sent[o, "engaged"])})
        runtime.track("e@example.com", "email.opened", {"action_id": sent[e, "other"]})
        runtime.drain()
        clock.advance(timedelta(days=1, minutes=1))
        waiting = [x.id for x in enrollments(runtime) if x.status == "waiting"]
        # When the three wake in one job
        with sql_statements(runtime.db) as seen:
            runtime.wake_many(waiting)  # type: ignore[arg-type]
        # Then only the two whose opens name an email are asked about their emails, and
        # only the one whose open names this workflow's email counts as engaged
        asked = [q for q in seen if q.lstrip().startswith("SELECT actions.id \nFROM actions")]
        assert len(asked) == 2
        runtime.drain()
        later = {
            a.contact_id: a.reason["step"]
            for a in actions(runtime)
            if a.id not in set(sent.values())
        }
        assert later == {o: "more", e: "again", s: "again"}
    finally:
        runtime.close()
