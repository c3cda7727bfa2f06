"""Mistakes in a harness expectation are named, not mistaken for a journey that differs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.testing import JourneyAssertionError, Simulation


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation("workflows") as sim:
        sim.track("ana@example.com", "trial.started")
        sim.advance(days=8)
        yield sim


def test_expecting_no_email_of_a_step_that_does_not_exist_is_refused(sim: Simulation) -> None:
    with pytest.raises(JourneyAssertionError, match="did you mean 'reminder'"):
        sim.expect_no_email("ana@example.com", "remider")
    sim.expect_no_email("ana@example.com", "roundup")  # a real step she did not get


def test_expecting_no_email_by_a_subject_nobody_got_yet_is_fine(sim: Simulation) -> None:
    # A subject reads otherwise than a step id: it may rightly have gone to nobody yet
    sim.expect_no_email("ana@example.com", "Your trial ends soon, Ana")


def test_a_missing_email_of_an_unknown_step_says_so(sim: Simulation) -> None:
    with pytest.raises(JourneyAssertionError, match="no workflow has an email step 'remider'"):
        sim.expect_email("ana@example.com", "remider")


def test_an_unknown_workflow_stage_or_status_is_named(sim: Simulation) -> None:
    with pytest.raises(JourneyAssertionError, match="there is no workflow 'decison_trial'"):
        sim.expect_enrollment("ana@example.com", "decison_trial", "waiting")
    with pytest.raises(JourneyAssertionError, match="there is no stage 'decison'"):
        sim.expect_stage("ana@example.com", "decison")
    with pytest.raises(ValueError, match="did you mean 'completed'"):
        sim.expect_enrollment("ana@example.com", "decision_trial", "complete")
