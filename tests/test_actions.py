"""Performing actions: one email per intent, retries, dead letters, send-time checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from connectors import EmailConnector, EmailMessage, SendResult
from engine.models import Action, Contact, Suppression
from tests.support import actions, make_runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator:
    # Given a lead whose welcome action is written but not yet performed
    runtime, clock, email = make_runtime(f"sqlite:///{tmp_path}/jl.db", max_attempts=3)
    runtime.track("ana@example.com", "page.viewed")
    runtime.broker.flush_all()  # keep the jobs from running: the tests call them by hand
    runtime.process_contact(1)
    runtime.broker.flush_all()
    (action,) = actions(runtime)
    yield runtime, clock, email, action.id
    runtime.close()


def test_performing_an_action_twice_sends_one_email(rt) -> None:
    runtime, _clock, email, action_id = rt
    assert runtime.perform(action_id).status == "sent"
    assert runtime.perform(action_id).status == "sent"
    assert email.calls == 1
    assert len(email.sent) == 1


def test_performing_an_action_that_does_not_exist_sends_nothing(rt) -> None:
    runtime, _clock, email, action_id = rt
    assert runtime.perform(action_id + 1000).status == "missing"
    assert email.calls == 0


def test_concurrent_performers_send_one_email(rt) -> None:
    runtime, _clock, email, action_id = rt
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(runtime.perform(action_id).status))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert email.calls == 1
    assert outcomes.count("sent") >= 1
    assert set(outcomes) <= {"sent", "sending"}


def test_a_transient_failure_is_retried_after_its_backoff(rt) -> None:
    runtime, clock, email, action_id = rt
    email.fail_next(1, retry_after=timedelta(seconds=30))
    outcome = runtime.perform(action_id)
    assert outcome.status == "pending"
    assert outcome.retry_at is not None and outcome.retry_at >= clock.now() + timedelta(seconds=30)
    # Not before its time...
    assert runtime.perform(action_id).status == "pending"
    assert email.calls == 1
    # ...and the sweeper hands it out again when it is due.
    clock.set(outcome.retry_at)
    clock.advance(seconds=1)
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "sent"
    assert action.attempts == 2
    assert len(email.sent) == 1


def test_an_action_that_keeps_failing_lands_in_failed_with_its_error(rt) -> None:
    runtime, clock, email, action_id = rt
    email.fail_next(10)
    for _ in range(3):
        outcome = runtime.perform(action_id)
        if outcome.retry_at:
            clock.set(outcome.retry_at)
    (action,) = actions(runtime)
    assert action.status == "failed"
    assert action.attempts == 3
    assert "gave up after 3 attempts" in (action.error or "")
    assert email.sent == []


def test_a_permanent_failure_is_not_retried(rt) -> None:
    runtime, _clock, email, action_id = rt
    email.fail_next(1, permanent=True)
    assert runtime.perform(action_id).status == "failed"
    (action,) = actions(runtime)
    assert action.attempts == 1
    assert "permanent" in (action.error or "")


def test_suppression_is_checked_at_send_time(rt) -> None:
    runtime, clock, email, action_id = rt
    # The address bounced after the step was scheduled
    with Session(runtime.db) as session:
        session.add(
            Suppression(
                email="ana@example.com", reason="bounce", source="test", created_at=clock.now()
            )
        )
        session.commit()
    assert runtime.perform(action_id).status == "skipped"
    (action,) = actions(runtime)
    assert action.reason["skipped"] == "suppressed (bounce)"
    assert email.calls == 0


def test_an_unsubscribed_contact_gets_no_marketing_email(rt) -> None:
    runtime, _clock, email, action_id = rt
    with Session(runtime.db) as session:
        ana = session.exec(select(Contact)).one()
        ana.subscription_status = "unsubscribed"
        session.add(ana)
        session.commit()
    assert runtime.perform(action_id).status == "skipped"
    assert email.calls == 0


class _Blind(EmailConnector):
    """A connector that cannot dedupe (like SendGrid's mail send)."""

    name = "blind"
    dedupes = False

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> SendResult:
        self.sent.append(message)
        return SendResult("x")


def _crash_mid_send(runtime, action_id: int) -> None:
    """Leave the row as a worker that died inside connector.send would."""
    with Session(runtime.db) as session:
        action = session.get(Action, action_id)
        action.status = "sending"
        action.attempts = 1
        action.lease_until = runtime.clock.now() + runtime.lease
        session.add(action)
        session.commit()


def test_a_worker_lost_mid_send_is_resent_only_through_a_deduping_connector(rt) -> None:
    runtime, clock, email, action_id = rt
    _crash_mid_send(runtime, action_id)
    # While the lease lives nobody else may touch it
    assert runtime.perform(action_id).status == "sending"
    clock.advance(runtime.lease + timedelta(seconds=1))
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "sent"
    assert len(email.sent) == 1


def test_a_worker_lost_mid_send_without_dedupe_is_marked_unknown_not_resent(rt) -> None:
    runtime, clock, _email, action_id = rt
    runtime.email = blind = _Blind()
    _crash_mid_send(runtime, action_id)
    clock.advance(runtime.lease + timedelta(seconds=1))
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "unknown"
    assert "cannot dedupe" in (action.error or "")
    assert blind.sent == []


def test_a_send_whose_outcome_is_unknown_is_never_resent(rt) -> None:
    from engine import DeliveryUnknownError

    runtime, clock, _email, action_id = rt

    class _TimesOut(_Blind):
        def send(self, message: EmailMessage) -> SendResult:
            self.sent.append(message)
            raise DeliveryUnknownError("timed out after the request was sent")

    runtime.email = flaky = _TimesOut()
    assert runtime.perform(action_id).status == "unknown"
    clock.advance(hours=2)
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "unknown"
    assert "timed out" in (action.error or "")
    assert len(flaky.sent) == 1


class _SendsThenBreaks(EmailConnector):
    """A connector whose provider accepts the email, and which then fails reading the reply
    with an error of its own (a bug, not a ``ConnectorError``)."""

    name = "sends then breaks"
    batch_size = 100

    def __init__(self, *, dedupes: bool) -> None:
        self.dedupes = dedupes
        self.delivered = 0
        self.broken = True

    def _deliver(self, count: int) -> SendResult:
        self.delivered += count
        if self.broken:
            self.broken = False
            raise KeyError("x-message-id")
        return SendResult("ok")

    def send(self, message: EmailMessage) -> SendResult:
        return self._deliver(1)

    def send_batch(self, message: EmailMessage, recipients) -> SendResult:  # type: ignore[no-untyped-def]
        return self._deliver(len(recipients))


def test_a_connector_bug_after_the_send_leaves_the_email_unknown_not_resent(rt) -> None:
    runtime, clock, _email, action_id = rt
    runtime.email = breaks = _SendsThenBreaks(dedupes=False)
    assert runtime.perform(action_id).status == "unknown"
    clock.advance(days=1)
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "unknown"
    assert "KeyError" in (action.error or "") and "not repeated" in (action.error or "")
    assert breaks.delivered == 1


def test_a_connector_bug_is_retried_where_repeating_is_harmless(rt) -> None:
    runtime, clock, _email, action_id = rt
    runtime.email = breaks = _SendsThenBreaks(dedupes=True)
    assert runtime.perform(action_id).status == "pending"
    clock.advance(days=1)
    runtime.run_until_idle()
    (action,) = actions(runtime)
    assert action.status == "sent"
    assert breaks.delivered == 2  # the provider deduped the second on its idempotency key


def test_a_connector_bug_after_a_batch_went_leaves_every_email_unknown(rt) -> None:
    runtime, clock, _email, action_id = rt
    runtime.email = breaks = _SendsThenBreaks(dedupes=False)
    outcome = runtime.perform_batch([action_id])
    assert dict(outcome.statuses) == {"unknown": 1}
    clock.advance(days=1)
    runtime.run_until_idle()
    assert [a.status for a in actions(runtime)] == ["unknown"]
    assert breaks.delivered == 1
