"""``split()`` without ``weights``: equal whole weights adding up to 100, as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import (
    Workflow,
    WorkflowDefinitionError,
    build_registry,
    on_event,
    send_email,
    split,
)
from engine.diagram import mermaid
from tests.language_support import TEMPLATES, running, sent


def _load(flow: Workflow) -> None:
    build_registry(workflows=[flow], templates_dir=TEMPLATES, events=["demo.requested"])


def _ab(**variants: object) -> Workflow:
    return Workflow(
        "ab",
        trigger=on_event("demo.requested"),
        steps=[split(id="t", **variants)],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("names", "weights"),
    [
        ("AB", {"A": 50, "B": 50}),
        ("ABC", {"A": 34, "B": 33, "C": 33}),
        ("ABCDEFG", {"A": 15, "B": 15, "C": 14, "D": 14, "E": 14, "F": 14, "G": 14}),
    ],
)
def test_equal_weights_by_default_add_up_to_100(names: str, weights: dict[str, int]) -> None:
    step = split(**{n: [send_email("welcome", id=f"v{n}")] for n in names})
    assert dict(step.weights) == weights
    # And a workflow using it loads (it was refused: "weights must ... add up to 100")
    _load(_ab(**{n: [send_email("welcome")] for n in names}))


def test_a_default_split_draws_each_variant_about_equally(tmp_path: Path) -> None:
    flow = _ab(A=[send_email("demo_invitation", id="a")], B=[send_email("guide", id="b")])
    assert "A/B split A 50%, B 50%" in mermaid(flow)
    with running(tmp_path, [flow]) as (rt, _clock, email):
        for i in range(200):
            rt.track(f"p{i}@example.com", "demo.requested")
        rt.drain()
        steps = sent(email)
    assert len(steps) == 200
    assert 0.4 < steps.count("ab:a") / len(steps) < 0.6


def test_explicit_weights_are_still_checked() -> None:
    flow = _ab(A=[send_email("welcome")], B=[send_email("guide")], weights={"A": 1, "B": 1})
    with pytest.raises(WorkflowDefinitionError) as info:
        _load(flow)
    (problem,) = info.value.problems
    assert "add up to 100, got {'A': 1, 'B': 1} (leave weights= out for equal ones)" in problem
