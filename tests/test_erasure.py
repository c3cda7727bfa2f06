"""An erased contact's address, coming back, starts unsubscribed: she asked to be forgotten,
not to be written to again. Only a digest of the address is kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine.erasure import address_digest, erased_among
from engine.inbound_crm import record_hubspot_events
from engine.models import Contact, ErasedAddress
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
        assert erased_among(session, ["fay.secret@example.com", "gus@example.com"]) == {
            "fay.secret@example.com"
        }
    raw = Path(api.runtime.settings.database_url.removeprefix("sqlite:///")).read_bytes()
    assert b"fay.secret" not in raw


def test_a_hubspot_privacy_deletion_is_remembered_and_a_plain_deletion_is_not(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, _email):
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
