"""Race probe: a HubSpot email change and a lifecycle change of the same object.

HubSpot delivers webhooks concurrently (and retries out of order). An object's email
changed at t=100 and it became a customer at t=200: in the live rig the two requests
recorded concurrently and the lifecycle change, read before the email change committed,
landed on the old address, which HubSpot no longer has; the object's current contact stayed
in awareness and the onboarding emails went to the old address. Delivered in the other
order, one after the other, the same happens: this test shows it deterministically.
"""

from __future__ import annotations

from pathlib import Path

from engine.inbound_crm import record_hubspot_events
from tests.support import contact
from tests.test_inbound_hubspot import ONBOARDING, change, running


def test_a_lifecycle_change_newer_than_an_email_change_lands_on_the_objects_new_address(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, clock, _email):
        t = int(clock.now().timestamp() * 1000)  # HubSpot's times: milliseconds, plausible
        # Given HubSpot object 700 linked to old@example.com
        record_hubspot_events(rt, [change(700, "email", "old@example.com", t - 3_000)])
        rt.run_until_idle()
        # When its email changes (t - 2 s) and then it becomes a customer (t - 1 s), the two
        # webhooks reaching us in the other order (HubSpot sends them concurrently)
        record_hubspot_events(rt, [change(700, "lifecyclestage", "customer", t - 1_000)])
        record_hubspot_events(rt, [change(700, "email", "new@example.com", t - 2_000)])
        rt.run_until_idle()
        # Then the object's contact, at its current address, is the customer
        new = contact(rt, "new@example.com")
        assert new.external_ids == {"hubspot": "700"}
        assert new.stage == "onboarding"
