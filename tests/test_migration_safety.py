"""Migrating enrollments to a new workflow version never re-runs a step they passed.

A step id given by the author (``id="guide"``) names one step across versions; a generated
one (``3-send_email``) only names a position, so an enrollment may land on it only if the
new version's step there is the same step. The CLI preview says where enrollments are and
why any are refused.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import (
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    send_email,
    wait,
    wait_for_event,
)
from engine.cli import _register_subcommands, app
from engine.db import transaction
from engine.testing import Simulation
from engine.versions import apply_migration, plan_migration
from tests.language_support import TEMPLATES
from workflows.rules import RULES

_register_subcommands()

V1_STEPS = """
    send_email("welcome"),
    wait(days=2),
    send_email("guide"),
    wait(days=2),
    send_email("trial_offer"),
"""
# An email and a wait inserted at the top shift every generated id below them
V3_STEPS = (
    """
    send_email("demo_invitation"),
    wait(hours=1),
"""
    + V1_STEPS
)
# An email appended at the end leaves the generated ids above it as they were
V2_STEPS = (
    V1_STEPS
    + """
    wait(days=2),
    send_email("demo_invitation"),
"""
)
SOURCE = """
from engine import Workflow, on_event, send_email, wait
from workflows.rules import RULES

DRIP = Workflow("drip", trigger=on_event("demo.requested"), steps=[{steps}])
WORKFLOWS = [DRIP]
"""


def drip(steps: str) -> Workflow:
    namespace: dict = {}
    exec(SOURCE.format(steps=steps), namespace)
    return namespace["DRIP"]  # type: ignore[no-any-return]


V1, V2, V3 = drip(V1_STEPS), drip(V2_STEPS), drip(V3_STEPS)


def registry(*workflows: Workflow):  # type: ignore[no-untyped-def]
    return build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=workflows, templates_dir=TEMPLATES
    )


def templates_sent(sim: Simulation, to: str) -> list[str]:
    return [s.message.headers["X-Journeyline-Template"] for s in sim.emails(to)]


def migrate(sim: Simulation, *workflows: Workflow):  # type: ignore[no-untyped-def]
    """Deploy ``workflows`` and move the enrollments of older versions of ``drip``, through
    the engine's own API (as ``journeyline workflows migrate drip --apply``)."""
    sim.runtime.registry = registry(*workflows)
    with transaction(sim.runtime.db) as session:
        plan = plan_migration(session, sim.runtime.registry, "drip")
        apply_migration(session, plan)
    return plan


def test_a_generated_id_that_moved_with_its_position_is_refused_and_nothing_is_resent() -> None:
    with Simulation(registry(V1)) as sim:
        # Given Ann got the welcome on version 1 and waits before the guide (3-send_email)
        sim.track("ann@example.com", "demo.requested")
        assert templates_sent(sim, "ann@example.com") == ["welcome"]
        # When version 3 inserts two steps at the top and her enrollment is migrated
        plan = migrate(sim, V3)
        # Then it is refused: 3-send_email is the welcome in version 3, not the guide
        assert dict(plan.landing) == {}
        assert dict(plan.refused) == {f"{V1.version}@3-send_email": 1}
        reason = plan.reasons[f"{V1.version}@3-send_email"]
        assert (
            f"step 3-send_email is email guide in version {V1.version} and email welcome in "
            f"version {V3.version}"
        ) in reason
        assert "give the steps explicit ids (id=...) so they can be matched" in reason.lower()
        # And she finishes on version 1 without getting the welcome twice
        sim.advance(days=6)
        assert templates_sent(sim, "ann@example.com") == ["welcome", "guide", "trial_offer"]
        sim.expect_enrollment("ann@example.com", "drip", "completed")


def test_a_generated_id_still_naming_the_same_step_moves() -> None:
    with Simulation(registry(V1)) as sim:
        # Given Bo waits before the guide on version 1
        sim.track("bo@example.com", "demo.requested")
        # When version 2 appends an email at the end, and Bo is migrated
        plan = migrate(sim, V2)
        # Then he lands on the same guide step, and gets the new email at the end, once each
        assert dict(plan.landing) == {"3-send_email": 1}
        assert not plan.refused
        sim.advance(days=8)
        assert templates_sent(sim, "bo@example.com") == [
            "welcome",
            "guide",
            "trial_offer",
            "demo_invitation",
        ]


def test_an_explicit_id_whose_step_changed_kind_is_refused() -> None:
    before = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[send_email("welcome", id="hello"), wait(days=2), send_email("guide", id="next")],
    )
    after = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2),
            wait_for_event("email.opened", timeout=wait(days=1).duration, id="next"),
            send_email("guide", id="guide"),
        ],
    )
    with Simulation(registry(before)) as sim:
        sim.track("cy@example.com", "demo.requested")
        plan = migrate(sim, after)
        assert dict(plan.refused) == {f"{before.version}@next": 1}
        assert "cannot change kind" in plan.reasons[f"{before.version}@next"]


