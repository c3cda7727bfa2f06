"""The README's workflow example is real code: it must load, validate and run."""

from __future__ import annotations

import re
from pathlib import Path

from engine import build_registry, lifecycle_journey
from tests.language_support import TEMPLATES, running, sent
from workflows.rules import RULES

README = Path(__file__).parent.parent / "README.md"


def _example() -> dict:
    text = README.read_text()
    block = re.search(r"```python\n(# workflows/decision\.py\n.*?)```", text, re.S)
    assert block, "the README lost its workflow example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    return namespace


def test_the_readme_workflow_validates() -> None:
    trial = _example()["TRIAL"]
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[trial], templates_dir=TEMPLATES
    )
    assert "trial_conversion" in registry.workflows


def test_the_readme_workflow_runs(tmp_path: Path) -> None:
    trial = _example()["TRIAL"]
    with running(tmp_path, [trial]) as (rt, clock, email):
        rt.track(
            "ana@example.com",
            "trial.started",
            attributes={"trial_ends_at": "2026-03-12"},
            timezone="Europe/Madrid",
        )
        rt.run_until_idle()
        clock.advance(days=14)
        for _ in range(10):
            rt.run_until_idle()
            clock.advance(hours=12)
        steps = sent(email)
        assert steps[0] in ("trial_conversion:offer_a", "trial_conversion:offer_b")
        assert "trial_conversion:reminder" in steps
        assert steps[-1] == "trial_conversion:nudge"
