"""HubSpot delivers an object's webhooks concurrently. On PostgreSQL two of them recorded at
once each read the object's contact before the other committed: a lifecycle change made
after an email change landed on the old address though the email change committed first
(its carry-over ran before the lifecycle change was there to carry), and two email changes
left both new addresses linked to the object. An object's events are recorded one at a
time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from engine import VirtualClock, build_registry, inbound_crm, lifecycle_journey
from engine.inbound_crm import record_hubspot_events
from engine.models import Contact
from engine.runtime import Runtime
from tests.language_support import TEMPLATES
from tests.support import make_runtime
from tests.test_inbound_hubspot import ONBOARDING, change
from workflows.rules import RULES

pytestmark = pytest.mark.postgres


@pytest.fixture
def rt(pg_db_url: str) -> Iterator[Runtime]:
    runtime, _clock, _email = make_runtime(pg_db_url, create_schema=False)
    runtime.registry = build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=[ONBOARDING],
        templates_dir=TEMPLATES,
    )
    try:
        yield runtime
    finally:
        runtime.close()


def _ms(clock: VirtualClock, seconds: int) -> int:
    return int(clock.now().timestamp() * 1000) + seconds * 1000


def _waiting_on_a_lock(rt: Runtime) -> bool:
    with rt.db.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return bool(conn.execute(text(query)).scalar())


def _while_an_email_change_is_uncommitted(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, second: dict[str, Any]
) -> Callable[[], None]:
    """Record ``second`` in another thread while the email change being recorded here has
    moved the link and carried over what it found, and not committed yet; the email change
    commits once ``second`` waits for a lock or is done."""
    carry_over = inbound_crm._carry_over
    done = threading.Event()
    errors: list[BaseException] = []

    def record_second() -> None:
        try:
            record_hubspot_events(rt, [second])
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            done.set()

    def carry_over_then_let_the_other_in(*args: Any) -> None:
        carry_over(*args)
        monkeypatch.setattr(inbound_crm, "_carry_over", carry_over)  # once
        other = threading.Thread(target=record_second)
        other.start()
        for _ in range(2_000):  # until it waits on us, or finished without waiting
            if done.wait(0.005) or _waiting_on_a_lock(rt):
                break
        else:
            pytest.fail("the concurrent event neither waited nor finished")

    monkeypatch.setattr(inbound_crm, "_carry_over", carry_over_then_let_the_other_in)

    def joined() -> None:
        assert done.wait(30)
        assert not errors, errors

    return joined


def _linked(rt: Runtime) -> dict[str, str | None]:
    with Session(rt.db) as session:
        return dict(session.exec(select(Contact.email, Contact.hubspot_id)).all())  # type: ignore[arg-type]


def test_a_lifecycle_change_recorded_during_an_email_change_lands_on_the_new_address(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock: Any = rt.clock
    # Given HubSpot object 700 linked to old@
    record_hubspot_events(rt, [change(700, "email", "old@example.com", _ms(clock, -3))])
    # When its email change (t-2) and its lifecycle change (t-1) are recorded at once
    lifecycle = change(700, "lifecyclestage", "customer", _ms(clock, -1))
    joined = _while_an_email_change_is_uncommitted(rt, monkeypatch, lifecycle)
    record_hubspot_events(rt, [change(700, "email", "new@example.com", _ms(clock, -2))])
    joined()
    rt.run_until_idle()
    # Then the object's contact at its current address is the customer
    with Session(rt.db) as session:
        stages = dict(session.exec(select(Contact.email, Contact.stage)).all())  # type: ignore[arg-type]
    assert stages["new@example.com"] == "onboarding"
    assert _linked(rt) == {"old@example.com": None, "new@example.com": "700"}


def test_two_email_changes_recorded_at_once_leave_one_address_linked(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock: Any = rt.clock
    record_hubspot_events(rt, [change(8, "email", "a@example.com", _ms(clock, -3))])
    newest = change(8, "email", "c@example.com", _ms(clock, -1))
    joined = _while_an_email_change_is_uncommitted(rt, monkeypatch, newest)
    record_hubspot_events(rt, [change(8, "email", "b@example.com", _ms(clock, -2))])
    joined()
    assert _linked(rt) == {"a@example.com": None, "b@example.com": None, "c@example.com": "8"}
