"""Workflow validation at load: every problem named at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from engine import (
    EventRule,
    Guardrails,
    Workflow,
    WorkflowDefinitionError,
    add_tag,
    all_of,
    any_of,
    at_most,
    branch,
    build_registry,
    change_score,
    clicked,
    create_crm_task,
    did_event,
    has_tag,
    move_stage,
    not_,
    on_condition,
    on_event,
    on_schedule,
    on_stage_entered,
    on_stage_left,
    opened,
    quiet_hours,
    send_email,
    send_window,
    set_attribute,
    split,
    wait,
    wait_for_event,
    wait_until,
    wait_until_date,
)
from engine.steps import Split, WaitUntilDate
from engine.workflow import FrequencyCap, Reentry

TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


def test_every_problem_is_reported_together() -> None:
    bad = [
        Workflow(
            "one",
            trigger=on_stage_entered("limbo"),
            steps=[send_email("no_such_template"), wait(days=0)],
        ),
        Workflow("one", trigger=on_stage_entered("awareness"), steps=[]),
    ]
    with pytest.raises(WorkflowDefinitionError) as info:
        build_registry(
            rules=[EventRule("x.y", triggers=("warp",))], workflows=bad, templates_dir=TEMPLATES
        )
    text = "\n".join(info.value.problems)
    assert "unknown trigger 'warp'" in text
    assert "unknown stage 'limbo'" in text
    assert "template 'no_such_template' not found" in text
    assert "longer than zero" in text
    assert "'one' is used twice" in text
    assert "has no steps" in text
    assert len(info.value.problems) >= 6


def test_a_version_changes_with_the_definition() -> None:
    a = Workflow("w", trigger=on_stage_entered("awareness"), steps=[send_email("welcome")])
    b = Workflow(
        "w",
        trigger=on_stage_entered("awareness"),
        steps=[send_email("welcome"), wait(days=1), send_email("guide")],
    )
    same = Workflow("w", trigger=on_stage_entered("awareness"), steps=[send_email("welcome")])
    assert a.version == same.version
    assert a.version != b.version


def _problems(*workflows: Workflow, **options: object) -> list[str]:
    """The problems build_registry reports (it must report them, not crash)."""
    with pytest.raises(WorkflowDefinitionError) as info:
        build_registry(workflows=list(workflows), templates_dir=TEMPLATES, **options)  # type: ignore[arg-type]
    return info.value.problems


def _only(problems: list[str], *words: str) -> None:
    text = "\n".join(problems)
    for expected in words:
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert len(problems) == len(words), text


def _flow(*steps: object, **options: object) -> Workflow:
    return Workflow(
        "typed",
        trigger=options.pop("trigger", on_event("contact.created")),  # type: ignore[arg-type]
        steps=[*steps, send_email("welcome")],  # type: ignore[list-item]
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (wait_for_event("contact.created", timeout=None), "needs a timeout"),  # type: ignore[arg-type]
        (wait_for_event("contact.created", timeout=3), "not 3"),  # type: ignore[arg-type]
        (wait("3 days"), "a wait takes days=, hours=, minutes= or a timedelta, not '3 days'"),  # type: ignore[arg-type]
        (wait(3), "a wait takes days="),  # type: ignore[arg-type]
        (wait_until(9), "time must be 'HH:MM', not 9"),  # type: ignore[arg-type]
        (wait_until(""), "time '' is not HH:MM"),
        (WaitUntilDate("trial_ends_at", 3), "the offset must be a timedelta, not 3"),  # type: ignore[arg-type]
        (wait_until_date("trial_ends_at", time=900), "time must be 'HH:MM' (or left out)"),  # type: ignore[arg-type]
        (
            split(A=[], B=[], weights={"A": "50", "B": "50"}),  # type: ignore[dict-item]
            "weights must be whole numbers",
        ),
        (Split({"A": (), "B": ()}, [50, 50]), "weights must map variant names"),  # type: ignore[arg-type]
        (change_score("5"), "a score change must be a whole number, not '5'"),  # type: ignore[arg-type]
        (create_crm_task("call", due_in=2), "due_in must be a positive timedelta, not 2"),  # type: ignore[arg-type]
        (send_email(None), "the template must be named by a string, not None"),  # type: ignore[arg-type]
        (move_stage(3), "the stage trigger must be a string"),  # type: ignore[arg-type]
        (None, "step 1: None is not a step"),
        (wait, "is not a step"),  # the function, not called
        (branch("yes", then=[add_tag("a")]), "'yes' is not a condition"),  # type: ignore[arg-type]
        (
            branch(all_of(has_tag("a"), lambda c: True), then=[add_tag("a")]),  # type: ignore[arg-type]
            "is not a condition",
        ),
        (branch(did_event("contact.created", within=7)), "needs within= a positive timedelta"),  # type: ignore[arg-type]
        (branch(has_tag("a"), then=[wait_for_event("x", timeout=None)]), "needs a timeout"),  # type: ignore[arg-type]
    ],
)
def test_arguments_of_the_wrong_type_are_problems_not_crashes(step: object, expected: str) -> None:
    # Given a step whose arguments have the wrong type, when the workflow is validated,
    # then the mistake is one problem naming the workflow's file and line
    problems = _problems(_flow(step))
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert f"{Path(__file__)}:" in problems[0]


def test_wrong_types_in_the_workflow_and_guard_rails_are_problems() -> None:
    wrong = _flow(
        trigger="contact.created",
        goals=[on_stage_left("awareness")],
        entry_if=True,
        reentry=Reentry("after", None),
        cap=FrequencyCap(3, 7),  # type: ignore[arg-type]
        send_window=send_window(9, 17),  # type: ignore[arg-type]
    )
    scheduled = Workflow(
        "scheduled",
        trigger=on_schedule("0 9 * * *", max_delay=60),  # type: ignore[arg-type]
        steps=[send_email("welcome")],
    )
    _only(
        _problems(wrong, scheduled, guardrails=Guardrails(cap=at_most(0, per_days=7))),
        "GUARDRAILS: a frequency cap needs max >= 1",
        "trigger 'contact.created' is not a trigger",
        "goal StageLeft(stage='awareness') is not on_event(...)",
        "True is not a condition",
        "re-entry after a time needs a positive time",
        "a frequency cap needs max >= 1 and a positive window",
        "send window: time 9 is not HH:MM",
        "send window: time 17 is not HH:MM",
        "max_delay must be a positive timedelta, not 60",
    )
    _only(_problems(guardrails=quiet_hours()), "GUARDRAILS is Window(")  # type: ignore[arg-type]


def test_conditions_naming_unknown_events_or_steps_are_problems() -> None:
    # Given conditions naming an event nothing records and a step the workflow lacks
    flow = Workflow(
        "knows",
        trigger=on_condition(did_event("signup.finished")),
        entry_if=not_(did_event("never.happens")),
        goals=[on_condition(opened("nope"))],
        steps=[
            send_email("welcome", id="hello"),
            wait(days=1),
            branch(
                any_of(clicked("hello"), did_event("x.y", within=timedelta(days=2))),
                then=[send_email("guide")],
            ),
        ],
    )
    # When it is validated, then each is named, with the workflow's file and line
    problems = _problems(flow, events=["x.y"])
    _only(
        problems,
        "condition names unknown event 'signup.finished' (no rule or EVENTS entry)",
        "condition names unknown event 'never.happens'",
        "condition names step 'nope', which is not a step of this workflow (its steps: 'hello'",
    )
    assert all(f"{Path(__file__)}:" in p for p in problems)


def test_conditions_naming_known_events_and_steps_pass() -> None:
    flow = Workflow(
        "knows",
        trigger=on_event("contact.created"),
        goals=[on_condition(all_of(opened("hello"), did_event("email.clicked")))],
        steps=[send_email("welcome", id="hello"), wait(days=1), send_email("guide")],
    )
    rules = [EventRule("trial.started")]
    ok = build_registry(rules=rules, workflows=[flow], templates_dir=TEMPLATES)
    assert list(ok.workflows) == ["knows"]


def test_a_definition_that_cannot_be_versioned_is_a_problem() -> None:
    flow = _flow(set_attribute("seen", object()))
    _only(_problems(flow), "cannot be part of a workflow definition")


def test_a_missing_templates_folder_is_one_problem_not_one_per_email(tmp_path: Path) -> None:
    flows = [
        Workflow(
            f"flow{n}",
            trigger=on_event("page.viewed"),
            steps=[send_email("welcome", id="a"), send_email("guide", id="b")],
        )
        for n in range(3)
    ]
    with pytest.raises(WorkflowDefinitionError) as refused:
        build_registry(
            workflows=flows, templates_dir=tmp_path / "templates", events=["page.viewed"]
        )
    assert refused.value.problems == [
        f"the templates folder {tmp_path / 'templates'} does not exist: 2 email templates "
        "should be there (guide.j2, welcome.j2); create it, or point "
        "JOURNEYLINE_TEMPLATES_DIR at yours"
    ]
    (tmp_path / "templates").mkdir()  # there, but empty: each missing template is named
    with pytest.raises(WorkflowDefinitionError) as refused:
        build_registry(
            workflows=flows, templates_dir=tmp_path / "templates", events=["page.viewed"]
        )
    assert len(refused.value.problems) == 6


def test_a_wait_for_an_event_without_a_timeout_is_reported_with_the_other_problems() -> None:
    flows = [
        Workflow(
            "waits",
            trigger=on_event("x.y"),
            steps=[wait_for_event("x.y"), send_email("no_such_template")],
        ),
        Workflow("waits", trigger=on_event("x.y"), steps=[send_email("welcome")]),
    ]
    with pytest.raises(WorkflowDefinitionError) as info:
        build_registry(rules=[EventRule("x.y")], workflows=flows, templates_dir=TEMPLATES)
    text = "\n".join(info.value.problems)
    assert "a wait for an event needs a timeout" in text
    assert "template 'no_such_template' not found" in text
    assert "'waits' is used twice (first at " in text
