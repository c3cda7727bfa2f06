"""Entry rules and branches read the contact as she stood at the event being applied.

A job applies a contact's pending events one at a time, but all of them are stored before
the first is applied: a rule evaluated for the first must not count the second (or the
attributes it set), or what a workflow does would depend on how events happened to be
batched (one job per event in a quiet hour, several in a busy one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import (
    EventRule,
    Workflow,
    branch,
    build_registry,
    did_event,
    not_,
    on_event,
    send_email,
)
from engine.conditions import attribute
from engine.stages import Guard, Journey, Stage, Transition
from tests.language_support import TEMPLATES, running, sent
from tests.support import contact, make_runtime

TRIAL_NUDGE = Workflow(
    "trial_nudge",
    trigger=on_event("trial.started"),
    entry_if=not_(did_event("order.completed")),
    steps=[send_email("welcome", id="nudge")],
)
PLAN_BRANCH = Workflow(
    "plan_branch",
    trigger=on_event("trial.started"),
    steps=[
        branch(
            did_event("demo.requested"),
            then=[send_email("welcome", id="after_demo")],
            otherwise=[send_email("guide", id="no_demo")],
        )
    ],
)
VIP_BRANCH = Workflow(
    "vip_branch",
    trigger=on_event("trial.started"),
    steps=[
        branch(
            attribute("plan", "enterprise"),
            then=[send_email("welcome", id="vip")],
            otherwise=[send_email("guide", id="regular")],
        )
    ],
)


def _together(rt: object, *events: tuple[str, dict[str, object]]) -> None:
    """Record the events before any is applied, so one job applies them all."""
    for event_type, attributes in events:
        rt.track("ana@example.com", event_type, attributes=attributes or None)  # type: ignore[attr-defined]
    rt.run_until_idle()  # type: ignore[attr-defined]


def test_an_entry_rule_does_not_count_a_later_event_of_the_same_job(tmp_path: Path) -> None:
    with running(tmp_path, [TRIAL_NUDGE]) as (rt, _clock, email):
        _together(rt, ("trial.started", {}), ("order.completed", {}))
        # She had not ordered when her trial started: she entered, as she would have had
        # each event been applied by a job of its own.
        assert sent(email, "ana@example.com") == ["trial_nudge:nudge"]


def test_an_entry_rule_still_counts_an_earlier_event_of_the_same_job(tmp_path: Path) -> None:
    with running(tmp_path, [TRIAL_NUDGE]) as (rt, _clock, email):
        _together(rt, ("order.completed", {}), ("trial.started", {}))
        assert sent(email, "ana@example.com") == []


def test_a_branch_does_not_count_a_later_event_of_the_same_job(tmp_path: Path) -> None:
    with running(tmp_path, [PLAN_BRANCH]) as (rt, _clock, email):
        _together(rt, ("trial.started", {}), ("demo.requested", {}))
        assert sent(email, "ana@example.com") == ["plan_branch:no_demo"]


def test_a_branch_does_not_read_attributes_a_later_event_set(tmp_path: Path) -> None:
    with running(tmp_path, [VIP_BRANCH]) as (rt, _clock, email):
        _together(rt, ("trial.started", {}), ("plan.changed", {"plan": "enterprise"}))
        assert sent(email, "ana@example.com") == ["vip_branch:regular"]


def test_a_stage_guard_does_not_read_attributes_a_later_event_set(tmp_path: Path) -> None:
    # Given a move to "enterprise" guarded by the contact's plan
    journey = Journey(
        stages=(Stage("lead", "buyer"), Stage("enterprise", "buyer")),
        transitions=(
            Transition(
                "qualify",
                ("lead",),
                "enterprise",
                guards=(Guard("on the enterprise plan", _on_enterprise),),
            ),
        ),
        initial="lead",
    )
    registry = build_registry(
        journey=journey,
        rules=[EventRule("demo.requested", triggers=("qualify",)), EventRule("plan.changed")],
        workflows=[],
        templates_dir=TEMPLATES,
    )
    runtime, _clock, _email = make_runtime(f"sqlite:///{tmp_path}/jl.db")
    runtime.registry = registry
    try:
        # When the demo request and the plan change that follows it are applied by one job
        runtime.track("ro@example.com", "demo.requested")
        runtime.track("ro@example.com", "plan.changed", attributes={"plan": "enterprise"})
        runtime.run_until_idle()
        # Then the guard read the plan as it stood at the demo request: no move
        assert contact(runtime, "ro@example.com").stage == "lead"
    finally:
        runtime.close()


def _on_enterprise(subject: Any) -> bool:
    return bool(subject.attributes.get("plan") == "enterprise")
