"""Race probe: an erasure committing while a request records events for the same contact.

``POST /v1/events`` reads the contact's id, then inserts the event rows. An erasure
(``DELETE /v1/contacts/{email}``) committing between the two made the insert a foreign-key
violation on PostgreSQL, answered 500 for the whole request (a batch of 500 events with it).
The erasure is forced into that window deterministically: it runs, in a transaction of its
own, right after the recording has looked its contacts up.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import engine.recording_batch as recording_batch
from engine import Workflow, on_event, send_email
from engine.db import transaction
from engine.erasure import erase_contact
from engine.inbound import record_sendgrid_events
from engine.models import Contact, SubscriptionStatus
from tests.language_support import running
from tests.support import actions, contact, make_runtime
from tests.test_api import Api, event, serve


@pytest.fixture
def api(pg_db_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(pg_db_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _erase_right_after_lookup(api: Api, monkeypatch: pytest.MonkeyPatch, email: str) -> None:
    original = recording_batch._contacts_for
    done: list[bool] = []

    def looked_up_then_erased(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        if not done:
            done.append(True)
            with transaction(api.runtime.db) as other:
                contact = other.exec(select(Contact).where(Contact.email == email)).one()
                erase_contact(other, contact, now=api.clock.now())
        return found

    monkeypatch.setattr(recording_batch, "_contacts_for", looked_up_then_erased)


@pytest.mark.postgres
def test_an_event_racing_her_erasure_is_no_500_and_does_not_bring_her_back_subscribed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Ana, a known contact
    assert api.post_events(event("ana@example.com", idempotency_key="first")).status_code == 202
    # When her erasure commits while a batch naming her (and Bob) is being recorded
    _erase_right_after_lookup(api, monkeypatch, "ana@example.com")
    answer = api.post_events(
        {
            "events": [
                event("ana@example.com", idempotency_key="racing"),
                event("bob@example.com", idempotency_key="bob"),
            ]
        }
    )
    # Then the request is no server error (a retryable 503 would be acceptable; a 500 is not)
    assert answer.status_code in (202, 503), answer.text
    # And if Ana exists again, she did not come back subscribed
    with Session(api.runtime.db) as session:
        ana = session.exec(select(Contact).where(Contact.email == "ana@example.com")).first()
    if ana is not None:
        assert ana.subscription_status == SubscriptionStatus.UNSUBSCRIBED


# --- a SendGrid resubscribe from before her erasure, delivered after she came back -----------

WELCOME = Workflow("welcome", trigger=on_event("demo.requested"), steps=[send_email("welcome")])
T0 = 1772445600  # 2026-03-02 10:00 UTC, the harness clock's start


def test_a_resubscribe_from_before_her_erasure_does_not_resubscribe_her_return(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [WELCOME]) as (rt, clock, _email):
        rt.settings.sendgrid_unsubscribe_group = 42
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        action = actions(rt)[0].id
        # Given Ana resubscribed through our group at 10:00:00, then was erased at 10:00:05
        clock.advance(timedelta(seconds=5))
        with transaction(rt.db) as session:
            ana = session.exec(select(Contact).where(Contact.email == "ana@example.com")).one()
            erase_contact(session, ana, now=clock.now())
        # and came back (a queued event), so she starts unsubscribed, as the README says
        clock.advance(timedelta(seconds=5))
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"
        # When SendGrid delivers the resubscribe late (its batch was retried), as it does
        resubscribe = {
            "event": "group_resubscribe",
            "email": "ana@example.com",
            "timestamp": T0,
            "sg_event_id": "resub-before-erasure",
            "sg_message_id": f"msg-{action}.filter0001",
            "jl_action_id": str(action),
            "asm_group_id": 42,
        }
        record_sendgrid_events(rt, [resubscribe])
        rt.run_until_idle()
        # Then her erasure, newer than that resubscribe, still stands: no marketing email
        assert contact(rt, "ana@example.com").subscription_status == "unsubscribed"


@pytest.mark.postgres
def test_a_sendgrid_event_racing_her_erasure_is_counted_not_a_500(
    pg_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open reads her contact without a lock; her erasure committing before its row is
    written made the whole batch fail (the provider retried it for a day)."""
    import engine.inbound as inbound

    runtime, clock, _email = make_runtime(pg_db_url)
    try:
        runtime.track("ana@example.com", "page.viewed")
        runtime.track("bo@example.com", "page.viewed")
        runtime.run_until_idle()
        original = inbound.record_event

        def erased_first(session: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("email") == "ana@example.com":
                with transaction(runtime.db) as other:
                    ana = other.exec(select(Contact).where(Contact.email == "ana@example.com"))
                    erase_contact(other, ana.one(), now=clock.now())
            return original(session, *args, **kwargs)

        monkeypatch.setattr(inbound, "record_event", erased_first)
        opens = [
            {"event": "open", "email": who, "timestamp": int(clock.now().timestamp()),
             "sg_event_id": f"open-{who}", "sg_message_id": "m"}
            for who in ("ana@example.com", "bo@example.com")
        ]  # fmt: skip
        result = record_sendgrid_events(runtime, opens)
        assert (result.recorded, result.unknown_contacts) == (1, 1)
        with Session(runtime.db) as session:  # an open does not make her anew
            assert session.exec(select(Contact.email)).all() == ["bo@example.com"]
    finally:
        runtime.close()
