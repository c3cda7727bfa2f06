"""A harness used wrongly says so: never an expectation that passes whatever happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from engine import Workflow, build_registry, lifecycle_journey, on_event, send_email, wait
from engine.testing import JourneyAssertionError, Simulation, check_golden
from tests.language_support import TEMPLATES
from workflows.rules import RULES

pytest_plugins = ["pytester"]

TRIAL = Workflow(
    "hp_trial",
    trigger=on_event("trial.started"),
    goals=[on_event("order.completed")],
    steps=[
        send_email("trial_offer", id="offer"),
        wait(days=2),
        send_email("trial_reminder", id="reminder"),
    ],
)
WEBINAR = Workflow(
    "hp_webinar",
    trigger=on_event("webinar.attended"),
    steps=[send_email("guide", id="recording")],
)


@pytest.fixture
def sim() -> Iterator[Simulation]:
    registry = build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=[TRIAL, WEBINAR],
        templates_dir=TEMPLATES,
    )
    with Simulation(registry) as sim:
        sim.track("ana@example.com", "trial.started", timezone="Europe/Madrid")
        sim.advance(days=3)
        yield sim


def test_expecting_no_email_of_a_name_that_names_nothing_is_refused(sim: Simulation) -> None:
    # Given Ana got the offer and the reminder of hp_trial
    sim.expect_email("ana@example.com", "reminder", workflow="hp_trial", at_local="10:00")
    # When a test expects none of a misspelt step, workflow, or another workflow's step
    # Then each is refused rather than passing whatever the workflows did
    with pytest.raises(JourneyAssertionError, match="did you mean 'reminder'"):
        sim.expect_email("ana@example.com", "remider", times=0)
    with pytest.raises(JourneyAssertionError, match="no workflow 'hp_tria'; did you mean"):
        sim.expect_email("ana@example.com", "reminder", times=0, workflow="hp_tria")
    with pytest.raises(JourneyAssertionError, match="'hp_webinar' has no email step 'reminder'"):
        sim.expect_email("ana@example.com", "reminder", times=0, workflow="hp_webinar")
    # And a meaningful expectation of none still passes
    sim.expect_email("ana@example.com", "recording", times=0)
    sim.expect_email("ana@example.com", "recording", times=0, workflow="hp_webinar")


def test_expecting_no_email_to_someone_the_simulation_never_saw_is_refused(
    sim: Simulation,
) -> None:
    # A misspelt address got no email: true of every address nobody tracked
    with pytest.raises(JourneyAssertionError, match=r"did you mean 'ana@example.com'"):
        sim.expect_no_email("ana@exmaple.com", "reminder")
    with pytest.raises(JourneyAssertionError, match=r"no contact 'ana@exmaple.com'"):
        sim.expect_no_email("ana@exmaple.com")
    with pytest.raises(JourneyAssertionError, match="would pass whatever happened"):
        sim.expect_email("ana@exmaple.com", "reminder", times=0)
    with pytest.raises(JourneyAssertionError, match="found 0 \\(the simulation has no contact"):
        sim.expect_email("ana@exmaple.com", "reminder")
    sim.expect_no_email("ana@example.com", "recording")


def test_a_golden_journey_of_nobody_is_refused_not_recorded(
    sim: Simulation, tmp_path: Path
) -> None:
    golden = tmp_path / "golden" / "ana.json"
    with pytest.raises(JourneyAssertionError, match=r"no contact 'ana@exmaple.com'"):
        check_golden(sim.journey("ana@exmaple.com"), golden, update=False)
    assert not golden.exists()  # an empty "[]" golden would match every later run


def test_at_local_reads_a_time_of_day_and_refuses_anything_else(sim: Simulation) -> None:
    # "9:00" is nine o'clock, as wait_until("9:00") reads it
    sim.expect_email("ana@example.com", "offer", at_local="10:00")
    sim.track("bo@example.com", "webinar.attended", timezone="Europe/Lisbon")
    sim.expect_email("bo@example.com", "recording", at_local="9:00")
    for wrong in ("09:00:00", "9am", "24:00", 9):
        with pytest.raises(ValueError, match='is not a local time of day as "HH:MM"'):
            sim.expect_email("ana@example.com", "offer", at_local=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times=-1 is not a count"):
        sim.expect_email("ana@example.com", "offer", times=-1)


def test_advance_refuses_what_is_not_a_move_forward(sim: Simulation) -> None:
    before = sim.now()
    with pytest.raises(ValueError, match="only moves forward, not back by 1 day"):
        sim.advance(days=-1)
    with pytest.raises(ValueError, match="not back by 0:00:01"):
        sim.advance(timedelta(seconds=-1))
    with pytest.raises(TypeError, match="not both"):  # the hours were silently dropped
        sim.advance(timedelta(hours=1), hours=5)
    with pytest.raises(TypeError, match="give them in days"):
        sim.advance(months=1)
    with pytest.raises(TypeError, match="is not a timedelta"):
        sim.advance("1 day")  # type: ignore[arg-type]
    assert sim.now() == before
    # And odd amounts add up to the instant asked for
    sim.advance(hours=0.5, minutes=7, seconds=3)
    assert sim.now() - before == timedelta(minutes=37, seconds=3)


def test_tracking_a_likely_typo_of_an_event_type_is_refused(sim: Simulation) -> None:
    with pytest.raises(JourneyAssertionError, match=r"did you mean 'trial.started'"):
        sim.track("cy@example.com", "trail.started")
    with pytest.raises(JourneyAssertionError, match=r"no contact 'cy@example.com'"):
        sim.contact("cy@example.com")  # nothing was recorded
    # An event type of one's own that resembles nothing known is kept, as in production
    sim.track("cy@example.com", "zz.custom.signal")
    assert "zz.custom.signal (unmapped)" in sim.explain("cy@example.com")


def test_a_step_typo_when_acting_on_an_email_is_named(sim: Simulation) -> None:
    with pytest.raises(JourneyAssertionError, match="did you mean 'reminder'"):
        sim.open_email("ana@example.com", "remnder")


def test_deploy_names_what_is_not_a_workflow(sim: Simulation) -> None:
    with pytest.raises(TypeError, match="deploy takes Workflow"):
        sim.deploy("hp_trial")  # type: ignore[arg-type]


# --- the pytest plugin, as a user's suite runs it ----------------------------------------

A_DIFFERING_GOLDEN = """
class Sim:
    def journey(self, email):
        return [{"at": "2026-01-05T09:00:00+00:00", "kind": "event", "summary": "this run"}]


