"""Workflow validation at load: every problem named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import (
    EventRule,
    Workflow,
    WorkflowDefinitionError,
    build_registry,
    on_stage_entered,
    send_email,
    wait,
)

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
