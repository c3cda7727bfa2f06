"""HubSpot webhooks in: linking, forward-only stage moves, duplicates, late events, erasure."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from engine import Workflow, on_stage_entered, send_email
from engine.inbound_crm import forward_path, record_hubspot_events
from engine.models import Contact, Event
from tests.language_support import running, sent
from tests.support import contact, transitions

ONBOARDING = Workflow(
    "onboarding",
    trigger=on_stage_entered("onboarding"),
    steps=[send_email("onboarding_welcome", id="welcome")],
)


def hs(kind: str, object_id: int, at_ms: int, **extra: object) -> dict:
    return {
        "subscriptionType": kind,
        "objectId": object_id,
        "occurredAt": at_ms,
        "eventId": at_ms % 1000,
        "portalId": 62515,
        "attemptNumber": 0,
        **extra,
    }


def change(object_id: int, name: str, value: str, at_ms: int) -> dict:
    return hs("contact.propertyChange", object_id, at_ms, propertyName=name, propertyValue=value)


def test_a_hubspot_customer_moves_our_contact_forward_and_starts_onboarding(
    tmp_path: Path,
) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, email):
        batch = [
            change(501, "email", "Deal@Example.com", 1_000),
            change(501, "lifecyclestage", "customer", 2_000),
        ]
        result = record_hubspot_events(rt, batch)
        assert (result.recorded, result.rejected) == (2, [])
        rt.run_until_idle()
        deal = contact(rt, "deal@example.com")
        assert deal.external_ids == {"hubspot": "501"}
        assert deal.stage == "onboarding"
        assert [t.trigger for t in transitions(rt)] == ["created", "purchase", "onboard"]
        assert sent(email) == ["onboarding:welcome"]
        # the same batch again (HubSpot retries) records nothing new
        again = record_hubspot_events(rt, batch)
        assert (again.recorded, again.duplicates) == (0, 2)


def test_a_late_older_stage_never_moves_a_contact_backwards(tmp_path: Path) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, _email):
        record_hubspot_events(
            rt,
            [
                change(7, "email", "late@example.com", 1_000),
                change(7, "lifecyclestage", "customer", 3_000),
            ],
        )
        rt.run_until_idle()
        # an older change (opportunity, occurred before) arrives after the newer one
        record_hubspot_events(rt, [change(7, "lifecyclestage", "opportunity", 2_000)])
        rt.run_until_idle()
        assert contact(rt, "late@example.com").stage == "onboarding"
        with Session(rt.db) as session:
            kinds = [e.type for e in session.exec(select(Event))]
        assert kinds.count("crm.lifecycle_changed") == 2


def test_events_for_unlinked_objects_and_malformed_ones_are_counted(tmp_path: Path) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, _email):
        result = record_hubspot_events(
            rt,
            [
                change(99, "lifecyclestage", "customer", 1_000),
                {"objectId": 1},
                hs("contact.creation", 100, 1_000),
            ],
        )
        assert result.recorded == 0
        assert result.unknown_contacts == 2
        assert result.rejected == ["index 1: HubSpot event has no subscriptionType, occurredAt"]


def test_a_privacy_deletion_erases_the_contact(tmp_path: Path) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, _email):
        record_hubspot_events(
            rt,
            [
                change(8, "email", "forget@example.com", 1_000),
                change(8, "lifecyclestage", "customer", 2_000),
            ],
        )
        rt.run_until_idle()
        record_hubspot_events(rt, [hs("contact.privacyDeletion", 8, 3_000)])
        with Session(rt.db) as session:
            assert session.exec(select(Contact)).all() == []
            assert session.exec(select(Event)).all() == []


def test_forward_paths(tmp_path: Path) -> None:
    with running(tmp_path, [ONBOARDING]) as (rt, _clock, _email):
        registry = rt.registry
        assert forward_path(registry, "awareness", "onboarding") == ["purchase", "onboard"]
        assert forward_path(registry, "decision", "decision") == []
        assert forward_path(registry, "onboarding", "decision") is None
        assert forward_path(registry, "engagement", "advocacy") == ["retain", "reward", "advocate"]
