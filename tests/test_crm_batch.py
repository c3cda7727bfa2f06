"""Batched HubSpot writes of ``update_crm`` steps, over real HTTP to the shipped FakeHubSpot.

Given many contacts entering an ``update_crm`` step at once (a broadcast, a schedule slot, a
sweep), when HubSpot is the CRM connector, then their actions go out through HubSpot's batch
endpoints (read, upsert, update: 100 contacts a call) instead of three calls per contact,
each action claimed once and given its own outcome.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from connectors.crm import HubSpotConnector, HubSpotRateLimiter
from connectors.fakes import FakeHubSpot
from engine import (
    Segment,
    Settings,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_schedule,
    on_segment_joined,
    stage_in,
    update_crm,
)
from engine.db import make_engine
from engine.models import Action, ActionStatus, Contact, metadata
from engine.runtime import Runtime
from engine.timeline import contact_timeline
from tests.language_support import TEMPLATES

TOKEN = "pat-batch-test"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
LEADS = Segment("leads", stage_in("consideration"))
READ, UPSERT, UPDATE = "POST batch/read", "POST batch/upsert", "POST batch/update"


def handoff(**overrides: Any) -> Workflow:
    fields: dict[str, Any] = {
        "name": "sales_handoff",
        "trigger": on_segment_joined(LEADS),
        "steps": [update_crm(lead_source="journeyline", id="mirror")],
    }
    fields.update(overrides)
    return Workflow(**fields)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jl.db"
    return str(request.getfixturevalue("pg_db_url"))


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as server:
        yield server


@contextmanager
def running(
    database_url: str,
    tmp_path: Path,
    fake: FakeHubSpot,
    workflows: Sequence[Workflow] = (),
    **settings: Any,
) -> Iterator[tuple[Runtime, VirtualClock]]:
    registry = build_registry(
        journey=lifecycle_journey(),
        workflows=list(workflows) or [handoff()],
        templates_dir=TEMPLATES,
    )
    db = make_engine(database_url)
    metadata.create_all(db)
    clock = VirtualClock(START)
    runtime = Runtime(
        Settings(
            database_url=database_url,
            broker_url="inline://",
            outbox_dir=tmp_path / "outbox",
            crm_connector="hubspot",
            hubspot_token=TOKEN,
            hubspot_base_url=fake.url,
            # Generous: on a loaded machine the in-process fake can answer a batch after the
            # default 10 s, and the connector then rightly sends an idempotent write again,
            # which the exact histories asserted here would count as a second write.
            **{"hubspot_timeout_seconds": 120.0, **settings},
        ),
        clock=clock,
        registry=registry,
        db=db,
    )
    try:
        yield runtime, clock
    finally:
        runtime.close()


def add_contacts(
    runtime: Runtime, count: int, *, stage: str = "consideration", timezone: str = "UTC"
) -> list[str]:
    emails = [f"c{i}@example.com" for i in range(count)]
    rows = [
        {
            "email": email,
            "timezone": timezone,
            "attributes": {},
            "external_ids": {},
            "stage": stage,
            "score": i % 100,
            "subscription_status": "subscribed",
            "version": 1,
            "stage_entered_at": START,
            "created_at": START,
            "updated_at": START,
        }
        for i, email in enumerate(emails)
    ]
    with Session(runtime.db) as session:
        session.execute(insert(Contact), rows)
        session.commit()
    return emails


def crm_actions(runtime: Runtime) -> list[Action]:
    with Session(runtime.db) as session:
        return list(
            session.exec(select(Action).where(Action.kind == "crm.update").order_by(col(Action.id)))
        )


def writes(fake: FakeHubSpot) -> int:
    counts = fake.request_counts()
    return sum(n for name, n in counts.items() if name != READ)


# --- many contacts at one step --------------------------------------------------------------


def test_250_contacts_entering_an_update_crm_step_take_3_upserts_instead_of_750_calls(
    database_url: str, tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(database_url, tmp_path, fake) as (runtime, _):
        # Given 250 contacts in consideration, unknown to HubSpot
        emails = add_contacts(runtime, 250)
        # When the workflow whose only step is update_crm is broadcast to them
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # Then 3 reads and 3 upserts of at most 100 contacts (the single path: 3 calls each)
    assert fake.request_counts() == {READ: 3, UPSERT: 3}
    assert [len(r.body["inputs"]) for r in fake.requests] == [100, 100, 100, 100, 50, 50]
    # and every action is sent once, with its contact's HubSpot id
    assert len(actions) == 250
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 1)}
    by_id = {a.contact_id: a for a in actions}
    for i, email in enumerate(emails):
        stored = fake.contact(email)
        assert stored is not None
        assert stored["lead_source"] == "journeyline"
        assert stored["lifecyclestage"] == "marketingqualifiedlead"  # in the same upsert
        assert stored["journeyline_score"] == str(i % 100)
        assert stored["journeyline_last_workflow"] == "sales_handoff"
        assert by_id[i + 1].provider_id == stored["hs_object_id"]


def test_existing_contacts_moving_forward_take_a_read_an_upsert_and_an_update_per_100(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        emails = add_contacts(runtime, 150)
        for email in emails:
            fake.add_contact(email, lifecyclestage="subscriber")
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert fake.request_counts() == {READ: 2, UPSERT: 2, UPDATE: 2}
    assert {a.status for a in actions} == {ActionStatus.SENT}
    assert fake.history(emails[0], "lifecyclestage") == ["subscriber", "marketingqualifiedlead"]
    update_body = next(r.body for r in fake.requests if r.path.endswith("/batch/update"))
    assert update_body["inputs"][0]["properties"] == {"lifecyclestage": "marketingqualifiedlead"}


def test_a_schedule_slot_sends_its_contacts_update_crm_actions_as_one_batch(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    weekly = handoff(trigger=on_schedule("0 9 * * MON"))
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [weekly]) as (runtime, clock):
        # Given 30 contacts in New York, where Monday 09:00 is still ahead at START
        add_contacts(runtime, 30, timezone="America/New_York")
        runtime.run_until_idle()
        # When the slot comes due and the scheduler fires it
        clock.set(datetime(2026, 3, 2, 14, 5, tzinfo=UTC))
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # Then the slot's 30 update_crm actions go out together
    assert len(actions) == 30 and {a.status for a in actions} == {ActionStatus.SENT}
    assert fake.request_counts() == {READ: 1, UPSERT: 1}


# --- exactly once ---------------------------------------------------------------------------


def test_a_redelivered_batch_job_writes_nothing_twice(tmp_path: Path, fake: FakeHubSpot) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        add_contacts(runtime, 40)
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        before = len(fake.requests)
        ids = [a.id for a in crm_actions(runtime)]

        outcome = runtime.perform_crm_batch(ids)  # the same message delivered again

    assert outcome.requests == 0
    assert outcome.statuses == {ActionStatus.SENT: 40}
    assert len(fake.requests) == before


def test_a_batch_a_worker_died_in_after_writing_is_taken_again_without_a_second_write(
    database_url: str, tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(database_url, tmp_path, fake) as (runtime, clock):
        emails = add_contacts(runtime, 120)
        for email in emails:
            fake.add_contact(email, lifecyclestage="subscriber")
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        written = writes(fake)
        # Given the worker wrote everything but died before recording it: the rows are left
        # `sending` under a lease that runs out
        with Session(runtime.db) as session:
            session.execute(
                update(Action).values(
                    status=ActionStatus.SENDING, lease_until=START, completed_at=None
                )
            )
            session.commit()
        # When the lease has expired and the sweeper hands the rows out again
        clock.advance(minutes=10)
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # Then they are batched again, read, and found done: nothing is written a second time
    assert writes(fake) == written
    assert fake.request_counts()[READ] == 4  # 2 batches, then the same 2 again
    assert {a.status for a in actions} == {ActionStatus.SENT}
    assert fake.history(emails[7], "lead_source") == ["journeyline"]
    assert fake.history(emails[7], "lifecyclestage") == ["subscriber", "marketingqualifiedlead"]


def test_a_batch_a_worker_died_in_before_writing_is_written_once(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, clock):
        emails = add_contacts(runtime, 10)
        runtime.broadcast("sales_handoff")
        runtime.broker.pending.clear()  # type: ignore[attr-defined]  # the worker died...
        with Session(runtime.db) as session:  # ...after claiming the batch
            session.execute(
                update(Action).values(status=ActionStatus.SENDING, lease_until=START, attempts=1)
            )
            session.commit()
        clock.advance(minutes=10)
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert fake.request_counts() == {READ: 1, UPSERT: 1}
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 2)}
    assert all(fake.history(e, "lead_source") == ["journeyline"] for e in emails)


# --- lifecycle stage ------------------------------------------------------------------------


def _mixed(fake: FakeHubSpot, emails: list[str]) -> None:
    """c0-c3 behind us (forward), c4-c5 where we are (same), c6-c9 ahead (backward)."""
    for i, email in enumerate(emails):
        stage = "lead" if i < 4 else "marketingqualifiedlead" if i < 6 else "customer"
        fake.add_contact(email, lifecyclestage=stage, lead_source="journeyline")


def test_forward_moves_are_batched_and_backward_ones_skipped_as_on_the_single_path(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        emails = add_contacts(runtime, 10)
        _mixed(fake, emails)
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert {a.status for a in actions} == {ActionStatus.SENT}
    (moved,) = [r for r in fake.requests if r.path.endswith("/batch/update")]
    assert len(moved.body["inputs"]) == 4  # only the forward ones
    stages = [(fake.contact(e) or {})["lifecyclestage"] for e in emails]
    assert stages == ["marketingqualifiedlead"] * 6 + ["customer"] * 4
    assert fake.history(emails[9], "lifecyclestage") == ["customer"]


def test_with_backward_moves_allowed_they_are_cleared_then_set_in_two_batch_calls(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    url = f"sqlite:///{tmp_path}/jl.db"
    with running(url, tmp_path, fake, hubspot_allow_backward=True) as (runtime, _):
        emails = add_contacts(runtime, 10)
        _mixed(fake, emails)
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert {a.status for a in actions} == {ActionStatus.SENT}
    cleared, moved = [r.body for r in fake.requests if r.path.endswith("/batch/update")]
    assert [i["properties"] for i in cleared["inputs"]] == [{"lifecyclestage": ""}] * 4
    assert len(moved["inputs"]) == 8  # 4 forward + 4 cleared
    assert {(fake.contact(e) or {})["lifecyclestage"] for e in emails} == {"marketingqualifiedlead"}
    assert fake.history(emails[9], "lifecyclestage") == [
        "customer",
        "",
        "marketingqualifiedlead",
    ]
    assert all("skipped" not in a.reason for a in actions)  # nothing was skipped


@pytest.mark.parametrize("batch_size", [100, 1], ids=["batched", "one_by_one"])
def test_a_skipped_backward_move_is_noted_on_its_action_and_in_the_timeline(
    tmp_path: Path, fake: FakeHubSpot, batch_size: int
) -> None:
    url = f"sqlite:///{tmp_path}/jl.db"
    with running(url, tmp_path, fake, hubspot_batch_size=batch_size) as (runtime, _):
        # Given c6-c9 are ahead of us in HubSpot (customer) and the others are not
        emails = add_contacts(runtime, 10)
        _mixed(fake, emails)
        # When the update_crm step runs, batched or one by one
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
        with Session(runtime.db) as session:
            timeline = contact_timeline(session, emails[9])
    # Then every action is sent, and those whose move was skipped say why
    assert {a.status for a in actions} == {ActionStatus.SENT}
    noted = {a.contact_id: a.reason["skipped"] for a in actions if "skipped" in a.reason}
    assert sorted(noted) == [7, 8, 9, 10]
    assert noted[10].startswith(
        "lifecyclestage not moved: 'customer' -> 'marketingqualifiedlead' is a backward move"
    )
    assert actions[9].reason["workflow"] == "sales_handoff"  # the note adds to the reason
    # and the contact's timeline shows it (so does `journeyline actions`)
    assert timeline is not None
    (entry,) = [e for e in timeline.entries if e.kind == "action"]
    assert "lifecyclestage not moved: 'customer' -> 'marketingqualifiedlead'" in entry.summary
    assert fake.history(emails[9], "lifecyclestage") == ["customer"]


@pytest.mark.parametrize("allow_backward", [False, True], ids=["skipped", "allowed"])
def test_a_new_contact_another_writer_creates_ahead_of_us_before_our_upsert_is_not_failed(
    database_url: str, tmp_path: Path, fake: FakeHubSpot, allow_backward: bool
) -> None:
    settings = {"hubspot_allow_backward": allow_backward}
    with running(database_url, tmp_path, fake, **settings) as (runtime, _):
        # Given 5 contacts unknown to HubSpot when the batch reads them
        emails = add_contacts(runtime, 5)
        # and another writer creates c2 as a customer right after that read
        fake.after_next(
            lambda hubspot: hubspot.add_contact(emails[2], lifecyclestage="customer"),
            path="/crm/v3/objects/contacts/batch/read",
        )
        # When the batch upserts them with their stage (c2's move would be backward now)
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # Then c2 is not failed: it is read again and handled like an existing contact
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 1)}
    raced = fake.contact(emails[2]) or {}
    assert raced["lead_source"] == "journeyline"  # its properties, upserted again
    assert actions[2].provider_id == raced["hs_object_id"]
    upserts = [r.body for r in fake.requests if r.path.endswith("/batch/upsert")]
    again = upserts[-1]["inputs"]
    assert [i["id"] for i in again] == [emails[2]]
    assert "lifecyclestage" not in again[0]["properties"]
    reads = [r.body for r in fake.requests if r.path.endswith("/batch/read")]
    assert [[i["id"] for i in r["inputs"]] for r in reads] == [emails, [emails[2]]]
    assert all(fake.history(e, "lead_source") == ["journeyline"] for e in emails)
    if allow_backward:  # as on the single path: cleared, then set
        assert fake.history(emails[2], "lifecyclestage") == [
            "customer",
            "",
            "marketingqualifiedlead",
        ]
        assert "skipped" not in actions[2].reason
    else:  # as on the single path: the move is skipped, and the action says why
        assert fake.history(emails[2], "lifecyclestage") == ["customer"]
        assert "'customer' -> 'marketingqualifiedlead'" in actions[2].reason["skipped"]
    others = [a for i, a in enumerate(actions) if i != 2]
    assert all("skipped" not in a.reason for a in others)
    assert all(
        (fake.contact(e) or {})["lifecyclestage"] == "marketingqualifiedlead"
        for e in emails
        if e != emails[2]
    )


def test_a_new_contact_refused_for_another_reason_still_fails_with_its_own_error(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        emails = add_contacts(runtime, 4)
        fake.refuse_contact(emails[1], "Property values were not valid: lead_source")
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # read again (it may have raced), found absent: the upsert's own error stands
    assert [a.status for a in actions].count(ActionStatus.FAILED) == 1
    assert "lead_source" in (actions[1].error or "")
    reads = [r.body for r in fake.requests if r.path.endswith("/batch/read")]
    assert [[i["id"] for i in r["inputs"]] for r in reads] == [emails, [emails[1]]]


# --- partial failures -----------------------------------------------------------------------


def test_one_contact_hubspot_refuses_fails_alone_and_the_other_99_are_written(
    database_url: str, tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(database_url, tmp_path, fake) as (runtime, _):
        emails = add_contacts(runtime, 100)
        # Given HubSpot refuses one contact's values: a batch naming it fails whole (400)
        fake.refuse_contact(emails[37], "Property values were not valid: journeyline_score")
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    # Then that contact's action fails with HubSpot's reason, and only that one
    failed = [a for a in actions if a.status == ActionStatus.FAILED]
    assert [a.contact_id for a in failed] == [38]
    assert "permanent error" in (failed[0].error or "")
    assert "journeyline_score" in (failed[0].error or "")
    assert sum(a.status == ActionStatus.SENT for a in actions) == 99
    # and the batch was split to find it: every good contact written exactly once
    assert fake.contact(emails[37]) is None and fake.contact_count() == 99
    assert all(fake.history(e, "lead_source") == ["journeyline"] for e in emails if e != emails[37])
    upserts = [r for r in fake.requests if r.path.endswith("/batch/upsert")]
    # 100 -> 50 -> 25 -> 13 -> 6 -> 3 -> 1: at each of 6 levels one good half is written
    assert [r.status for r in upserts].count(200) == 6
    assert len(upserts) == 1 + 2 * 6


def test_a_contact_deleted_in_hubspot_between_read_and_update_fails_alone(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        emails = add_contacts(runtime, 5)
        for email in emails:
            fake.add_contact(email, lifecyclestage="lead", lead_source="journeyline")
        # Given the batch update answers 207: one contact is gone
        others = [
            {"id": i, "properties": {"lifecyclestage": "marketingqualifiedlead"}}
            for i in ("101", "102", "104", "105")
        ]
        fake.fail_next(
            207,
            body={
                "status": "COMPLETE",
                "results": others,
                "errors": [
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Could not update some CONTACT objects",
                        "context": {"ids": ["103"]},
                    }
                ],
            },
            path="/crm/v3/objects/contacts/batch/update",
        )
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    failed = [a for a in actions if a.status == ActionStatus.FAILED]
    assert [a.contact_id for a in failed] == [3]  # HubSpot id 103 is the third contact
    assert "OBJECT_NOT_FOUND" in (failed[0].error or "")


def test_a_429_with_retry_after_leaves_the_batch_pending_then_it_goes_out_as_a_batch(
    database_url: str, tmp_path: Path, fake: FakeHubSpot
) -> None:
    url = database_url
    with running(url, tmp_path, fake, hubspot_max_retries=0) as (runtime, clock):
        add_contacts(runtime, 50)
        # Given HubSpot answers the upsert 429 with its rate-limit headers and Retry-After
        fake.fail_next(
            429,
            headers={"Retry-After": "30", "X-HubSpot-RateLimit-Remaining": "0"},
            path="/crm/v3/objects/contacts/batch/upsert",
        )
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        first = crm_actions(runtime)
        # Then every action waits at least Retry-After, pending, with the reason
        assert {a.status for a in first} == {ActionStatus.PENDING}
        assert all("429" in (a.error or "") for a in first)
        assert all(
            a.next_attempt_at.replace(tzinfo=UTC) >= START + timedelta(seconds=30) for a in first
        )
        # When the wait is over, the sweeper sends them again, batched
        clock.advance(hours=1)
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert [r.status for r in fake.requests] == [207, 429, 207, 200]
    assert len(fake.requests[-1].body["inputs"]) == 50
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 2)}


def test_a_429_inside_the_batch_is_retried_by_the_connector_after_the_interval_header(
    tmp_path: Path, fake: FakeHubSpot
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake) as (runtime, _):
        add_contacts(runtime, 20)
        fake.fail_next(
            429,
            headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "10"},
            path="/crm/v3/objects/contacts/batch/read",
        )
        runtime.broadcast("sales_handoff")
        runtime.run_until_idle()
        actions = crm_actions(runtime)
    assert [r.status for r in fake.requests] == [429, 207, 200]
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 1)}


# --- the connector's batch calls --------------------------------------------------------------


@pytest.fixture
def crm(fake: FakeHubSpot) -> Iterator[HubSpotConnector]:
    connector = HubSpotConnector(
        token=TOKEN,
        base_url=fake.url,
        limiter=HubSpotRateLimiter(sleep=lambda _s: None),
        jitter=lambda: 0.0,
        timeout_s=5.0,
    )
    yield connector
    connector.close()


def test_batch_read_finds_known_contacts_and_names_the_missing_ones(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    ada = fake.add_contact("ada@example.com", lifecyclestage="lead", plan="pro")
    result = crm.batch_read_contacts(["Ada@Example.com", "bob@example.com"], ["plan"])
    assert result.records["ada@example.com"].id == ada
    assert result.records["ada@example.com"].properties["plan"] == "pro"
    assert result.missing == ["bob@example.com"] and result.errors == {}
    (request,) = fake.requests
    assert request.status == 207
    assert request.body["idProperty"] == "email"
    assert request.body["properties"] == ["email", "lifecyclestage", "plan"]


def test_batch_update_takes_100_a_call_and_merges_a_contact_named_twice(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    ids = [fake.add_contact(f"u{i}@example.com") for i in range(150)]
    updates = [(contact_id, {"plan": "pro"}) for contact_id in ids]
    result = crm.batch_update_contacts([*updates, (ids[0], {"seats": 3})])
    assert [len(r.body["inputs"]) for r in fake.requests] == [100, 50]
    assert result.requests == 2 and result.errors == {} and len(result.records) == 150
    assert (fake.contact("u0@example.com") or {})["seats"] == "3"


def test_a_whole_batch_refused_is_split_down_to_the_input_at_fault(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    ids = [fake.add_contact(f"u{i}@example.com", lifecyclestage="customer") for i in range(8)]
    # one input moves lifecyclestage backwards: HubSpot refuses the whole batch
    updates = [(i, {"lifecyclestage": "evangelist"}) for i in ids]
    updates[5] = (ids[5], {"lifecyclestage": "lead"})
    result = crm.batch_update_contacts(updates)
    assert list(result.errors) == [ids[5]]
    assert "backward" in str(result.errors[ids[5]])
    assert len(result.records) == 7
    # all 8 -> 0-3 ok, 4-7 -> 4-5 -> 4 ok, 5 refused; then 6-7 ok
    assert [r.status for r in fake.requests] == [400, 200, 400, 400, 200, 400, 200]
    assert result.requests == 7


def test_the_fake_refuses_duplicates_and_more_than_100_inputs(fake: FakeHubSpot) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{fake.url}/crm/v3/objects/contacts/batch/read"
    twice = {"inputs": [{"id": "a@example.com"}, {"id": "A@example.com"}], "idProperty": "email"}
    too_many = {"inputs": [{"id": str(i)} for i in range(101)]}
    with httpx.Client() as client:
        duplicate = client.post(url, json=twice, headers=headers)
        over = client.post(url, json=too_many, headers=headers)
    assert duplicate.status_code == 400 and "Duplicate IDs" in duplicate.json()["message"]
    assert over.status_code == 400 and "limit" in over.json()["message"]
