"""The README's examples are real code and its commands work as written.

The workflow illustration must load, validate and run; the tour, followed literally in a
copy of the playbook, must register its workflow and land the emails it says; every
workflow the README's first sections name or pass to a command must exist.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import build_registry, lifecycle_journey
from engine.testing import midday_zone
from tests.language_support import TEMPLATES, running, sent
from workflows.rules import RULES

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
ILLUSTRATION = "# Illustration (not in the repository): "


def _example() -> dict:
    text = README.read_text()
    block = re.search(rf"```python\n({re.escape(ILLUSTRATION)}.*?)```", text, re.S)
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


# --- the first sections: the two commands, the tour, writing workflows -----------------------


def _section(start: str, end: str) -> str:
    text = README.read_text()
    assert start in text and end in text, f"the README lost {start!r} or {end!r}"
    return text[text.index(start) : text.index(end)]


def _first_sections() -> str:
    return _section("## The two commands", "### Broadcasts")


def _blocks(text: str, fence: str) -> list[str]:
    return re.findall(rf"```{fence}\n(.*?)```", text, re.S)


def _commands(text: str) -> list[tuple[list[str], str]]:
    """Every shell line of ``text``'s bash blocks: its words, and the comment after it."""
    found = []
    for block in _blocks(text, "bash"):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            if command.strip():
                found.append((shlex.split(command), comment.strip()))
    return found


def _shipped_workflows() -> dict:
    import workflows

    return {w.name: w for w in workflows.WORKFLOWS}


def _tour_workflows() -> list:
    namespace: dict = {}
    exec(compile(_block("# workflows/lifecycle.py\n"), "README.md", "exec"), namespace)
    return namespace["WORKFLOWS"]


def test_the_two_commands_are_make_targets() -> None:
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    for words, _ in _commands(_section("## The two commands", "## A five-minute tour")):
        assert words[0] == "make" and words[1] in targets, words


def test_every_workflow_named_in_the_first_sections_exists() -> None:
    # Given the shipped playbook, and the tour's workflow once the tour has added it
    shipped = _shipped_workflows()
    tour = {w.name for w in _tour_workflows()}
    assert not tour & set(shipped), "the tour's workflow must not reuse a shipped name"
    assert not (ROOT / "workflows" / "lifecycle.py").exists(), "the tour creates this file"
    text = _first_sections()
    # Then what "`workflows/x.py` holds `name`" says is so
    held = re.findall(r"`workflows/(\w+)\.py`\s+holds\s+`(\w+)`", text)
    assert held
    for module, name in held:
        assert name in {w.name for w in import_module(f"workflows.{module}").WORKFLOWS}
    # And `workflows show/migrate NAME` names a workflow: a shipped one, or the tour's in the
    # tour; only shipped ones in "Writing workflows", which comes after a tour one may skip
    writing = _section("## Writing workflows", "### Broadcasts")
    for section, known in ((text, set(shipped) | tour), (writing, set(shipped))):
        for words, _ in _commands(section):
            if words[1:2] == ["workflows"] and words[2] in ("show", "migrate"):
                assert words[3] in known, f"no workflow named {words[3]!r}: {words}"


def test_the_writing_workflows_commands_run_on_the_shipped_playbook(tmp_path: Path) -> None:
    from engine.cli import _register_subcommands, app

    _register_subcommands()
    url = f"sqlite:///{tmp_path / 'readme.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    commands = _commands(_section("## Writing workflows", "### Broadcasts"))
    assert commands
    for words, _ in commands:
        assert words[0] == ".venv/bin/journeyline", words
        result = runner.invoke(app, ["--database-url", url, *words[1:]])
        assert result.exit_code == 0, (words, result.output)
    shown = runner.invoke(app, ["--database-url", url, "workflows", "show", "decision_trial"])
    assert shown.output.startswith("flowchart TD")


def test_the_illustration_can_sit_beside_the_shipped_playbook() -> None:
    import workflows

    trial = _example()["TRIAL"]
    assert trial.name not in _shipped_workflows()
    registry = build_registry(
        journey=workflows.JOURNEY,
        rules=workflows.RULES,
        workflows=[*workflows.WORKFLOWS, trial],
        templates_dir=TEMPLATES,
        events=workflows.EVENTS,
        guardrails=workflows.GUARDRAILS,
    )
    assert len(registry.workflows) == len(workflows.WORKFLOWS) + 1


def _apply_diff(path: Path, diff: str) -> None:
    """Apply one README diff hunk (context lines start with a space, new ones with +)."""
    lines = diff.splitlines()
    old = "".join(f"{line[1:]}\n" for line in lines if line.startswith(" "))
    new = "".join(f"{line[1:]}\n" for line in lines if line[:1] in (" ", "+"))
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer holds the README's context:\n{old}"
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_the_tour_followed_literally_registers_its_workflow_and_lands_the_emails(
    tmp_path: Path,
) -> None:
    # Given a copy of the playbook with the tour's step 1 done as written: the new module,
    # and the diff hunks applied to workflows/__init__.py
    tour = _section("## A five-minute tour", "## Writing workflows")
    shutil.copytree(
        ROOT / "workflows", tmp_path / "workflows", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "workflows" / "lifecycle.py").write_text(_block("# workflows/lifecycle.py\n"))
    hunks = _blocks(tour, "diff")
    assert len(hunks) == 2
    for hunk in hunks:
        _apply_diff(tmp_path / "workflows" / "__init__.py", hunk)
    # which ruff accepts as it stands (imports sorted)
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff:
        lint = subprocess.run(
            [ruff, "check", "--config", str(ROOT / "pyproject.toml"), "workflows"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout
    # When every command of the tour runs in that folder, in order (its own SQLite file and
    # outbox), the contact in a zone where it is midday so quiet hours hold nothing back
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLINE_")}
    env |= {"PYTHONPATH": str(tmp_path), "COLUMNS": "250"}
    outputs: list[tuple[list[str], str, str]] = []
    zone = ["--timezone", midday_zone()]  # given to the first track, which creates Ana
    for words, comment in _commands(tour):
        if words[0] == "ls":
            listed = sorted(p.name for p in (tmp_path / words[1]).iterdir())
            outputs.append((words, comment, "\n".join(listed)))
            continue
        assert words[0] == ".venv/bin/journeyline", words
        args = words[1:]
        if args[0] == "track":
            args, zone = [*args, *zone], []
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (words, result.stdout, result.stderr)
        outputs.append((words, comment, result.stdout))
    by_command = {" ".join(words[1:3]): (comment, out) for words, comment, out in outputs}
    # Then the check prints what the README's comment says, the new workflow among them
    comment, out = by_command["workflows check"]
    assert out.strip() == comment == f"{len(_shipped_workflows()) + 1} workflows OK in workflows"
    assert by_command["workflows show"][1].startswith("flowchart TD")
    # And Ana got the five emails the tour describes, the customer reviews among them, and the
    # order ended the new workflow as converted before its pricing email
    emls = [name for name in by_command["outbox/"][1].splitlines() if name.endswith(".eml")]
    assert "five `.eml` files" in tour and len(emls) == 5
    subjects = [
        line
        for name in emls
        for line in (tmp_path / "outbox" / name).read_text().splitlines()
        if line.startswith("Subject:")
    ]
    assert "Subject: What teams like yours say after six months with Acme" in subjects
    story = by_command["contact ana@example.com"][1]
    assert "stage onboarding" in story
    assert "email trial_reviews/reviews: sent" in story
    assert "workflow trial_reviews converted" in story
    assert "trial_reviews/pricing" not in story
    assert "(0)" in by_command["actions --failed"][1]
