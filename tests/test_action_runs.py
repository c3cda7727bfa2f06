"""Several single actions in one job (``actions.perform_actions``): claimed together and
recorded together, each still decided and performed exactly as ``perform_action`` would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import event
from sqlmodel import Session, select

from engine import actions as actions_module
from engine.models import Action
from engine.runtime import Runtime
from tests.support import actions, make_runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[tuple[Runtime, Any, Any]]:
    runtime, clock, email = make_runtime(f"sqlite:///{tmp_path}/jl.db", max_attempts=3)
    for name in ("ana", "bea", "cy"):
        runtime.track(f"{name}@example.com", "page.viewed")
    runtime.broker.flush_all()  # the tests run the jobs by hand
    for contact_id in (1, 2, 3):
        runtime.process_contact(contact_id)
    runtime.broker.flush_all()
    yield runtime, clock, email
    runtime.close()


def _commits(runtime: Runtime) -> list[int]:
    seen = [0]

    @event.listens_for(runtime.db, "commit")
    def counted(_conn: Any) -> None:
        seen[0] += 1

    return seen


def test_a_run_of_actions_is_claimed_in_one_commit_and_recorded_in_another(rt) -> None:
    runtime, _clock, email = rt
    ids = [a.id for a in actions(runtime)]
    assert len(ids) == 3
    commits = _commits(runtime)
    outcome = runtime.perform_many([*ids, ids[0]])  # a duplicate id is done once
    assert outcome == {"sent": 3}
    assert commits[0] == 2
    assert sorted(m.to for m in email.sent) == [
        "ana@example.com",
        "bea@example.com",
        "cy@example.com",
    ]
    done = actions(runtime)
    assert {a.status for a in done} == {"sent"} and all(a.provider_id for a in done)
    assert all(a.lease_until is None and a.completed_at is not None for a in done)
    # Again: nothing is sent twice.
    assert runtime.perform_many(ids) == {"sent": 3}
    assert len(email.sent) == 3


def test_a_failing_call_is_retried_alone_and_the_others_are_recorded(rt) -> None:
    runtime, clock, email = rt
    ids = [a.id for a in actions(runtime)]
    email.fail_next(1, retry_after=timedelta(seconds=30))
    assert runtime.perform_many(ids) == {"pending": 1, "sent": 2}
    first, *rest = actions(runtime)
    assert first.status == "pending" and first.error and first.attempts == 1
    assert first.next_attempt_at >= clock.now() + timedelta(seconds=30)
    assert [a.status for a in rest] == ["sent", "sent"]


def test_a_claim_that_raises_sends_the_run_one_by_one_and_raises_after(
    rt, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _clock, email = rt
    ids = [a.id for a in actions(runtime)]
    claim = actions_module._claim

    def broken(session: Session, registry: Any, performers: Any, action_id: int, **kw: Any) -> Any:
        if action_id == ids[1]:
            raise RuntimeError("a bug in one action's claim")
        return claim(session, registry, performers, action_id, **kw)

    monkeypatch.setattr(actions_module, "_claim", broken)
    with pytest.raises(RuntimeError, match="a bug in one action's claim"):
        runtime.perform_many(ids)
    assert [a.status for a in actions(runtime)] == ["sent", "pending", "sent"]
    assert len(email.sent) == 2


def test_the_guard_rails_see_each_claim_of_the_run_as_if_it_had_committed(rt) -> None:
    """Four marketing emails for one contact under the playbook's cap (3 in 7 days): three
    go, the fourth waits, as when each is performed on its own."""
    runtime, _clock, email = rt
    (welcome, *_others) = actions(runtime)
    with Session(runtime.db) as session:
        original = session.get(Action, welcome.id)
        assert original is not None
        for n in range(3):
            copy = Action(
                **original.model_dump(exclude={"id", "idempotency_key"}),
                idempotency_key=f"{original.idempotency_key}:copy{n}",
            )
            session.add(copy)
        session.commit()
    with Session(runtime.db) as session:
        mine = session.exec(
            select(Action.id).where(Action.contact_id == welcome.contact_id).order_by(Action.id)
        ).all()
    assert len(mine) == 4
    outcome = runtime.perform_many(list(mine))
    assert outcome == {"sent": 3, "pending": 1}
    assert [m.to for m in email.sent] == ["ana@example.com"] * 3
    held = next(a for a in actions(runtime) if a.id == mine[-1])
    assert held.status == "pending"
    assert held.reason["held"][-1]["rule"].startswith("frequency cap: 3 per 7 days")


def test_dispatch_sends_single_actions_a_few_per_job(tmp_path: Path) -> None:
    runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    try:
        runtime._send_singles(list(range(1, 24)), transactional=True)
        runtime._send_singles([99], transactional=False)
        sent = [
            (m.actor_name, m.args[0]) for q in runtime.broker.queues for m in _messages(runtime, q)
        ]
        assert sorted(sent, key=str) == sorted(
            [
                ("perform_transactional_actions", list(range(1, 11))),
                ("perform_transactional_actions", list(range(11, 21))),
                ("perform_transactional_actions", [21, 22, 23]),
                ("perform_action", 99),
            ],
            key=str,
        )
    finally:
        runtime.close()


def test_a_short_lease_keeps_one_call_per_job(tmp_path: Path) -> None:
    runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db", action_lease_seconds=45)
    try:
        runtime._send_singles([1, 2, 3], transactional=False)
        sent = [
            (m.actor_name, m.args[0]) for q in runtime.broker.queues for m in _messages(runtime, q)
        ]
        assert sent == [("perform_action", 1), ("perform_action", 2), ("perform_action", 3)]
    finally:
        runtime.close()


def _messages(runtime: Runtime, queue: str) -> list[Message[Any]]:
    waiting = runtime.broker.queues[queue]
    found = []
    while not waiting.empty():
        found.append(Message.decode(waiting.get_nowait()))
    return found
