"""Golden journeys: free of row ids, and never silently recorded in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Workflow, build_registry, lifecycle_journey, on_event, send_email, wait
from engine.testing import Simulation, check_golden
from tests.language_support import TEMPLATES
from workflows.rules import RULES

pytest_plugins = ["pytester"]

WEBINAR = Workflow(
    "webinar_follow_up",
    trigger=on_event("webinar.attended"),
    goals=[on_event("demo.requested")],
    steps=[
        send_email("guide", id="recording"),
        wait(days=2),
        send_email("demo_invitation", id="invite"),
    ],
)


def _kims_journey(*, others_first: bool) -> list[dict[str, str]]:
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[WEBINAR], templates_dir=TEMPLATES
    )
    with Simulation(registry) as sim:
        if others_first:  # rows for someone else: every id of Kim's rows shifts
            sim.track("lou@example.com", "webinar.attended")
            sim.track("lou@example.com", "demo.requested")
            sim.contact_import("max@example.com")
        sim.track("kim@example.com", "webinar.attended")
        sim.advance(days=1)
        sim.track("kim@example.com", "demo.requested")  # the goal: converted
        return sim.journey("kim@example.com")


def test_a_golden_journey_holds_no_row_ids(tmp_path: Path) -> None:
    # Given Kim's journey recorded alone
    golden = tmp_path / "golden" / "kim.json"
    check_golden(_kims_journey(others_first=False), golden, update=False)
    summaries = [entry["summary"] for entry in json.loads(golden.read_text())]
    assert "workflow webinar_follow_up converted: goal reached: demo.requested (event)" in (
        summaries
    )
    # When the same test first tracks other contacts, Then her journey matches it still
    check_golden(_kims_journey(others_first=True), golden, update=False)


# --- the journeyline_golden fixture -----------------------------------------------------

A_TEST = """
class Sim:  # what the fixture reads of a Simulation: the journey
    def journey(self, email):
        return [{"at": "2026-01-05T09:00:00+00:00", "kind": "event", "summary": email}]


def test_kim(journeyline_golden):
    journeyline_golden(Sim(), "kim@example.com", "kim")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's test suite using the fixture, run where neither CI nor an update is set."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("JOURNEYLINE_UPDATE_GOLDEN", raising=False)
    pytester.makepyfile(test_kim=A_TEST)
    return pytester


def test_in_ci_a_missing_golden_fails_and_says_how_to_record_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*no golden journey golden/kim.json for kim@example.com (CI is set: a missing "
            "golden fails rather than being recorded)*",
            "*JOURNEYLINE_UPDATE_GOLDEN=1 pytest 'test_kim.py::test_kim'*",
        ]
    )
    assert not (suite.path / "golden" / "kim.json").exists()


def test_the_strict_option_fails_on_a_missing_golden_outside_ci(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--journeyline-golden=strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no golden journey golden/kim.json*--journeyline-golden=strict*"])


def test_outside_ci_a_missing_golden_is_recorded_and_the_run_says_so(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "false")  # set, but not to a true value
    result = suite.runpytest()
    result.assert_outcomes(passed=1)
    assert (suite.path / "golden" / "kim.json").exists()
    result.stdout.fnmatch_lines(
        [
            "*journeyline golden journeys written*",
            "recorded golden/kim.json (by test_kim.py::test_kim)",
            "check what they hold, and commit them",
        ]
    )
    # And once recorded, a run in CI compares with it and has nothing to report
    monkeypatch.setenv("CI", "true")
    again = suite.runpytest()
    again.assert_outcomes(passed=1)
    assert "golden journeys written" not in again.stdout.str()


def test_update_records_a_missing_golden_even_in_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("JOURNEYLINE_UPDATE_GOLDEN", "1")
    result = suite.runpytest()
    result.assert_outcomes(passed=1)
    assert (suite.path / "golden" / "kim.json").exists()
    result.stdout.fnmatch_lines(["recorded golden/kim.json*"])