def test_kim(journeyline_golden):
    journeyline_golden(Sim(), "kim@example.com", "kim")
"""


def test_a_differing_golden_shows_the_test_line_and_the_diff_not_harness_code(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("JOURNEYLINE_UPDATE_GOLDEN", raising=False)
    pytester.makepyfile(test_kim=A_DIFFERING_GOLDEN)
    golden = pytester.path / "golden" / "kim.json"
    golden.parent.mkdir()
    entry = {"at": "2026-01-05T09:00:00+00:00", "kind": "event", "summary": "golden"}
    golden.write_text(json.dumps([entry]))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "-2026-01-05T09:00:00+00:00  event      golden" in out
    assert '>       journeyline_golden(Sim(), "kim@example.com", "kim")' in out
    assert "def check_golden" not in out and "difflib.unified_diff(" not in out


PROJECT_WORKFLOWS = """
from engine import EventRule, Workflow, on_event, send_email

RULES = [EventRule("hp.signed_up", score=1)]
WORKFLOWS = [
    Workflow("hp_only", trigger=on_event("hp.signed_up"), steps=[send_email("hi", id="hi")])
]
"""
PROJECT_TEST = """
def test_mine(journeyline_sim):
    journeyline_sim.track("ana@example.com", "hp.signed_up")
    journeyline_sim.expect_email("ana@example.com", "hi", workflow="hp_only")
"""


def _project(root: Path) -> Path:
    """A user's repository: their own ``workflows`` package (as the README names it) and
    a test of it in ``tests/``."""
    (root / "workflows" / "templates").mkdir(parents=True)
    (root / "workflows" / "__init__.py").write_text(textwrap.dedent(PROJECT_WORKFLOWS))
    (root / "workflows" / "templates" / "hi.j2").write_text(
        "{% block subject %}Hi{% endblock %}{% block text %}Hi{% endblock %}"
        "{% block html %}<p>Hi</p>{% endblock %}"
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_mine.py").write_text(textwrap.dedent(PROJECT_TEST))
    return root / "tests"


@pytest.mark.slow
def test_the_fixture_tests_the_project_workflows_whatever_folder_pytest_runs_from(
    tmp_path: Path,
) -> None:
    # Given a project whose workflows package is called workflows, like Journeyline's own
    tests = _project(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNEYLINE_WORKFLOWS", "CI")}
    # When pytest runs from a folder other than the project's root, Then it tests the
    # project's workflows, not Journeyline's playbook found on the Python path
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_project_workflows_shadowed_by_another_already_imported_is_said(
    pytester: pytest.Pytester,
) -> None:
    # This process imported Journeyline's own workflows; the project holds another one
    _project(pytester.path)
    result = pytester.runpytest("-p", "no:cacheprovider", "tests/test_mine.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'workflows' was already imported from*run pytest from*"])


TWO_JOURNEYS_ONE_NAME = """
class Sim:
    def journey(self, email):
        return [{"at": "2026-01-05T09:00:00+00:00", "kind": "event", "summary": email}]


def test_kim(journeyline_golden):
    journeyline_golden(Sim(), "kim@example.com", "trial")


def test_lou(journeyline_golden):  # copied from test_kim, the name left as it was
    journeyline_golden(Sim(), "lou@example.com", "trial")


def test_kim_again(journeyline_golden):  # the same journey under its name is fine
    journeyline_golden(Sim(), "kim@example.com", "trial")
"""


def test_two_journeys_under_one_golden_name_fail_even_when_updating(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: an update run wrote both, Lou's last, and passed; the next run failed Kim
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("JOURNEYLINE_UPDATE_GOLDEN", "1")
    pytester.makepyfile(test_goldens=TWO_JOURNEYS_ONE_NAME)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*golden journey golden/trial.json was checked in this run for kim@example.com by "
            "test_goldens.py::test_kim, whose journey differs from lou@example.com's*"
        ]
    )
    assert "kim@example.com" in (pytester.path / "golden" / "trial.json").read_text()


@pytest.mark.parametrize("own", ["signup.completed", "webinar.registered", "podcast.listened"])
def test_an_event_type_of_ones_own_that_merely_resembles_a_known_one_is_recorded(
    own: str,
) -> None:
    with Simulation("workflows") as sim:
        recorded = sim.track("una@example.com", own)
        assert not recorded.duplicate
        with pytest.raises(JourneyAssertionError, match=r"did you mean 'webinar\.attended'"):
            sim.track("una@example.com", "webinar.atended")
