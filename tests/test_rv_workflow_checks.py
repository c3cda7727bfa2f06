"""Review of session 17's load-time checks (engine/workflow_checks.py): valid workflows,
written a little unusually, must still load; the checks' real targets are still refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import (
    Workflow,
    build_registry,
    lifecycle_journey,
    move_stage,
    on_event,
    on_stage_entered,
    send_email,
    wait,
)
from engine.errors import WorkflowDefinitionError
from engine.testing import Simulation
from workflows.rules import RULES


def _registry(templates: Path, *workflows: Workflow):
    return build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=workflows,
        templates_dir=templates,
    )


def _templates(tmp_path: Path, **sources: str) -> Path:
    for name, source in sources.items():
        (tmp_path / f"{name}.j2").write_text(source, encoding="utf-8")
    return tmp_path


def _t(text: str) -> str:
    return f"{{% block subject %}}Hi{{% endblock %}}{{% block text %}}{text}{{% endblock %}}"


LEAD_NURTURE = Workflow(
    "lead_nurture",
    trigger=on_stage_entered("awareness"),
    steps=[
        wait(days=1),
        # Qualifies her if her score has reached the MQL mark (a guarded transition);
        # otherwise she stays a lead and gets the next email.
        move_stage("qualify", id="try_qualify"),
        send_email("hello", id="keep_nurturing"),
    ],
)


def test_a_guarded_move_stage_followed_by_steps_loads(tmp_path: Path) -> None:
    templates = _templates(tmp_path, hello=_t("Hello"))
    _registry(templates, LEAD_NURTURE)  # raised: "the steps written after it never run"


def test_the_steps_after_a_guarded_move_run_for_whom_the_guard_holds_back(
    tmp_path: Path,
) -> None:
    templates = _templates(tmp_path, hello=_t("Hello"))
    with Simulation(_registry(templates, LEAD_NURTURE)) as sim:
        sim.track("ana@example.com", "page.viewed")  # a lead, score well under 20
        sim.advance(days=2)
        sim.expect_stage("ana@example.com", "awareness")
        sim.expect_email("ana@example.com", "keep_nurturing")


def test_an_unguarded_move_out_of_the_stage_before_more_steps_is_still_refused(
    tmp_path: Path,
) -> None:
    templates = _templates(tmp_path, hello=_t("Hello"))
    wf = Workflow(
        "trialist",
        trigger=on_stage_entered("awareness"),
        steps=[wait(days=1), move_stage("evaluate"), send_email("hello")],
    )
    with pytest.raises(WorkflowDefinitionError, match=r"never\s+run"):
        _registry(templates, wf)


@pytest.mark.parametrize(
    "source",
    [
        _t('Your code: {{ data.get("code", "WELCOME10") }}'),
        _t('Your code: {{ data.code or "WELCOME10" }}'),
    ],
    ids=["data.get", "or-default"],
)
def test_a_template_with_its_own_fallback_for_a_data_key_loads(tmp_path: Path, source: str) -> None:
    templates = _templates(tmp_path, promo=source)
    wf = Workflow("promo", trigger=on_event("trial.started"), steps=[send_email("promo")])
    _registry(templates, wf)


def test_a_data_key_printed_bare_and_not_given_is_still_refused(tmp_path: Path) -> None:
    templates = _templates(tmp_path, promo=_t("Your code: {{ data.code }}"))
    wf = Workflow("promo", trigger=on_event("trial.started"), steps=[send_email("promo")])
    with pytest.raises(WorkflowDefinitionError, match=r"data\.code"):
        _registry(templates, wf)
