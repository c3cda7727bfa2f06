"""Consent and delivery feedback from any source: applied in the order it came in, and a
bounce or spam report from the track API suppresses as SendGrid's do."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from engine import Workflow, on_event, send_email, wait
from engine.models import SubscriptionStatus, Suppression
from engine.unsubscribe import change_subscription
from tests.language_support import running, sent
from tests.support import contact

NEWS = Workflow(
    "news",
    trigger=on_event("demo.requested"),
    steps=[wait(hours=1), send_email("guide", id="g")],
)


def status(rt, email: str = "ana@example.com") -> str:  # type: ignore[no-untyped-def]
    return str(contact(rt, email).subscription_status)


def test_a_queued_resubscribe_does_not_undo_a_later_unsubscribe_link(tmp_path: Path) -> None:
    with running(tmp_path, [NEWS]) as (rt, _clock, _email):
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        change_subscription(rt, SubscriptionStatus.UNSUBSCRIBED, via="cli", email="ana@example.com")
        # A resubscribe sent earlier, still queued (not processed yet) ...
        rt.track("ana@example.com", "email.group_resubscribed", idempotency_key="r1")
        # ... and then she clicks the unsubscribe link in the meantime
        change_subscription(
            rt, SubscriptionStatus.SUBSCRIBED, via="api", email="ana@example.com"
        )  # an operator resubscribes her (recorded: email.resubscribed)
        change_subscription(
            rt, SubscriptionStatus.UNSUBSCRIBED, via="link", email="ana@example.com"
        )
        rt.run_until_idle()
        assert status(rt) == SubscriptionStatus.UNSUBSCRIBED


def test_a_queued_unsubscribe_does_not_undo_a_later_resubscribe(tmp_path: Path) -> None:
    with running(tmp_path, [NEWS]) as (rt, _clock, _email):
        rt.track("ana@example.com", "page.viewed")
        rt.track("ana@example.com", "email.unsubscribed", idempotency_key="first")
        rt.run_until_idle()
        # The same request again from another system, held up somewhere, still queued ...
        rt.track("ana@example.com", "email.unsubscribed", idempotency_key="stale")
        # ... when an operator resubscribes her on her word
        change_subscription(rt, SubscriptionStatus.SUBSCRIBED, via="cli", email="ana@example.com")
        rt.run_until_idle()
        assert status(rt) == SubscriptionStatus.SUBSCRIBED


def test_consent_events_in_one_job_apply_in_order(tmp_path: Path) -> None:
    with running(tmp_path, [NEWS]) as (rt, _clock, _email):
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        rt.track("ana@example.com", "email.unsubscribed", idempotency_key="u")
        rt.track("ana@example.com", "email.group_resubscribed", idempotency_key="r")
        rt.run_until_idle()
        assert status(rt) == SubscriptionStatus.SUBSCRIBED
        rt.track("bo@example.com", "page.viewed")
        rt.run_until_idle()
        rt.track("bo@example.com", "email.group_resubscribed", idempotency_key="bo-r")
        rt.track("bo@example.com", "email.unsubscribed", idempotency_key="bo-u")
        rt.run_until_idle()
        assert status(rt, "bo@example.com") == SubscriptionStatus.UNSUBSCRIBED


def suppressed(rt) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with Session(rt.db) as session:
        return {s.email: s.reason for s in session.exec(select(Suppression)).all()}


def test_a_hard_bounce_from_the_track_api_suppresses_and_later_email_is_skipped(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [NEWS]) as (rt, clock, email):
        rt.track("ana@example.com", "demo.requested")
        rt.track("bo@example.com", "demo.requested")
        rt.run_until_idle()
        rt.track("ana@example.com", "email.bounced", {"reason": "550 no such user"})
        rt.track("bo@example.com", "email.bounced", {"type": "blocked"})  # a soft one
        rt.run_until_idle()
        assert suppressed(rt) == {"ana@example.com": "bounce"}
        clock.advance(hours=2)
        rt.run_until_idle()
        assert sent(email, "ana@example.com") == []
        assert sent(email, "bo@example.com") == ["news:g"]


def test_a_spam_report_from_anywhere_suppresses_and_unsubscribes(tmp_path: Path) -> None:
    with running(tmp_path, [NEWS]) as (rt, _clock, _email):
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        rt.track("ana@example.com", "email.spam_reported")
        rt.run_until_idle()
        assert suppressed(rt) == {"ana@example.com": "spam report"}
        assert status(rt) == SubscriptionStatus.UNSUBSCRIBED


def test_a_sendgrid_drop_with_a_long_reason_suppresses_on_postgresql(pg_db_url: str) -> None:
    """SendGrid's webhook and every other source share one suppression rule: the reason is
    cut to the column's 64 characters (a long drop reason was a 500 on PostgreSQL)."""
    from tests.test_api_webhooks import body_of, serve_hooks, sg_event

    for hooks in serve_hooks(pg_db_url):
        hooks.runtime.upsert_contact("ana@example.com")
        reason = "Bounced Address: " + "x" * 200
        dropped = sg_event("dropped", "ana@example.com", 1, reason=reason)
        response = hooks.sendgrid(body_of([dropped]))
        assert response.status_code == 200, response.text
        found = suppressed(hooks.runtime)["ana@example.com"]
        assert found.startswith("dropped: Bounced Address: xxx") and len(found) == 64
