"""SendGrid consent events that changed nothing (a resubscribe to another team's group) do
not make an older consent event of ours stale (review of the out-of-order consent rule)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine.inbound import record_sendgrid_events
from tests.language_support import running
from tests.support import contact
from tests.test_probe_providers_sendgrid_events import WELCOME, sg, welcomed


def test_a_resubscribe_to_another_group_does_not_make_our_late_unsubscribe_stale(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        action = welcomed(rt, "ana@example.com")["ana@example.com"]
        # Given she unsubscribed from our group at 10:00:02 and resubscribed to another
        # team's group at 10:00:05, and SendGrid delivers the second first
        theirs = sg("group_resubscribe", "ana@example.com", action, 5, asm_group_id=7)
        assert record_sendgrid_events(rt, [theirs]).recorded == 1
        assert contact(rt, "ana@example.com").subscription_status == "subscribed"
        # When our group's unsubscribe arrives
        ours = sg("group_unsubscribe", "ana@example.com", action, 2, asm_group_id=42)
        assert record_sendgrid_events(rt, [ours]).recorded == 1
        # Then she is unsubscribed: the other group's resubscribe was no consent to ours
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"


def test_a_resubscribe_timed_by_a_fast_client_clock_does_not_outlast_a_real_unsubscribe(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        action = welcomed(rt, "ana@example.com")["ana@example.com"]
        # Given a signup form resubscribed her, its client's clock five minutes ahead
        ahead = clock.now() + timedelta(minutes=5)
        rt.track("ana@example.com", "email.resubscribed", occurred_at=ahead)
        rt.run_until_idle()
        # When, a minute later, she unsubscribes with SendGrid's link
        clock.advance(minutes=1)
        record_sendgrid_events(rt, [sg("unsubscribe", "ana@example.com", action, 60)])
        # Then she is unsubscribed
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"


def test_an_ignored_sendgrid_resubscribe_does_not_supersede_a_queued_unsubscribe(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        action = welcomed(rt, "ana@example.com")["ana@example.com"]
        # Given she unsubscribed through the track API (recorded, not yet processed)
        rt.track("ana@example.com", "email.unsubscribed")
        # And then SendGrid reports her resubscribing to another team's group
        theirs = sg("group_resubscribe", "ana@example.com", action, 5, asm_group_id=7)
        assert record_sendgrid_events(rt, [theirs]).recorded == 1
        # When the pipeline applies her unsubscribe
        rt.run_until_idle()
        # Then it holds: the other group's resubscribe changed nothing, so it is no later
        # consent of hers
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"
