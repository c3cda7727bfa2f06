"""A HubSpot privacy deletion erases the addresses its object had, not another object's
contact who has one of them now."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from engine.erasure import erased_among
from engine.inbound_crm import record_hubspot_events
from tests.test_erasure import _ms, _statuses
from tests.test_inbound_hubspot import ONBOARDING, change, hs, running


def test_a_privacy_deletion_leaves_an_old_address_another_hubspot_contact_has_now(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        # Given HubSpot contact 8, whose address moved from shared@ to her own, and
        # HubSpot contact 9, who has had shared@ since (an address handed on, a merge)
        record_hubspot_events(
            rt,
            [
                change(8, "email", "shared@example.com", _ms(clock)),
                change(8, "email", "hers@example.com", _ms(clock, 1)),
                change(9, "email", "shared@example.com", _ms(clock, 2)),
            ],
        )
        rt.run_until_idle()
        assert set(_statuses(rt)) == {"shared@example.com", "hers@example.com"}
        # When contact 8 asks HubSpot to delete her
        result = record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, _ms(clock, 3))])
        # Then her address is erased, and contact 9's stays, as it was
        assert result.recorded == 1
        assert _statuses(rt) == {"shared@example.com": "subscribed"}
        with Session(rt.db) as session:
            assert set(erased_among(session, ["shared@example.com", "hers@example.com"])) == {
                "hers@example.com"
            }


def test_an_email_change_made_before_a_privacy_deletion_and_delivered_after_is_dropped(
    tmp_path: Path,
) -> None:
    """HubSpot delivers out of order (a retried delivery): her change of address, made
    before she asked to be deleted, came after the deletion and created her again,
    subscribed, under the address nobody had erased yet."""
    with running(tmp_path, [ONBOARDING]) as (rt, clock, email):
        # Given HubSpot contact 8 at first@, whose change to second@ is delivered late
        record_hubspot_events(rt, [change(8, "email", "first@example.com", _ms(clock))])
        rt.run_until_idle()
        late = change(8, "email", "second@example.com", _ms(clock, 1))
        clock.advance(minutes=5)
        record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, _ms(clock))])
        clock.advance(minutes=5)
        # When the change comes after the deletion
        result = record_hubspot_events(rt, [late])
        rt.run_until_idle()
        # Then it is taken as from before her erasure: nothing of her is created
        assert (result.recorded, result.duplicates) == (0, 1)
        assert _statuses(rt) == {}
        sent_to = {message.to for message in email.sent}
        assert "second@example.com" not in sent_to


def test_a_privacy_deletion_before_any_address_is_remembered_for_the_object(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        # Given a deletion of an object whose first email change is delivered after it
        first = change(8, "email", "first@example.com", _ms(clock))
        clock.advance(minutes=1)
        deleted = record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, _ms(clock))])
        assert deleted.unknown_contacts == 1
        clock.advance(minutes=1)
        # When the change arrives; and another object's change after it
        record_hubspot_events(rt, [first, change(9, "email", "new@example.com", _ms(clock))])
        rt.run_until_idle()
        # Then only the other object's contact exists
        assert _statuses(rt) == {"new@example.com": "subscribed"}
