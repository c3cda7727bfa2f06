"""A contact's timeline shows every decision the engine recorded, where it happened: the
variant drawn, the branch taken, a wait already over, an event that arrived first or a wait
that timed out, a stage move a guard held back, a migration; what held an email back, once
it went; and, at one instant, causes before their effects (engine/timeline.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import (
    Guardrails,
    Workflow,
    at_most,
    branch,
    build_registry,
    did_event,
    lifecycle_journey,
    move_stage,
    on_event,
    on_schedule,
    quiet_hours,
    send_email,
    split,
    wait,
    wait_for_event,
    wait_until_date,
)
from engine.api.contacts import ContactWithTimeline
from engine.registry import Registry
from engine.testing import JourneyAssertionError, Simulation
from tests.cli_support import cli_env, invoke
from tests.language_support import TEMPLATES
from workflows.rules import RULES

MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _registry(*workflows: Workflow, guardrails: Guardrails | None = None) -> Registry:
    return build_registry(
        journey=lifecycle_journey(),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        guardrails=guardrails,
    )


def summaries(sim: Simulation, email: str) -> list[str]:
    timeline = sim.timeline(email)
    assert timeline is not None
    return [f"{e.kind}: {e.summary}" for e in timeline.entries]


TRIAL = Workflow(
    "trial_nurture",
    trigger=on_event("trial.started"),
    steps=[
        send_email("welcome", id="hello"),
        split(
            A=[send_email("trial_offer", id="offer_a")],
            B=[send_email("trial_offer", id="offer_b")],
            id="split",
        ),
        branch(
            did_event("product.activated"),
            then=[send_email("guide", id="guide")],
            otherwise=[send_email("trial_nudge", id="nudge")],
            id="activated?",
        ),
    ],
)


def test_a_variant_drawn_and_a_branch_taken_show_in_the_order_their_steps_ran() -> None:
    # Given a workflow that sends, draws a variant, then branches, all in one run
    with Simulation(_registry(TRIAL)) as sim:
        sim.track("ana@example.com", "trial.started")

        # Then each decision stands between the email before it and the one it chose
        (offer,) = [e for e in sim.emails("ana@example.com") if e.step.startswith("offer_")]
        variant = offer.step.removeprefix("offer_").upper()
        assert summaries(sim, "ana@example.com")[-7:] == [
            "enrollment: entered workflow trial_nurture",
            "action: email trial_nurture/hello: sent",
            f"enrollment: workflow trial_nurture split: variant {variant}",
            f"action: email trial_nurture/{offer.step}: sent",
            "enrollment: workflow trial_nurture activated?: "
            "did product.activated since entering? no: otherwise",
            "action: email trial_nurture/nudge: sent",
            "enrollment: workflow trial_nurture completed: completed",
        ]
        # And a failed expectation prints them too
        with pytest.raises(JourneyAssertionError) as failure:
            sim.expect_email("ana@example.com", "guide")
        assert f"trial_nurture split: variant {variant}" in str(failure.value)


CHASE = Workflow(
    "demo_chase",
    trigger=on_event("webinar.attended"),
    steps=[
        send_email("guide", id="recording"),
        wait_for_event(
            "demo.requested",
            timeout=timedelta(days=2),
            id="demo?",
            on_event=[send_email("demo_invitation", id="invite")],
            on_timeout=[send_email("trial_nudge", id="chase")],
        ),
    ],
)


def test_an_event_that_arrived_first_comes_after_that_event_and_before_the_path_it_took() -> None:
    # Given a contact who asks for a demo at the instant she attended the webinar (the
    # harness's clock stands still between calls)
    with Simulation(_registry(CHASE)) as sim:
        sim.track("ana@example.com", "webinar.attended")
        sim.track("ana@example.com", "demo.requested")

        # Then the first run's email comes before the demo request, and the path it took after
        assert summaries(sim, "ana@example.com")[2:] == [
            "event: webinar.attended (processed)",
            "enrollment: entered workflow demo_chase",
            "action: email demo_chase/recording: sent",
            "event: demo.requested (processed)",
            "stage: awareness -> decision by evaluate",
            "enrollment: workflow demo_chase demo?: event arrived first (event 3)",
            "action: email demo_chase/invite: sent",
            "enrollment: workflow demo_chase completed: completed",
        ]
        # And a golden journey keeps no row id
        journey = [e["summary"] for e in sim.journey("ana@example.com")]
        assert "workflow demo_chase demo?: event arrived first (event)" in journey


def test_a_wait_that_timed_out_shows_before_the_path_it_took() -> None:
    # Given a contact who never asks for a demo
    with Simulation(_registry(CHASE)) as sim:
        sim.track("bo@example.com", "webinar.attended")
        sim.advance(days=3)

        # Then two days later the timeout, its email and the end stand together, in order
        assert summaries(sim, "bo@example.com")[-3:] == [
            "enrollment: workflow demo_chase demo?: timed out waiting for the event",
            "action: email demo_chase/chase: sent",
            "enrollment: workflow demo_chase completed: completed",
        ]
        timeline = sim.timeline("bo@example.com")
        assert timeline is not None
        assert {e.at for e in timeline.entries[-3:]} == {MONDAY_9 + timedelta(days=2)}


QUALIFY = Workflow(
    "qualify_readers",
    trigger=on_event("page.viewed"),
    steps=[
        wait_until_date("trial_ends_at", days_before=3, id="before_end"),
        move_stage("qualify", id="qualify"),
        send_email("guide", id="more"),
    ],
)


def test_a_wait_already_over_and_a_stage_move_held_back_by_a_guard_show() -> None:
    # Given a lead with no trial end date and a score below the MQL threshold (20)
    with Simulation(_registry(QUALIFY)) as sim:
        sim.track("cy@example.com", "page.viewed")

        # Then the wait went straight on and the guard kept her in awareness, both shown
        shown = summaries(sim, "cy@example.com")
        decisions = [s for s in shown if s.startswith("enrollment: workflow qualify_readers ")]
        assert decisions[0].startswith("enrollment: workflow qualify_readers before_end: ")
        assert decisions[0].endswith("went on")
        assert decisions[1:] == [
            "enrollment: workflow qualify_readers qualify: qualify held by guard score >= 20",
            "enrollment: workflow qualify_readers completed: completed",
        ]
        assert shown.index(decisions[1]) < shown.index("action: email qualify_readers/more: sent")
        sim.expect_stage("cy@example.com", "awareness")


DRIP = Workflow(
    "drip",
    trigger=on_event("page.viewed"),
    steps=[send_email("guide", id="a"), wait(days=1), send_email("welcome", id="b")],
)
DRIP_2 = Workflow(
    "drip",
    trigger=on_event("page.viewed"),
    steps=[send_email("guide", id="a"), wait(days=1), send_email("trial_offer", id="b")],
)


def test_a_migration_shows_between_what_ran_on_each_version() -> None:
    # Given a contact waiting in version 1, moved to version 2 three hours later
    with Simulation(_registry(DRIP)) as sim:
        sim.track("mig@example.com", "page.viewed")
        sim.advance(hours=3)
        sim.deploy(DRIP_2)
        plan = sim.migrate("drip")
        sim.advance(days=2)

        # Then the move stands between the email of version 1 and the one of version 2,
        # and, its note having no time (engine/versions.py), says what is known of when
        timeline = sim.timeline("mig@example.com")
        assert timeline is not None
        shown = [e.summary for e in timeline.entries]
        (moved,) = [e for e in timeline.entries if e.details.get("step") == "(migration)"]
        assert shown.index("email drip/a: sent") < shown.index(moved.summary)
        assert shown.index(moved.summary) < shown.index("email drip/b: sent")
        assert moved.summary.startswith(
            f"workflow drip (migration): moved from version {plan.groups[0].version} "
            f"to {plan.target_version}"
        )
        assert moved.details["time_recorded"] is False
        assert moved.summary.endswith(
            "(time not recorded: after 2026-01-05 09:00 UTC, before 2026-01-06 09:00 UTC)"
        )


CAPPED = Workflow(
    "capped",
    trigger=on_event("page.viewed"),
    steps=[send_email("guide", id="w1"), send_email("welcome", id="w2")],
)


def test_a_held_email_once_sent_still_says_what_held_it() -> None:
    # Given a cap of one email a day, and a workflow that writes two at once
    once_a_day = Guardrails(cap=at_most(1, per_days=1))
    with Simulation(_registry(CAPPED, guardrails=once_a_day)) as sim:
        sim.track("cap@example.com", "page.viewed")
        sim.advance(days=2)

        # Then the second one, sent a day later, says the cap held it until then
        timeline = sim.timeline("cap@example.com")
        assert timeline is not None
        sent = timeline.entries[-1]
        assert sent.summary == (
            "email capped/w2: sent (held until 2026-01-06 09:00 UTC: frequency cap: 1 per 1 day)"
        )
        assert [h["rule"] for h in sent.to_dict()["details"]["held"]] == [
            "frequency cap: 1 per 1 day"
        ]


def test_a_held_email_skipped_when_it_could_go_says_why_and_what_held_it() -> None:
    # Given a contact who unsubscribes while her first email is held by quiet hours
    quiet = Guardrails(quiet_hours=quiet_hours("21:00", "08:00"))
    at_night = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    with Simulation(_registry(DRIP, guardrails=quiet), start=at_night) as sim:
        sim.track("uns@example.com", "page.viewed")
        sim.track("uns@example.com", "email.unsubscribed")
        sim.advance(days=1)

        # Then at 08:00 it is skipped, and says both
        assert summaries(sim, "uns@example.com")[-1] == (
            "action: email drip/a: skipped (contact is unsubscribed; held until "
            "2026-01-06 08:00 UTC: quiet hours 21:00-08:00 (UTC))"
        )


def test_an_imported_contact_exists_before_the_event_tracked_at_her_import() -> None:
    # Given a contact imported, then tracked at the same instant
    with Simulation(_registry(TRIAL)) as sim:
        sim.contact_import("imp@example.com", stage="awareness")
        sim.track("imp@example.com", "trial.started")

        # Then her creation comes first, then the event and what it caused
        assert summaries(sim, "imp@example.com")[:4] == [
            "stage: (new) -> awareness by imported",
            "event: trial.started (processed)",
            "stage: awareness -> decision by evaluate",
            "enrollment: entered workflow trial_nurture",
        ]


WEEKLY = Workflow(
    "monday",
    trigger=on_schedule("0 9 * * MON"),
    steps=[send_email("guide", id="tips", marketing=False)],
)


def test_a_scheduled_enrollment_sends_before_it_completes() -> None:
    # Given a contact imported on Sunday, and a workflow started every Monday at 09:00
    with Simulation(_registry(WEEKLY), start=MONDAY_9 - timedelta(days=1)) as sim:
        sim.contact_import("sch@example.com", stage="awareness")
        sim.advance(days=2)

        # Then Monday's run reads entered, sent, completed
        assert summaries(sim, "sch@example.com")[1:] == [
            "enrollment: entered workflow monday",
            "action: email monday/tips: sent",
            "enrollment: workflow monday completed: completed",
        ]


@pytest.fixture
def chased() -> Iterator[Simulation]:
    with Simulation(_registry(CHASE)) as sim:
        sim.track("ana@example.com", "webinar.attended")
        sim.track("ana@example.com", "demo.requested")
        yield sim


def test_the_api_entry_shape_stays_the_same_with_decisions_in_its_details(
    chased: Simulation,
) -> None:
    # Given a timeline with decisions, as GET /v1/contacts/{email} builds it
    timeline = chased.timeline("ana@example.com")
    assert timeline is not None
    body = ContactWithTimeline.of(timeline).model_dump(mode="json")

    # Then every entry keeps its four fields, and a decision names its step and note
    assert {tuple(sorted(e)) for e in body["timeline"]} == {("at", "details", "kind", "summary")}
    (arrived,) = [e for e in body["timeline"] if "arrived first" in e["summary"]]
    assert arrived["kind"] == "enrollment"
    assert arrived["details"]["workflow"] == "demo_chase"
    assert arrived["details"]["step"] == "demo?"
    assert arrived["details"]["note"] == "event arrived first (event 3)"


def test_journeyline_contact_lists_the_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a trial tracked from the command line, on the shipped workflows
    env = cli_env(tmp_path, monkeypatch, columns=200)
    tracked = invoke("--database-url", env["url"], "track", "ana@example.com", "trial.started")
    assert tracked.exit_code == 0, tracked.output

    # Then `journeyline contact` lists the branches her trial workflow took
    shown = invoke("contact", "ana@example.com", "--database-url", env["url"])
    assert shown.exit_code == 0, shown.output
    decision = "workflow decision_trial on_trial?: did trial.started within 2 days? yes: then"
    assert decision in shown.output
