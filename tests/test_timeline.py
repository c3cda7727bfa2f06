"""A contact's timeline (``journeyline contact``, ``GET /v1/contacts/{email}``) reads in causal
order even when a worker processes an event some time after the API recorded it, as it does
on a real clock: the contact's creation, then the event, then what the event caused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from engine.testing import Simulation


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as simulation:  # the shipped workflows
        yield simulation


def recorded_then_processed(
    sim: Simulation, email: str, event_type: str, *, later: timedelta, **options: object
) -> None:
    """Record an event now and process it ``later``, as the API and a worker do."""
    sim.runtime.track(email, event_type, **options)  # type: ignore[arg-type]
    sim.clock.advance(later)
    sim.runtime.run_until_idle()


def summaries(sim: Simulation, email: str) -> list[str]:
    timeline = sim.timeline(email)
    assert timeline is not None
    return [f"{e.kind}: {e.summary}" for e in timeline.entries]


def test_a_new_contacts_first_event_follows_her_creation_and_precedes_what_it_caused(
    sim: Simulation,
) -> None:
    # Given a new contact whose first event a worker processes a second after it came in
    recorded_then_processed(sim, "ana@example.com", "trial.started", later=timedelta(seconds=1))

    # When her timeline is read, then each event comes before what it caused, and her creation
    # (with what entering her first stage started) before the event that created her; the
    # trial workflow's branches stand in the order its steps ran
    assert summaries(sim, "ana@example.com") == [
        "event: contact.created (processed)",
        "stage: (new) -> awareness by created",
        "enrollment: entered workflow awareness_nurture",
        "action: email awareness_nurture/welcome: sent",
        "event: trial.started (processed)",
        "stage: awareness -> decision by evaluate",
        "enrollment: entered workflow decision_trial",
        "enrollment: workflow decision_trial on_trial?: did trial.started within 2 days? yes: then",
        "action: email decision_trial/offer: sent",
        "enrollment: workflow decision_trial knows_trial_end?: trial_ends_at is set? no: otherwise",
        "enrollment: workflow awareness_nurture exited: left stage awareness",
    ]
    timeline = sim.timeline("ana@example.com")
    assert timeline is not None
    times = [e.at for e in timeline.entries]
    assert times == sorted(times)  # still chronological: an event stands where it acted
    trial = timeline.entries[4]
    assert trial.at == timeline.entries[5].at  # processed with the stage change it caused
    assert trial.details["occurred_at"] == trial.at - timedelta(seconds=1)


def test_an_event_that_occurred_well_before_it_was_processed_says_when(sim: Simulation) -> None:
    # Given an event its source says happened two hours before the engine got it
    start = sim.now()
    sim.track("ben@example.com", "page.viewed", occurred_at=start - timedelta(hours=2))

    # Then the timeline places it where it took effect and says when it occurred
    timeline = sim.timeline("ben@example.com")
    assert timeline is not None
    (viewed,) = [e for e in timeline.entries if e.details.get("type") == "page.viewed"]
    assert viewed.at == start
    occurred = start - timedelta(hours=2)
    assert viewed.summary == f"page.viewed (processed; occurred {occurred:%Y-%m-%d %H:%M} UTC)"
    assert viewed.to_dict()["details"]["occurred_at"] == occurred.isoformat()
