"""An erased contact's address, coming back, starts unsubscribed: she asked to be forgotten,
not to be written to again. Only a digest of the address is kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from engine.erasure import address_digest, erase_contact, erased_among
from engine.errors import TransientConnectorError
from engine.inbound import record_sendgrid_events
from engine.inbound_crm import record_hubspot_events
from engine.models import Contact, ErasedAddress, Event, Suppression
from tests.support import contact, make_runtime
from tests.test_api import Api, event, serve
from tests.test_inbound_hubspot import ONBOARDING, change, hs, running


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _erase(api: Api, email: str) -> None:
    assert api.http.delete(f"/v1/contacts/{email}", headers=api.auth()).status_code == 204


def _emails_to(api: Api, to: str) -> int:
    return sum(1 for message in api.email.sent if message.to == to)


def test_an_erased_address_that_comes_back_gets_no_marketing_email(api: Api) -> None:
    # Given Ana, who started a trial and got its email, erased on her request
    assert api.post_events(event("ana@example.com", "trial.started")).status_code == 202
    api.runtime.drain()
    sent_before = _emails_to(api, "ana@example.com")
    assert sent_before == 2  # welcome and the trial offer
    _erase(api, "Ana@Example.com")
    # When her address comes back, alone (one path) and in a batch with a newcomer (another)
    assert api.post_events(event("ana@example.com", "trial.started")).status_code == 202
    batch = {"events": [event("ana@example.com", "page.viewed"), event("bo@example.com")]}
    assert api.post_events(batch).status_code == 202
    api.runtime.drain()
    # Then she is a contact again, unsubscribed, and her trial wrote her nothing
    assert contact(api.runtime, "ana@example.com").subscription_status == "unsubscribed"
    assert contact(api.runtime, "ana@example.com").stage == "decision"
    assert _emails_to(api, "ana@example.com") == sent_before
    # And the newcomer beside her is subscribed as ever
    assert contact(api.runtime, "bo@example.com").subscription_status == "subscribed"


def test_a_batch_brings_back_an_erased_address_unsubscribed(api: Api) -> None:
    first = {"events": [event("cy@example.com"), event("dee@example.com")]}
    assert api.post_events(first).status_code == 202
    api.runtime.drain()
    sent_before = _emails_to(api, "cy@example.com")
    _erase(api, "cy@example.com")
    again = {"events": [event("dee@example.com"), event("cy@example.com", "trial.started")]}
    assert api.post_events(again).status_code == 202
    api.runtime.drain()
    assert contact(api.runtime, "cy@example.com").subscription_status == "unsubscribed"
    assert contact(api.runtime, "dee@example.com").subscription_status == "subscribed"
    assert _emails_to(api, "cy@example.com") == sent_before


def test_she_can_opt_in_again_and_is_then_written_to(api: Api) -> None:
    # Given an erased address, back through a PUT (a third way in)
    assert api.post_events(event("eve@example.com")).status_code == 202
    api.runtime.drain()
    sent_before = _emails_to(api, "eve@example.com")
    _erase(api, "eve@example.com")
    put = api.http.put("/v1/contacts/eve@example.com", json={}, headers=api.auth())
    assert put.status_code in (200, 201), put.text
    assert put.json()["subscription_status"] == "unsubscribed"
    # When she signs up again (the form sends her consent)
    body = {"subscription_status": "subscribed"}
    resubscribed = api.http.put("/v1/contacts/eve@example.com", json=body, headers=api.auth())
    assert resubscribed.status_code == 200, resubscribed.text
    # Then her trial's email goes out
    assert api.post_events(event("eve@example.com", "trial.started")).status_code == 202
    api.runtime.drain()
    assert _emails_to(api, "eve@example.com") == sent_before + 1  # the trial offer


def test_only_a_digest_is_kept(api: Api) -> None:
    assert api.post_events(event("fay.secret@example.com")).status_code == 202
    api.runtime.drain()
    _erase(api, "fay.secret@example.com")
    assert api.post_events(event("fay.secret@example.com")).status_code == 202
    api.runtime.drain()
    _erase(api, "fay.secret@example.com")  # erased twice: one row
    with Session(api.runtime.db) as session:
        [kept] = session.exec(select(ErasedAddress)).all()
        assert kept.digest == address_digest("fay.secret@example.com")
        assert "fay" not in kept.digest and len(kept.digest) == 64
        assert set(erased_among(session, ["fay.secret@example.com", "gus@example.com"])) == {
            "fay.secret@example.com"
        }
    raw = Path(api.runtime.settings.database_url.removeprefix("sqlite:///")).read_bytes()
    assert b"fay.secret" not in raw


def test_a_hubspot_privacy_deletion_is_remembered_and_a_plain_deletion_is_not(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        record_hubspot_events(
            rt,
            [
                change(8, "email", "private@example.com", 1_000),
                change(9, "email", "tidied@example.com", 1_000),
            ],
        )
        rt.run_until_idle()
        record_hubspot_events(
            rt, [hs("contact.privacyDeletion", 8, 3_000), hs("contact.deletion", 9, 3_000)]
        )
        clock.advance(minutes=1)  # they come back later, as new HubSpot objects
        record_hubspot_events(
            rt,
            [
                change(18, "email", "private@example.com", 4_000),
                change(19, "email", "tidied@example.com", 4_000),
            ],
        )
        rt.run_until_idle()
        with Session(rt.db) as session:
            status = dict(session.exec(select(Contact.email, Contact.subscription_status)).all())  # type: ignore[arg-type]
        assert status == {"private@example.com": "unsubscribed", "tidied@example.com": "subscribed"}


def _ms(clock: Any, minutes: int = 0) -> int:
    """HubSpot's occurredAt for the clock's now, ``minutes`` later."""
    return int(clock.now().timestamp() * 1000) + minutes * 60_000


def _statuses(rt: Any) -> dict[str, str]:
    with Session(rt.db) as session:
        return dict(session.exec(select(Contact.email, Contact.subscription_status)).all())  # type: ignore[arg-type]


def test_a_privacy_deletion_erases_every_address_the_hubspot_object_had(tmp_path: Path) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        # Given a HubSpot contact whose email changed from old@ to new@, and someone else
        record_hubspot_events(
            rt,
            [
                change(8, "email", "zelda.old@example.com", _ms(clock)),
                change(8, "email", "zelda.new@example.com", _ms(clock, 1)),
                change(9, "email", "other@example.com", _ms(clock)),
            ],
        )
        rt.run_until_idle()
        assert set(_statuses(rt)) == {
            "zelda.old@example.com",
            "zelda.new@example.com",
            "other@example.com",
        }
        # When she asks HubSpot to delete her
        record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, _ms(clock, 2))])
        # Then both her addresses are erased, and remembered; the other contact stays
        assert set(_statuses(rt)) == {"other@example.com"}
        with Session(rt.db) as session:
            assert set(erased_among(session, ["zelda.old@example.com", "zelda.new@example.com"]))
            other = session.exec(select(Contact.id)).one()
            assert {e.contact_id for e in session.exec(select(Event))} == {other}


def test_an_old_email_change_redelivered_after_her_erasure_does_not_bring_her_back(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        linked = change(8, "email", "zelda@example.com", _ms(clock))
        record_hubspot_events(rt, [linked])
        rt.run_until_idle()
        clock.advance(minutes=5)
        record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, _ms(clock))])
        clock.advance(minutes=5)
        # When HubSpot delivers the old change again (its dedupe key went with her)
        result = record_hubspot_events(rt, [linked])
        # Then it is taken for what it is, and she is not created again
        assert (result.recorded, result.duplicates) == (0, 1)
        assert _statuses(rt) == {}
        # But a change made after her erasure is a new contact (unsubscribed)
        record_hubspot_events(rt, [change(12, "email", "zelda@example.com", _ms(clock))])
        assert _statuses(rt) == {"zelda@example.com": "unsubscribed"}


def test_a_suppression_is_kept_as_the_digest_and_put_back_when_she_returns(api: Api) -> None:
    # Given Ana, whose address hard-bounced, erased
    assert api.post_events(event("ana@example.com", "email.bounced")).status_code == 202
    api.runtime.drain()
    with Session(api.runtime.db) as session:
        assert session.exec(select(Suppression.email)).all() == ["ana@example.com"]
    _erase(api, "ana@example.com")
    # Then no plain row of her address is left, and the digest knows why she was suppressed
    with Session(api.runtime.db) as session:
        assert session.exec(select(Suppression)).all() == []
        assert erased_among(session, ["ana@example.com"])["ana@example.com"].suppressed_for == (
            "bounce"
        )
    # When her address comes back, she is suppressed again (a bounced address bounces again)
    assert api.post_events(event("ana@example.com", "order.completed")).status_code == 202
    api.runtime.drain()
    with Session(api.runtime.db) as session:
        (kept,) = session.exec(select(Suppression)).all()
    assert (kept.email, kept.reason, kept.source) == ("ana@example.com", "bounce", "before erasure")


def test_a_send_failing_after_its_contact_was_erased_is_no_crash(tmp_path: Path) -> None:
    """Erased while her email was with the provider, which then failed: the failure has
    no row to go on. It was an AssertionError, and the job went to retry for nothing."""
    with running(tmp_path, [ONBOARDING]) as (rt, clock, email):
        real_send = email.send

        def erased_then_failing(message: Any) -> Any:
            with Session(rt.db) as session:
                erase_contact(session, session.exec(select(Contact)).one(), now=clock.now())
                session.commit()
            email.send = real_send  # type: ignore[method-assign]
            raise TransientConnectorError("the provider timed out")

        email.send = erased_then_failing  # type: ignore[method-assign]
        record_hubspot_events(
            rt,
            [
                change(8, "email", "gone@example.com", _ms(clock)),
                change(8, "lifecyclestage", "customer", _ms(clock, 1)),
            ],
        )
        rt.run_until_idle()  # onboarding's welcome: sent, erased, failed
        assert _statuses(rt) == {}
        assert email.sent == []


def test_a_subject_access_export_holds_everything_recorded_about_her(api: Api) -> None:
    # Given Ana, who started a trial (emails written) and whose address later bounced
    assert api.post_events(event("ana@example.com", "trial.started")).status_code == 202
    assert api.post_events(event("ana@example.com", "email.bounced")).status_code == 202
    assert api.post_events(event("bo@example.com")).status_code == 202
    api.runtime.drain()
    # When her data is exported
    response = api.http.get("/v1/contacts/Ana@Example.com/export", headers=api.auth())
    assert response.status_code == 200, response.text
    data = response.json()
    # Then it holds her row, suppression, events, stage changes, enrollments and actions
    assert data["contact"]["email"] == "ana@example.com"
    assert data["suppression"]["reason"] == "bounce"
    mine = data["contact"]["id"]
    assert {e["type"] for e in data["events"]} >= {"trial.started", "email.bounced"}
    for table in ("events", "stage_transitions", "enrollments", "actions"):
        assert data[table], table
        assert {row["contact_id"] for row in data[table]} == {mine}, table
    assert any(a["payload"].get("template") for a in data["actions"])
    assert "SendGrid" in data["held_elsewhere"]
    # And nobody else's; an unknown address is a 404
    assert "bo@example.com" not in response.text
    missing = api.http.get("/v1/contacts/nobody@example.com/export", headers=api.auth())
    assert missing.status_code == 404


def test_a_bounce_after_her_erasure_is_kept_with_the_digest(tmp_path: Path) -> None:
    """SendGrid's events about an erased address go on for days; a bounce among them must
    not be lost: her address, if it comes back, is suppressed."""
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        with Session(rt.db) as session:
            erase_contact(session, session.exec(select(Contact)).one(), now=clock.now())
            session.commit()
        bounce = {
            "event": "bounce",
            "type": "bounce",
            "email": "ana@example.com",
            "timestamp": int(clock.now().timestamp()),
            "sg_event_id": "late-bounce",
            "sg_message_id": "msg-1",
        }
        result = record_sendgrid_events(rt, [bounce])
        assert (result.recorded, result.unknown_contacts) == (0, 1)  # nothing of her recreated
        rt.track("ana@example.com", "page.viewed")  # her address comes back
        rt.run_until_idle()
        with Session(rt.db) as session:
            (kept,) = session.exec(select(Suppression)).all()
        assert (kept.email, kept.reason) == ("ana@example.com", "bounce")


def test_a_consent_event_from_before_her_erasure_does_not_resubscribe_her(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        rt.track("ana@example.com", "page.viewed")
        rt.run_until_idle()
        before = clock.now()
        clock.advance(minutes=5)
        with Session(rt.db) as session:
            erase_contact(session, session.exec(select(Contact)).one(), now=clock.now())
            session.commit()
        clock.advance(minutes=5)
        # When a resubscribe made before her erasure arrives late (a form's queue, a relay)
        rt.track("ana@example.com", "email.resubscribed", occurred_at=before)
        rt.run_until_idle()
        # Then the erasure, newer, stands
        assert _statuses(rt) == {"ana@example.com": "unsubscribed"}
        # And one made after it is her choice again
        rt.track("ana@example.com", "email.resubscribed")
        rt.run_until_idle()
        assert _statuses(rt) == {"ana@example.com": "subscribed"}
