"""A wait counted from a date attribute (``wait_until_date``) follows the date when it
changes while the contact waits: a trial extended by two weeks moves its reminder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import Workflow, on_event, send_email, wait_until_date
from tests.language_support import running, sent
from tests.support import enrollments

EVENTS = ("trial.extended",)


def reminder() -> Workflow:
    return Workflow(
        "trial_reminder",
        trigger=on_event("trial.started"),
        steps=[
            wait_until_date("trial_ends_at", days_before=3, time="10:00"),
            send_email("trial_reminder", id="reminder"),
        ],
    )


def _waiting(rt):  # type: ignore[no-untyped-def]
    (waiting,) = [e for e in enrollments(rt) if e.workflow == "trial_reminder"]
    return waiting


def _started(rt) -> None:  # type: ignore[no-untyped-def]
    # 2 March 10:00 UTC; the trial ends 16 March: the reminder is due 13 March 10:00 in London
    rt.track("bo@example.com", "trial.started", timezone="Europe/London",
             attributes={"trial_ends_at": "2026-03-16"})  # fmt: skip
    rt.run_until_idle()
    assert _waiting(rt).wake_at == datetime(2026, 3, 13, 10, 0, tzinfo=UTC)


def test_a_trial_extended_mid_wait_moves_the_reminder(tmp_path: Path) -> None:
    with running(tmp_path, [reminder()], events=EVENTS) as (rt, clock, email):
        _started(rt)
        # When the trial is extended by two weeks (through the track API's attributes)
        rt.track("bo@example.com", "trial.extended", attributes={"trial_ends_at": "2026-03-30"})
        rt.run_until_idle()
        # Then the reminder waits for 27 March 10:00 London time (GMT until the 29th)
        assert _waiting(rt).wake_at == datetime(2026, 3, 27, 10, 0, tzinfo=UTC)
        clock.set(datetime(2026, 3, 13, 10, 0, 1, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == []  # not on the old date
        clock.set(datetime(2026, 3, 27, 10, 0, tzinfo=UTC))
        rt.run_until_idle()
        assert sent(email) == ["trial_reminder:reminder"]
        trail = _waiting_trail(rt)
        assert any("trial_ends_at changed" in entry["note"] for entry in trail)


def _waiting_trail(rt) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    (enrollment,) = [e for e in enrollments(rt) if e.workflow == "trial_reminder"]
    return list(enrollment.context.get("trail", []))


@pytest.mark.parametrize("ends", ["2026-03-03", None], ids=["moved into the past", "removed"])
def test_a_date_moved_into_the_past_or_removed_wakes_the_wait_now(
    tmp_path: Path, ends: str | None
) -> None:
    with running(tmp_path, [reminder()], events=EVENTS) as (rt, _clock, email):
        _started(rt)
        # When an operator cuts the trial short to tomorrow (3 days before it is past), or
        # clears its end date
        rt.upsert_contact("bo@example.com", attributes={"trial_ends_at": ends})
        rt.run_until_idle()
        # Then the reminder goes now, as a wait whose date is already past goes on
        assert sent(email) == ["trial_reminder:reminder"]