def test_steps_reordered_under_explicit_ids_are_refused() -> None:
    before = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("welcome", id="hello"),
            wait(days=2, id="pause"),
            send_email("guide", id="guide"),
        ],
    )
    # the welcome now comes after the guide: an enrollment past it would get it again
    after = Workflow(
        "drip",
        trigger=on_event("demo.requested"),
        steps=[
            send_email("guide", id="guide"),
            wait(days=2, id="pause"),
            send_email("welcome", id="hello"),
        ],
    )
    with Simulation(registry(before)) as sim:
        sim.track("di@example.com", "demo.requested")
        plan = migrate(sim, after)
        assert dict(plan.refused) == {f"{before.version}@guide": 1}
        assert (
            f"hello (email welcome), which they are past in version {before.version}, "
            f"come after guide in version {after.version}: moving them would run them again"
        ) in plan.reasons[f"{before.version}@guide"]
        sim.advance(days=3)
        assert templates_sent(sim, "di@example.com") == ["welcome", "guide"]


def test_apply_leaves_an_enrollment_that_ran_on_since_the_plan() -> None:
    with Simulation(registry(V1)) as sim:
        sim.track("ed@example.com", "demo.requested")
        sim.runtime.registry = registry(V2)
        with transaction(sim.runtime.db) as session:
            plan = plan_migration(session, sim.runtime.registry, "drip")
        assert plan.movable == 1
        sim.advance(days=2)  # the guide goes out on version 1: the plan's position is stale
        with transaction(sim.runtime.db) as session:
            assert apply_migration(session, plan) == 0
        (enrollment,) = [sim.expect_enrollment("ed@example.com", "drip", "waiting")]
        assert enrollment.version == V1.version


# --- the CLI ----------------------------------------------------------------------------


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulation]:
    """A simulation on version 1 whose database the CLI reads, and ``deploy(steps)``
    writing the workflows module the CLI loads."""
    package = tmp_path / "drip_flows"
    package.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JOURNEYLINE_WORKFLOWS", "drip_flows")
    monkeypatch.setenv("JOURNEYLINE_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps nothing
    monkeypatch.delitem(__import__("sys").modules, "drip_flows", raising=False)
    with Simulation(registry(V1)) as sim:
        monkeypatch.setenv("JOURNEYLINE_DATABASE_URL", sim.runtime.settings.database_url)
        yield sim
    __import__("sys").modules.pop("drip_flows", None)


def _write(tmp_path: Path, steps: str) -> None:
    (tmp_path / "drip_flows" / "__init__.py").write_text(
        textwrap.dedent(SOURCE.format(steps=steps))
    )


def test_the_preview_names_the_wait_they_are_in_and_says_why_they_are_refused(
    deployed: Simulation, tmp_path: Path
) -> None:
    # Given two contacts waiting in the first wait of version 1, before the guide
    deployed.track("ann@example.com", "demo.requested")
    deployed.track("bo@example.com", "demo.requested")
    # When version 3 is deployed and the operator previews the migration
    _write(tmp_path, V3_STEPS)
    result = invoke("workflows", "migrate", "drip")
    assert result.exit_code == 0, result.output
    out = result.output
    # Then the preview says where they are in the words of the workflow
    assert "waiting in 2-wait (wait 2 days), then 3-send_email (email guide)" in out
    # And that they are refused, and why, and what to do
    assert "refused 2 of version" in out
    assert (
        f"step 3-send_email is email guide in version {V1.version} and email welcome in "
        f"version {V3.version}"
    ) in out
    assert "explicit ids (id=...)" in out
    assert "0 would move" in out


def test_the_preview_names_the_step_they_land_on(deployed: Simulation, tmp_path: Path) -> None:
    deployed.track("ann@example.com", "demo.requested")
    _write(tmp_path, V2_STEPS)
    result = invoke("workflows", "migrate", "drip")
    assert result.exit_code == 0, result.output
    assert "3-send_email (email guide)" in result.output
    assert "refused" not in result.output
    assert "1 would move" in result.output
    moved = invoke("workflows", "migrate", "drip", "--apply")
    assert "moved 1 enrollment(s)" in moved.output, moved.output


def test_show_puts_the_older_versions_notice_apart_from_the_diagram(
    deployed: Simulation, tmp_path: Path
) -> None:
    deployed.track("ann@example.com", "demo.requested")
    _write(tmp_path, V2_STEPS)
    result = invoke("workflows", "show", "drip")
    assert result.exit_code == 0, result.output
    # The diagram alone on stdout (it can be piped to a .mmd file) ...
    assert result.stdout.startswith("flowchart TD")
    assert result.stdout.rstrip("\n").endswith("--> done")
    assert "older versions" not in result.stdout
    # ... and the notice on stderr, after a blank line: on a line of its own even where a
    # tool showing the two streams together drops the diagram's last newline
    assert result.stderr.startswith("\n1 enrollment(s) still run older versions:")
    assert (result.stdout + result.stderr).count("--> done\n\n1 enrollment(s)") == 1
    assert "--> done\n1 enrollment(s)" in result.stdout.rstrip("\n") + result.stderr
