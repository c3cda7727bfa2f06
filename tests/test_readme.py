"""The README's workflow example is real code: it must load, validate and run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


# --- the harness example: a workflow, its test, and the failure it prints -------------------


def _block(first_line: str, fence: str = "python") -> str:
    text = README.read_text()
    found = re.search(rf"```{fence}\n({re.escape(first_line)}.*?)```", text, re.S)
    assert found, f"the README lost its block starting {first_line!r}"
    return found.group(1)


def _webinar_test(source: str | None = None):  # type: ignore[no-untyped-def]
    """The README's workflow added to the shipped playbook, and the README's test function."""
    import workflows
    from engine import build_registry
    from engine.testing import Simulation

    flows: dict = {}
    exec(compile(_block("# workflows/webinar.py\n"), "README.md", "exec"), flows)
    registry = build_registry(
        journey=workflows.JOURNEY,
        rules=workflows.RULES,
        workflows=[*workflows.WORKFLOWS, *flows["WORKFLOWS"]],
        templates_dir=TEMPLATES,
        events=workflows.EVENTS,
        guardrails=workflows.GUARDRAILS,
    )
    tests: dict = {}
    code = source if source is not None else _block("# tests/test_webinar.py\n")
    exec(compile(code, "README.md", "exec"), tests)
    (test,) = [f for name, f in tests.items() if name.startswith("test_")]
    return test, lambda: Simulation(registry)


def test_the_readme_harness_example_passes_and_checks_its_golden(tmp_path: Path) -> None:
    from engine.testing import check_golden

    test, simulation = _webinar_test()
    golden = tmp_path / "golden" / "kim_webinar.json"

    def journeyline_golden(sim, email: str, name: str) -> None:  # type: ignore[no-untyped-def]
        check_golden(sim.journey(email), tmp_path / "golden" / f"{name}.json", update=False)

    for _ in range(2):  # the first run writes the golden file, the second compares with it
        with simulation() as sim:
            test(sim, journeyline_golden)
    assert '"summary": "email webinar_follow_up/invite: sent"' in golden.read_text()


def test_the_readme_shows_the_failure_the_harness_really_prints() -> None:
    from engine.testing import JourneyAssertionError

    source = _block("# tests/test_webinar.py\n")
    assert 'at_local="10:00"' in source
    test, simulation = _webinar_test(source.replace('at_local="10:00"', 'at_local="09:00"'))
    with simulation() as sim, pytest.raises(JourneyAssertionError) as failure:
        test(sim, lambda *args: None)
    name = f"{JourneyAssertionError.__module__}.{JourneyAssertionError.__name__}"
    first, *rest = str(failure.value).splitlines()
    printed = [f"E       {name}: {first}", *(f"E       {line}".rstrip() for line in rest)]
    shown = _block("E       engine.testing", fence="text").rstrip("\n").splitlines()
    assert shown == printed
