"""Refused entries are told to engine.refusals' listeners, with the reason, and cost
nothing when nobody listens."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from engine import (
    Workflow,
    build_registry,
    did_event,
    lifecycle_journey,
    not_,
    on_event,
    on_schedule,
    reenter_after,
    send_email,
    wait,
)
from engine.refusals import Refusal, listened, listening, refuse
from engine.registry import Registry
from engine.testing import JourneyAssertionError, Simulation
from tests.language_support import running
from tests.support import enrollments
from workflows.rules import RULES

NOT_BUYERS = Workflow(
    "not_buyers",
    trigger=on_event("trial.started"),
    entry_if=not_(did_event("order.completed")),
    steps=[send_email("welcome", id="hello")],
)
MONTHLY = Workflow(
    "monthly",
    trigger=on_event("demo.requested"),
    reentry=reenter_after(days=30),
    steps=[send_email("welcome", id="hi")],
)
ONCE = Workflow(
    "once",
    trigger=on_event("page.viewed"),
    steps=[wait(days=2), send_email("welcome", id="later")],
)


class Heard:
    def __init__(self) -> None:
        self.refusals: list[tuple[Engine, Refusal]] = []

    def __call__(self, db: Engine, refusal: Refusal) -> None:
        self.refusals.append((db, refusal))

    def reasons(self, workflow: str) -> list[str]:
        return [r.reason for _db, r in self.refusals if r.workflow == workflow]


def test_an_entry_rule_refusal_names_the_rule(tmp_path: Path) -> None:
    heard = Heard()
    with running(tmp_path, [NOT_BUYERS]) as (rt, clock, _email), listening(heard):
        rt.track("ana@example.com", "order.completed")
        rt.run_until_idle()
        rt.track("ana@example.com", "trial.started")
        rt.run_until_idle()
        assert enrollments(rt) == []
        (db, refusal), *_ = heard.refusals
        assert db is rt.db
        assert refusal.workflow == "not_buyers"
        assert refusal.at == clock.now()
        assert refusal.kind == "entry rule"
        assert refusal.reason.startswith("entry rule not met: ")
        assert "order.completed" in refusal.reason


def test_re_entry_refusals_say_which_policy_and_since_when(tmp_path: Path) -> None:
    heard = Heard()
    with running(tmp_path, [MONTHLY, ONCE]) as (rt, clock, _email), listening(heard):
        rt.track("bo@example.com", "demo.requested")
        rt.track("bo@example.com", "page.viewed")
        rt.run_until_idle()
        clock.advance(days=3)
        rt.run_until_idle()  # both ended: monthly sent at once, once after 2 days
        rt.track("bo@example.com", "demo.requested")
        rt.track("bo@example.com", "page.viewed")
        rt.run_until_idle()
        (monthly,) = heard.reasons("monthly")
        assert monthly.startswith("re-entry only 30 days after the last entry (entry 1, started ")
        (once,) = heard.reasons("once")
        assert once.startswith("re-entry is never allowed, and they entered before (entry 1")


def test_a_contact_already_in_the_workflow_is_refused_as_such(tmp_path: Path) -> None:
    heard = Heard()
    with running(tmp_path, [ONCE]) as (rt, _clock, _email), listening(heard):
        rt.track("cy@example.com", "page.viewed")
        rt.run_until_idle()
        rt.track("cy@example.com", "page.viewed")
        rt.run_until_idle()
        (reason,) = heard.reasons("once")
        assert [r.kind for _db, r in heard.refusals] == ["in it"]
        assert reason.startswith("already in it (entry 1, started ")
        assert reason.endswith(", waiting)")


def test_an_unsubscribed_contact_refused_by_a_marketing_workflow(tmp_path: Path) -> None:
    heard = Heard()
    with running(tmp_path, [MONTHLY]) as (rt, _clock, _email), listening(heard):
        rt.track("di@example.com", "email.unsubscribed")
        rt.run_until_idle()
        rt.track("di@example.com", "demo.requested")
        rt.run_until_idle()
        assert heard.reasons("monthly") == [
            "contact is unsubscribed; the workflow sends marketing email"
        ]


def test_listening_ends_with_the_block() -> None:
    heard = Heard()
    assert not listened()
    with listening(heard):
        assert listened()
    assert not listened()


def _registry(*workflows: Workflow) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=Path(__file__).parent.parent / "workflows" / "templates",
    )


def test_a_failed_expectation_says_why_the_contact_never_entered() -> None:
    with Simulation(_registry(NOT_BUYERS, ONCE)) as sim:
        sim.track("ana@example.com", "order.completed")
        sim.track("ana@example.com", "page.viewed")
        sim.advance(hours=1)
        sim.track("ana@example.com", "page.viewed")  # in `once` already: not worth a line
        sim.track("ana@example.com", "trial.started")
        with pytest.raises(JourneyAssertionError) as failure:
            sim.expect_enrollment("ana@example.com", "not_buyers", "active")
    text = str(failure.value)
    assert "expected ana@example.com to have entered 'not_buyers'; never did" in text
    (line,) = [x for x in text.splitlines() if "refused" in x]
    assert line.endswith(
        "refused    not_buyers: entry rule not met: not (did order.completed ever)"
    )
    lines = text.splitlines()
    assert lines.index(line) == len(lines) - 1  # after the event that caused it
    assert "already in it" not in text


def test_a_simulation_hears_only_its_own_refusals() -> None:
    with Simulation(_registry(NOT_BUYERS)) as first, Simulation(_registry(NOT_BUYERS)) as second:
        for sim in (first, second):
            sim.track("bo@example.com", "order.completed")
        first.track("bo@example.com", "trial.started")
        assert "refused" in first.explain("bo@example.com")
        assert "refused" not in second.explain("bo@example.com")
    assert not listened()


def test_the_harness_shows_a_refusal_told_twice_once() -> None:
    # A job rolled back and done again one contact at a time refuses the same entry again,
    # at the same instant: the timeline shows it once.
    with Simulation(_registry(NOT_BUYERS)) as sim:
        sim.track("eve@example.com", "order.completed")
        contact_id = sim.contact("eve@example.com").id
        assert contact_id is not None
        with Session(sim.runtime.db) as session:
            for _ in range(2):
                refuse(session, contact_id, "not_buyers", sim.now(), "entry rule", "rule r")
        text = sim.explain("eve@example.com")
    assert text.count("refused    not_buyers: rule r") == 1


WEEKLY_NON_BUYERS = Workflow(
    "weekly_non_buyers",
    trigger=on_schedule("0 9 * * MON"),
    entry_if=not_(did_event("order.completed")),
    reentry=reenter_after(days=30),
    steps=[send_email("welcome", id="weekly")],
)


def test_a_schedule_refuses_by_re_entry_first_as_an_event_trigger_does(tmp_path: Path) -> None:
    """A scheduled workflow whose first step is an email enters contacts set-based: the
    re-entry policy comes first there too, and is told; a contact it keeps out is not also
    (wrongly) refused for an entry rule she was never checked against."""
    heard = Heard()
    with running(tmp_path, [WEEKLY_NON_BUYERS]) as (rt, clock, _email), listening(heard):
        rt.track("ana@example.com", "page.viewed")  # a Monday at 10:00: next slot in 7 days
        rt.run_until_idle()
        clock.advance(days=7)
        rt.run_until_idle()  # she enters at the first Monday's slot
        assert [e.workflow for e in enrollments(rt)] == ["weekly_non_buyers"]
        rt.track("ana@example.com", "order.completed")  # now the entry rule would refuse
        rt.run_until_idle()
        clock.advance(days=7)
        rt.run_until_idle()  # the next Monday: 7 days after her entry, under 30
        reasons = heard.reasons("weekly_non_buyers")
        assert [r.kind for _db, r in heard.refusals] == ["re-entry"], reasons
        assert reasons[0].startswith("re-entry only 30 days after the last entry (entry 1")
