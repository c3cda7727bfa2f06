"""The stage machine: every allowed transition, every refused one, guards and errors."""

from __future__ import annotations

import itertools

import pytest

from engine import InvalidTransition, StageMachine, WorkflowDefinitionError, lifecycle_journey
from engine.stages import Guard, Journey, Stage, Transition

JOURNEY = lifecycle_journey(mql_threshold=20)
MACHINE = StageMachine(JOURNEY)

ALLOWED = {(source, t.trigger): t.dest for t in JOURNEY.transitions for source in t.sources}
ALL_PAIRS = list(itertools.product(JOURNEY.stage_names, JOURNEY.triggers))


@pytest.mark.parametrize(("stage", "trigger"), sorted(ALLOWED))
def test_every_allowed_transition_moves_to_its_destination(stage: str, trigger: str) -> None:
    # Given a contact whose score passes every guard
    # When the trigger fires from a stage that allows it
    move = MACHINE.fire(email="a@example.com", stage=stage, trigger=trigger, score=1000)
    # Then the contact lands on the destination the journey defines
    assert move.moved
    assert (move.source, move.dest) == (stage, ALLOWED[(stage, trigger)])


@pytest.mark.parametrize(("stage", "trigger"), [p for p in ALL_PAIRS if p not in ALLOWED])
def test_every_other_transition_is_refused_with_a_clear_error(stage: str, trigger: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        MACHINE.fire(email="bob@example.com", stage=stage, trigger=trigger, score=1000)
    message = str(info.value)
    assert "bob@example.com" in message
    assert repr(stage) in message
    assert repr(trigger) in message
    assert not MACHINE.allows(stage, trigger)


def test_the_mql_guard_holds_a_lead_below_the_threshold() -> None:
    move = MACHINE.fire(email="a@example.com", stage="awareness", trigger="qualify", score=19)
    assert not move.moved
    assert move.dest == "awareness"
    assert move.refused_by == "score >= 20"
    move = MACHINE.fire(email="a@example.com", stage="awareness", trigger="qualify", score=20)
    assert move.moved and move.dest == "consideration"


def test_unknown_trigger_and_unknown_stage_are_errors() -> None:
    with pytest.raises(InvalidTransition, match="unknown trigger"):
        MACHINE.fire(email="a@example.com", stage="awareness", trigger="teleport")
    with pytest.raises(InvalidTransition, match="unknown stage"):
        MACHINE.fire(email="a@example.com", stage="limbo", trigger="qualify")


def test_churn_is_reachable_from_every_customer_stage_and_reactivation_comes_back() -> None:
    for stage in ("onboarding", "engagement", "retention", "loyalty", "advocacy"):
        assert MACHINE.destination(stage, "churn") == "churned"
    for stage in ("awareness", "consideration", "decision", "purchase"):
        assert not MACHINE.allows(stage, "churn")
    assert MACHINE.destination("churned", "reactivate") == "engagement"


def test_the_shared_machine_keeps_no_contact_attached() -> None:
    for n in range(100):
        MACHINE.fire(
            email=f"c{n}@example.com",
            stage="decision",
            trigger="purchase",
            score=n,
            attributes={"plan": "pro"},
        )
    (subject,) = MACHINE._machine.models  # its one subject, emptied after each trigger
    assert (subject.email, subject.score, subject.attributes) == ("", 0, {})


def test_a_guard_that_raises_leaves_the_machine_ready_for_the_next_contact() -> None:
    def explodes(subject: object) -> bool:
        raise RuntimeError("guard bug")

    journey = Journey(
        stages=(Stage("a", "buyer"), Stage("b", "buyer")),
        transitions=(
            Transition("go", ("a",), "b", (Guard("explodes", explodes),)),
            Transition("jump", ("a",), "b"),
        ),
        initial="a",
    )
    machine = StageMachine(journey)
    with pytest.raises(RuntimeError, match="guard bug"):
        machine.fire(email="x@example.com", stage="a", trigger="go", score=5)
    (subject,) = machine._machine.models
    assert (subject.email, subject.score) == ("", 0)
    assert machine.fire(email="y@example.com", stage="a", trigger="jump").dest == "b"


def test_a_journey_that_goes_backward_without_saying_so_is_rejected_with_every_problem() -> None:
    journey = Journey(
        stages=(Stage("a", "buyer"), Stage("b", "buyer")),
        transitions=(
            Transition("back", ("b",), "a"),
            Transition("lost", ("a",), "nowhere"),
        ),
        initial="zero",
    )
    with pytest.raises(WorkflowDefinitionError) as info:
        StageMachine(journey)
    problems = info.value.problems
    assert len(problems) == 3
    assert any("backward" in p for p in problems)
    assert any("'nowhere'" in p for p in problems)
    assert any("initial stage 'zero'" in p for p in problems)
