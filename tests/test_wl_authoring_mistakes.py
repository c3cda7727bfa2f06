"""A new author's mistakes, refused when the workflows load (and by ``journeyline workflows
check``) with the file, the line and the fix, rather than found at send time: an empty send
window, a goal or exit already met at entry, a move out of a workflow's own stage before
more steps, move_stage steps bouncing a contact between stages, a misspelt data key; and the
diagram: goals, exits and rules shown, labels escaped, webhook URLs cut to their origin."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import (
    Guardrails,
    Workflow,
    all_of,
    any_of,
    at_most,
    attribute,
    branch,
    build_registry,
    call_webhook,
    did_event,
    exit_workflow,
    has_tag,
    lifecycle_journey,
    move_stage,
    on_condition,
    on_event,
    on_stage_entered,
    opened,
    quiet_hours,
    reenter_always,
    send_email,
    send_window,
    split,
    stage_in,
    wait,
    wait_for_event,
)
from engine.cli import _register_subcommands, app
from engine.diagram import mermaid
from engine.errors import WorkflowDefinitionError
from engine.workflow_checks import workflow_set_problems
from tests.language_support import TEMPLATES, running, sent
from workflows.rules import RULES

_register_subcommands()


def problems(*workflows: Workflow, guardrails: Guardrails | None = None) -> list[str]:
    try:
        build_registry(
            journey=lifecycle_journey(mql_threshold=20),
            rules=RULES,
            workflows=workflows,
            templates_dir=TEMPLATES,
            guardrails=guardrails,
        )
    except WorkflowDefinitionError as exc:
        return exc.problems
    return []


def _one(found: Sequence[str], *words: str) -> str:
    matching = [p for p in found if all(w in p for w in words)]
    assert len(matching) == 1, found
    return matching[0]


# --- send windows and quiet hours -----------------------------------------------------------


def test_a_send_window_of_zero_length_is_refused_as_it_would_hold_its_emails_for_ever(
    tmp_path: Path,
) -> None:
    # Given a workflow whose send window starts and ends at 09:00: no time is inside it
    stuck = Workflow(
        "stuck",
        trigger=on_event("trial.started"),
        send_window=send_window("09:00", "09:00"),
        steps=[send_email("guide", id="g")],
    )
    # Then loading refuses it, naming the file and the fix
    problem = _one(problems(stuck), "send window")
    assert "09:00-09:00 is zero length" in problem
    assert "test_wl_authoring_mistakes.py:" in problem
    assert 'send_window("09:00", "18:00")' in problem
    # (a window that wraps midnight is fine: 18:00 to 09:00 is the night)
    night = Workflow(
        "night",
        trigger=on_event("trial.started"),
        send_window=send_window("18:00", "09:00"),
        steps=[send_email("guide", id="g")],
    )
    assert problems(night) == []


def test_quiet_hours_of_zero_length_are_refused() -> None:
    found = problems(guardrails=Guardrails(quiet_hours=quiet_hours("22:00", "22:00")))
    assert "zero length, so it holds nothing" in _one(found, "GUARDRAILS quiet hours")


def test_a_cap_of_zero_says_what_it_was_and_what_to_write() -> None:
    capped = Workflow(
        "capped",
        trigger=on_event("trial.started"),
        cap=at_most(0, per_days=7),
        steps=[send_email("guide")],
    )
    problem = _one(problems(capped), "frequency cap")
    assert "not at most 0 per 7 days" in problem and "at_most(3, per_days=7)" in problem


# --- waits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "shown"), [(timedelta(0), "0 seconds"), (timedelta(days=-1), "minus 1 day")]
)
def test_a_wait_for_an_event_with_no_time_to_wait_says_so(timeout: timedelta, shown: str) -> None:
    flow = Workflow(
        "hasty",
        trigger=on_event("trial.started"),
        steps=[
            send_email("guide"),
            wait_for_event("order.completed", timeout=timeout, on_timeout=[send_email("welcome")]),
        ],
    )
    problem = _one(problems(flow), "wait for an event")
    # It has a timeout: the problem is its length (it said "needs a timeout (it has no exit)")
    assert f"needs a timeout longer than zero, not {shown}" in problem
    assert "step 2-wait_for_event (WaitForEvent)" in problem


def test_a_nested_step_is_named_by_its_id_in_the_program_not_its_place_in_its_list() -> None:
    flow = Workflow(
        "nested",
        trigger=on_event("trial.started"),
        steps=[
            send_email("guide", id="first"),
            branch(opened(), then=[send_email("welcom")], otherwise=[send_email("guide")]),
        ],
    )
    problem = _one(problems(flow), "'welcom' not found")
    # "step 1" was which step 1? The branch's "then" list's first one.
    assert "step 2-branch/then/1-send_email (SendEmail)" in problem
    assert "(did you mean 'welcome'?)" in problem


def test_misspelt_names_get_a_did_you_mean() -> None:
    flow = Workflow(
        "typos",
        trigger=on_stage_entered("purchased"),
        steps=[
            branch(did_event("trial.startd"), then=[send_email("guide")]),
            wait_for_event("order.complete", timeout=timedelta(days=1)),
            send_email("guide", id="after"),
        ],
    )
    found = problems(flow)
    assert "(did you mean 'purchase'?)" in _one(found, "unknown stage 'purchased'")
    assert "(did you mean 'trial.started'?)" in _one(found, "unknown event 'trial.startd'")
    assert "(did you mean 'order.completed'?)" in _one(found, "'order.complete'")


# --- goals and exits met at entry -----------------------------------------------------------

PRO = attribute("plan", "pro")


def test_an_exit_identical_to_the_condition_trigger_is_refused(tmp_path: Path) -> None:
    def flow(**rules: object) -> Workflow:
        return Workflow(
            "pro_tips",
            trigger=on_condition(PRO),
            steps=[send_email("guide", id="tips"), wait(days=1), send_email("welcome", id="more")],
            **rules,  # type: ignore[arg-type]
        )

    # Given an exit on the very condition that starts the workflow
    broken = flow(exit_when=[on_condition(PRO)])
    # Then every contact would exit at once, and loading says so
    problem = _one(problems(broken), "exit on_condition(plan = 'pro')")
    assert "already holds for every contact it enrols (the trigger's condition)" in problem
    assert "each exits at entry and no step ever runs" in problem
    # (What it refuses is real: loaded anyway, the contact exits and gets nothing)
    with running(tmp_path, [flow()]) as (rt, _clock, email):
        rt.registry.workflows["pro_tips"] = broken
        rt.track("ann@example.com", "page.viewed", attributes={"plan": "pro"})
        rt.drain()
        assert sent(email, "ann@example.com") == []


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        # a goal that one side of an any_of, met by a part of the trigger's all_of
        (
            {
                "trigger": on_condition(all_of(PRO, has_tag("x"))),
                "goals": [on_condition(any_of(has_tag("x"), has_tag("y")))],
            },
            "each converts at entry",
        ),
        # the entry rule as the goal
        ({"entry_if": PRO, "goals": [on_condition(PRO)]}, "(entry_if)"),
        # the trigger's own stage
        (
            {
                "trigger": on_stage_entered("decision"),
                "exit_when": [on_condition(stage_in("decision", "purchase"))],
            },
            "she has just entered decision",
        ),
    ],
)
def test_goals_and_exits_already_met_at_entry_are_refused(
    rules: dict[str, object], words: str
) -> None:
    flow = Workflow(
        "met",
        trigger=rules.pop("trigger", on_event("trial.started")),  # type: ignore[arg-type]
        steps=[send_email("guide")],
        **rules,  # type: ignore[arg-type]
    )
    assert words in _one(problems(flow), "already holds for every contact")


def test_conditions_that_read_differently_inside_the_workflow_are_not_refused() -> None:
    # did_event without within= counts "since entering" as a goal or an exit, "ever" as a
    # trigger; another attribute value turns true later
    fine = [
        Workflow(
            "did",
            trigger=on_condition(did_event("trial.started")),
            exit_when=[on_condition(did_event("trial.started"))],
            steps=[send_email("guide")],
        ),
        Workflow(
            "free",
            trigger=on_condition(PRO),
            exit_when=[on_condition(attribute("plan", "free"))],
            steps=[send_email("guide")],
        ),
    ]
    assert problems(*fine) == []


# --- move_stage -----------------------------------------------------------------------------


def test_moving_out_of_the_workflows_own_stage_before_more_steps_is_refused(
    tmp_path: Path,
) -> None:
    def flow(*steps: object) -> Workflow:
        return Workflow(
            "hand_over",
            trigger=on_stage_entered("decision"),
            steps=[move_stage("purchase", id="bought"), *steps],  # type: ignore[list-item]
        )

    # Given a decision workflow that first moves the lead to purchase, then emails her
    broken = flow(send_email("guide", id="after_move"))
    # Then loading says the email never goes, and why
    problem = _one(problems(broken), "move_stage('purchase')")
    assert "moves the contact from decision to purchase, which ends this workflow" in problem
    assert "(after_move, ...) never run" in problem
    assert "exit_on_stage_left=False" in problem
    # (What it refuses is real: the move ends the workflow, the email never goes)
    with running(tmp_path, [flow()]) as (rt, _clock, email):
        rt.registry.workflows["hand_over"] = broken
        rt.track("bo@example.com", "trial.started")
        rt.drain()
        assert "hand_over:after_move" not in sent(email, "bo@example.com")
    # A move as the last step of a branch, the others going on, is how it is meant
    fine = Workflow(
        "hand_over",
        trigger=on_stage_entered("decision"),
        steps=[
            send_email("guide"),
            branch(opened(), then=[move_stage("purchase")]),
            wait(days=1),
            send_email("welcome"),
        ],
    )
    kept = Workflow(
        "kept",
        trigger=on_stage_entered("decision"),
        exit_on_stage_left=False,
        steps=[move_stage("purchase"), send_email("guide")],
    )
    assert problems(fine, kept) == []


def test_a_move_its_stage_does_not_allow_is_refused() -> None:
    flow = Workflow(
        "wrong_move",
        trigger=on_stage_entered("decision"),
        steps=[send_email("guide"), move_stage("activate")],
    )
    problem = _one(problems(flow), "move_stage('activate')")
    assert "never moves anyone here" in problem and "moves only from onboarding" in problem


def _bouncing() -> list[Workflow]:
    return [
        Workflow(
            "churn_them",
            trigger=on_stage_entered("engagement"),
            reentry=reenter_always(),
            steps=[send_email("guide"), move_stage("churn")],
        ),
        Workflow(
            "bring_back",
            trigger=on_stage_entered("churned"),
            reentry=reenter_always(),
            steps=[move_stage("reactivate")],
        ),
    ]


def test_move_stage_steps_bouncing_a_contact_for_ever_are_reported() -> None:
    found = workflow_set_problems(_bouncing(), lifecycle_journey())
    assert len(found) == 1, found
    assert "entering engagement starts 'churn_them', which moves her to churned" in found[0]
    assert "entering churned starts 'bring_back', which moves her to engagement" in found[0]
    # A wait before one of the moves, or a re-entry policy, breaks the loop
    waiting = [
        _bouncing()[0],
        Workflow(
            "bring_back",
            trigger=on_stage_entered("churned"),
            reentry=reenter_always(),
            steps=[wait(days=30), move_stage("reactivate")],
        ),
    ]
    assert workflow_set_problems(waiting, lifecycle_journey()) == []
    once = [_bouncing()[0], Workflow("bring_back", trigger=on_stage_entered("churned"), steps=[])]
    assert workflow_set_problems(once, lifecycle_journey()) == []


def test_workflows_check_reports_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "bouncy_flows"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent("""
        from tests.test_wl_authoring_mistakes import _bouncing
        from workflows import EVENTS, JOURNEY, RULES
        WORKFLOWS = _bouncing()
        """)
    )
    (package / "templates").symlink_to(TEMPLATES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "bouncy_flows")
    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["workflows", "check"])
    assert result.exit_code == 1, result.output
    assert "move_stage steps loop for ever" in result.output
    assert "1 problem(s) in bouncy_flows" in result.output


# --- data given to templates ----------------------------------------------------------------


def test_a_misspelt_data_key_and_a_missing_one_are_refused() -> None:
    # trial_offer reads data.discount and data.code, each with a default
    typo = Workflow(
        "typo",
        trigger=on_event("trial.started"),
        steps=[send_email("trial_offer", data={"dicount": 30, "code": "X"})],
    )
    problem = _one(problems(typo), "'dicount'")
    assert "is never read by template 'trial_offer' (did you mean 'discount'?)" in problem
    # A key it does not read and that looks like none it does is the author's business
    extra = Workflow(
        "extra",
        trigger=on_event("trial.started"),
        steps=[send_email("trial_offer", data={"discount": 30, "campaign": "spring"})],
    )
    assert problems(extra) == []


def test_a_data_key_printed_without_a_default_must_be_given(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "coupon.j2").write_text(
        "{% block subject %}Your code{% endblock %}"
        "{% block text %}Code: {{ data.code }}. {% if data.note %}{{ data.note }}{% endif %}"
        "{{ data.sign | default('Acme') }} {{ data.price * 1.2 }}{% endblock %}"
    )

    def load(data: dict[str, object]) -> list[str]:
        flow = Workflow(
            "coupon",
            trigger=on_event("trial.started"),
            steps=[send_email("coupon", data=data)],
        )
        try:
            build_registry(rules=RULES, workflows=[flow], templates_dir=templates)
        except WorkflowDefinitionError as exc:
            return exc.problems
        return []

    problem = _one(load({}), "data.code")
    assert "this step does not give (data={}): it would print empty" in problem
    # data.price * 1.2 fails to render at send time for every contact (PermanentConnectorError)
    assert "fails to render" in _one(load({"code": "SPRING"}), "data.price")
    assert load({"code": "SPRING", "price": 10}) == []  # note and sign are guarded


# --- the diagram ----------------------------------------------------------------------------


def _nested() -> Workflow:
    return Workflow(
        "drawn",
        trigger=on_event("trial.started", plan='pro "max"'),
        goals=[on_event("order.completed"), on_stage_entered("purchase")],
        exit_when=[on_condition(attribute("plan", "free"))],
        cap=at_most(2, per_days=7),
        send_window=send_window("09:00", "18:00", weekdays_only=True),
        steps=[
            split(
                A=[send_email("trial_offer", id="offer_a")],
                B=[send_email("trial_offer", id="offer_b")],
                id="offer_test",
            ),
            wait_for_event(
                "order.completed",
                timeout=timedelta(days=4),
                id="bought?",
                on_timeout=[
                    branch(
                        opened("offer_a"),
                        then=[call_webhook("https://hooks.slack.com/services/T0/B0/SECRET")],
                        otherwise=[exit_workflow('gave up <"b">', id="bye")],
                    )
                ],
            ),
        ],
    )


def test_the_diagram_shows_goals_exits_and_rules_and_escapes_labels() -> None:
    diagram = mermaid(_nested())
    lines = diagram.splitlines()
    assert lines[0] == "flowchart TD"
    # Every label is one quoted string: a double quote or markup inside is an entity code
    for line in lines[1:]:
        assert re.fullmatch(r'  (\w+(\(\[|\[)"[^"<>]*"(\]\)|\])|\w+ (-- \w+ )?--> \w+)', line), line
    assert "where plan = 'pro #quot;max#quot;'" in diagram
    assert 'bye: exit: gave up #lt;#quot;b#quot;#gt;"]' in diagram
    # Goals, exits and the rules around the steps are drawn; an exit step leads to "exited"
    assert 'converted(["converted (goal): event order.completed; enters stage purchase"])' in (
        diagram
    )
    assert "exited([\"exited: plan = 'free'\"])" in diagram
    assert (
        'rules["at most 2 marketing emails per 7 days; sends 09:00-18:00 on weekdays '
        "(contact's time zone)\"]"
    ) in diagram
    exit_node = next(line.split("[")[0].strip() for line in lines if "bye: exit" in line)
    assert f"  {exit_node} --> exited" in lines
    # The wait is a step with its timeout, and both of its ways out are drawn
    assert "bought?: wait for order.completed (up to 4 days)" in diagram
    assert any(" -- event --> " in line for line in lines)
    assert any(" -- timeout --> " in line for line in lines)


def test_the_diagram_shows_a_webhook_by_its_origin_only() -> None:
    diagram = mermaid(_nested())
    assert "SECRET" not in diagram and "/services/" not in diagram
    assert "webhook https://hooks.slack.com/…" in diagram


def test_a_stage_bound_workflow_shows_that_leaving_its_stage_exits_it() -> None:
    flow = Workflow("bound", trigger=on_stage_entered("decision"), steps=[send_email("guide")])
    assert 'exited(["exited: leaves stage decision"])' in mermaid(flow)


def test_live_counts_are_drawn_on_the_wait_they_are_in_not_the_email_after_it() -> None:
    flow = Workflow(
        "drip",
        trigger=on_event("trial.started"),
        steps=[
            send_email("guide", id="a"),
            wait(days=2, id="pause"),
            send_email("welcome", id="b"),
            wait_for_event("order.completed", timeout=timedelta(days=3), id="bought?"),
            branch(opened(), then=[wait(days=1)], otherwise=[wait(days=2)], id="engaged?"),
            send_email("guide", id="c"),
        ],
    )
    ids = [node.id for node in flow.program]
    # An enrollment parked in a plain wait has the step after it as its position
    counts = {ids.index("b"): 2, ids.index("bought?"): 1, ids.index("c"): 4}
    lines = mermaid(flow, counts).splitlines()
    assert any(line.endswith('pause: wait 2 days<br/>2 waiting"]') for line in lines), lines
    assert any(line.endswith('b: email welcome"]') for line in lines), lines  # not "2 here"
    assert any("(up to 3 days)<br/>1 waiting" in line for line in lines), lines
    # Two waits lead to c: which one they are in is not known from here
    assert any(line.endswith('c: email guide<br/>4 due next"]') for line in lines), lines


def test_a_playbook_whose_moves_bounce_for_ever_does_not_load() -> None:
    # The worker refuses it at start as `workflows check` does, not at the first event
    with pytest.raises(WorkflowDefinitionError, match="move_stage steps loop for ever"):
        build_registry(
            journey=lifecycle_journey(),
            rules=RULES,
            workflows=_bouncing(),
            templates_dir=TEMPLATES,
        )
