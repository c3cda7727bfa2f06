"""SendGrid Event Webhook feedback as the provider really sends it (provider probe).

Drops for reasons of the message or the account, out-of-order consent events, resubscribes
to other teams' unsubscribe groups and events of another deployment sharing the account.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from engine import Workflow, on_event, send_email
from engine.inbound import reconcile_from_recorded, record_sendgrid_events
from engine.models import Action, ActionStatus, SubscriptionStatus, Suppression
from engine.unsubscribe import change_subscription
from tests.language_support import running
from tests.support import actions, contact

WELCOME = Workflow("welcome", trigger=on_event("demo.requested"), steps=[send_email("welcome")])
T0 = 1772445600  # 2026-03-02 10:00 UTC, the harness clock's start


def sg(event: str, email: str, action_id: int, at: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "email": email,
        "timestamp": T0 + at,
        "sg_event_id": f"{event}-{email}-{at}",
        "sg_message_id": f"msg-{action_id}.filter0001",
        "jl_action_id": str(action_id),
        **extra,
    }


def suppressions(rt: Any) -> dict[str, str]:
    with Session(rt.db) as session:
        return {s.email: s.reason for s in session.exec(select(Suppression)).all()}


def welcomed(rt: Any, *addresses: str) -> dict[str, int]:
    for address in addresses:
        rt.track(address, "demo.requested")
    rt.run_until_idle()
    by_contact = {a.contact_id: a.id for a in actions(rt)}
    return {address: by_contact[contact(rt, address).id] for address in addresses}


@pytest.mark.parametrize(
    "reason", ["Recipient List over Package Quota", "Spam Content", "Invalid SMTPAPI header"]
)
def test_a_drop_for_the_message_or_the_account_does_not_suppress_the_address(
    tmp_path: Path, reason: str
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        # Given an email SendGrid dropped for a reason that is not the address's
        sent = welcomed(rt, "ana@example.com")
        # When its drop arrives
        event = sg("dropped", "ana@example.com", sent["ana@example.com"], 1, reason=reason)
        assert record_sendgrid_events(rt, [event]).recorded == 1
        # Then the address is not suppressed for good (over quota, everyone would be)
        assert suppressions(rt) == {}


@pytest.mark.parametrize(
    "reason", ["Bounced Address", "Spam Reporting Address", "Unsubscribed Address", "Invalid"]
)
def test_a_drop_for_the_address_still_suppresses_it(tmp_path: Path, reason: str) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        sent = welcomed(rt, "ana@example.com")
        event = sg("dropped", "ana@example.com", sent["ana@example.com"], 1, reason=reason)
        record_sendgrid_events(rt, [event])
        assert suppressions(rt) == {"ana@example.com": f"dropped: {reason}"}


def test_a_late_resubscribe_does_not_undo_a_newer_unsubscribe(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        sent = welcomed(rt, "ana@example.com")
        action = sent["ana@example.com"]
        # Given she resubscribed at 10:00:02 and unsubscribed again at 10:00:05, and the
        # batch holding the resubscribe failed once, so SendGrid delivers it last
        unsubscribe = sg("group_unsubscribe", "ana@example.com", action, 5, asm_group_id=42)
        record_sendgrid_events(rt, [unsubscribe])
        resubscribe = sg("group_resubscribe", "ana@example.com", action, 2, asm_group_id=42)
        # When the retried batch arrives
        assert record_sendgrid_events(rt, [resubscribe]).recorded == 1
        # Then her newer choice stands
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"


def test_a_resubscribe_to_our_group_in_order_resubscribes(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        sent = welcomed(rt, "ana@example.com")
        action = sent["ana@example.com"]
        record_sendgrid_events(
            rt, [sg("group_unsubscribe", "ana@example.com", action, 2, asm_group_id=42)]
        )
        record_sendgrid_events(
            rt, [sg("group_resubscribe", "ana@example.com", action, 5, asm_group_id=42)]
        )
        assert contact(rt, "ana@example.com").subscription_status == "subscribed"


def test_a_resubscribe_to_another_group_does_not_lift_our_unsubscribe(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        sent = welcomed(rt, "ana@example.com")
        # Given she unsubscribed with our own link
        change_subscription(
            rt, SubscriptionStatus.UNSUBSCRIBED, via="link", email="ana@example.com"
        )
        clock.advance(minutes=5)
        # When, later, she resubscribes to another team's group of the same SendGrid account
        late = 600
        resubscribe = sg(
            "group_resubscribe", "ana@example.com", sent["ana@example.com"], late, asm_group_id=7
        )
        assert record_sendgrid_events(rt, [resubscribe]).recorded == 1
        # Then she stays unsubscribed from our marketing
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"


def test_an_event_naming_another_contacts_action_does_not_reconcile_it(tmp_path: Path) -> None:
    with running(tmp_path, [WELCOME]) as (rt, _clock, _email):
        sent = welcomed(rt, "ana@example.com", "bo@example.com")
        # Given Bo's send timed out (unknown)
        with Session(rt.db) as session:
            bo_action = session.get(Action, sent["bo@example.com"])
            assert bo_action is not None
            bo_action.status = ActionStatus.UNKNOWN
            session.add(bo_action)
            session.commit()
        # When a staging deployment sharing the SendGrid account reports a drop for Ana that
        # carries its own action id, equal to Bo's
        event = sg("dropped", "ana@example.com", sent["bo@example.com"], 1, reason="Invalid")
        record_sendgrid_events(rt, [event])
        # Then Bo's action is left for his own events
        with Session(rt.db) as session:
            again = session.get(Action, sent["bo@example.com"])
            assert again is not None and again.status == ActionStatus.UNKNOWN
        # and Bo's own event still reconciles it
        record_sendgrid_events(rt, [sg("processed", "bo@example.com", sent["bo@example.com"], 2)])
        with Session(rt.db) as session:
            again = session.get(Action, sent["bo@example.com"])
            assert again is not None and again.status == ActionStatus.SENT


@pytest.mark.parametrize(
    ("kinds", "settled"),
    [
        (("processed", "delivered"), ActionStatus.SENT),
        (("dropped",), ActionStatus.FAILED),
        (("dropped", "deferred"), ActionStatus.SENT),
        ((), ActionStatus.UNKNOWN),
    ],
)
def test_events_that_came_while_sending_settle_the_action_once_it_is_unknown(
    tmp_path: Path, kinds: tuple[str, ...], settled: str
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        sent = welcomed(rt, "ana@example.com", "bo@example.com")
        action_id = sent["ana@example.com"]
        set_status(rt, action_id, ActionStatus.SENDING)
        # Given SendGrid's events about Ana's email came while a dead worker's lease ran
        # (and one about Bo's, which must not count for hers)
        for n, kind in enumerate(kinds):
            record_sendgrid_events(rt, [sg(kind, "ana@example.com", action_id, n, reason="x")])
        record_sendgrid_events(rt, [sg("delivered", "bo@example.com", sent["bo@example.com"], 9)])
        # When the action is marked unknown and reconciled from what was recorded
        set_status(rt, action_id, ActionStatus.UNKNOWN)
        with Session(rt.db) as session:
            action = session.get(Action, action_id)
            assert action is not None
            reconcile_from_recorded(session, action, now=clock.now())
            session.commit()
        # Then SendGrid's word settles it
        with Session(rt.db) as session:
            again = session.get(Action, action_id)
            assert again is not None and again.status == settled


def set_status(rt: Any, action_id: int, status: str) -> None:
    with Session(rt.db) as session:
        action = session.get(Action, action_id)
        assert action is not None
        action.status = status
        session.add(action)
        session.commit()


def test_a_send_left_by_a_dead_worker_is_settled_by_events_already_recorded(
    tmp_path: Path,
) -> None:
    """The whole path: the claim that finds a dead worker's lease over marks the email
    unknown (the provider cannot dedupe) and settles it then and there from SendGrid's
    events that came while it was still sending, instead of leaving it unknown for good."""
    with running(tmp_path, [WELCOME]) as (rt, clock, email):
        email.dedupes = False  # as SendGrid: a repeat would be a second email
        sent = welcomed(rt, "ana@example.com")
        action_id = sent["ana@example.com"]
        calls = email.calls
        # Given a worker died mid-send, its lease over, after SendGrid took the email
        with Session(rt.db) as session:
            action = session.get(Action, action_id)
            assert action is not None
            action.status = ActionStatus.SENDING
            action.lease_until = clock.now()
            session.add(action)
            session.commit()
        for n, kind in enumerate(("processed", "delivered")):
            record_sendgrid_events(rt, [sg(kind, "ana@example.com", action_id, n)])
        # When the action is claimed again
        clock.advance(minutes=1)
        outcome = rt.perform(action_id)
        # Then it is settled as sent, and nothing went to the provider again
        assert outcome.status == ActionStatus.SENT
        assert email.calls == calls
        with Session(rt.db) as session:
            again = session.get(Action, action_id)
            assert again is not None and again.status == ActionStatus.SENT
