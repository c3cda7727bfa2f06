"""Guard rails inside batched sends: quiet hours hold exactly the contacts whose local time
is quiet, without a query per contact, and a held email goes out later, batched again."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from connectors import SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import (
    EventRule,
    Guardrails,
    Settings,
    VirtualClock,
    Workflow,
    at_most,
    build_registry,
    lifecycle_journey,
    on_stage_entered,
    quiet_hours,
    send_email,
)
from engine.api.events import EventIn, record_all
from engine.db import make_engine
from engine.models import Action, ActionStatus, Contact, metadata
from engine.runtime import Runtime
from tests.support import statements
from tests.test_broadcast import KEY, TEMPLATES, add_contacts

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 10:00 in London, 19:00 in Tokyo
SALE = Workflow(
    "spring_sale",
    trigger=on_stage_entered("consideration"),
    steps=[send_email("spring_sale", id="sale")],
)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, fake: FakeSendGrid) -> Iterator[tuple[Runtime, VirtualClock]]:
    guardrails = Guardrails(quiet_hours=quiet_hours("18:00", "09:00"))
    yield from _world(tmp_path, fake, [SALE], guardrails)


def _world(
    tmp_path: Path,
    fake: FakeSendGrid,
    workflows: list[Workflow],
    guardrails: Guardrails,
    rules: tuple[EventRule, ...] = (),
    url: str | None = None,
) -> Iterator[tuple[Runtime, VirtualClock]]:
    templates = tmp_path / "templates"
    templates.mkdir()
    for name, body in TEMPLATES.items():
        (templates / f"{name}.j2").write_text(body)
    registry = build_registry(
        journey=lifecycle_journey(),
        rules=rules,
        workflows=workflows,
        templates_dir=templates,
        guardrails=guardrails,
    )
    url = url or f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    metadata.create_all(db)
    clock = VirtualClock(START)
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://", outbox_dir=tmp_path / "outbox"),
        clock=clock,
        registry=registry,
        email=SendGridEmailConnector(api_key=KEY, host=fake.url, timeout_s=30.0),
        db=db,
    )
    try:
        yield runtime, clock
    finally:
        runtime.close()


def add(runtime: Runtime, zone: str, count: int) -> None:
    add_contacts(runtime, count, prefix=zone.split("/")[-1].lower(), timezone=zone)


def actions_by_zone(runtime: Runtime) -> dict[str, set[str]]:
    with Session(runtime.db) as session:
        found = session.exec(
            select(Contact.timezone, Action.status)
            .join(Action, col(Action.contact_id) == col(Contact.id))
            .where(Action.kind == "email")
        ).all()
    zones: dict[str, set[str]] = {}
    for zone, status in found:
        zones.setdefault(zone, set()).add(status)
    return zones


def test_quiet_hours_hold_only_the_contacts_in_them_and_cost_no_query_each(
    world: tuple[Runtime, VirtualClock], fake: FakeSendGrid
) -> None:
    runtime, clock = world
    add(runtime, "Europe/London", 30)
    add(runtime, "Asia/Tokyo", 30)
    runtime.broadcast("spring_sale")  # enrolled and dispatched; sent in drain() below
    with statements(runtime.db) as seen:
        runtime.drain()
    # London (10:00) is sent in one request; Tokyo (19:00) is held until 09:00 local.
    assert [len(r.body["personalizations"]) for r in fake.requests] == [30]
    assert actions_by_zone(runtime) == {
        "Europe/London": {ActionStatus.SENT},
        "Asia/Tokyo": {ActionStatus.PENDING},
    }
    with Session(runtime.db) as session:
        held = session.exec(
            select(Action).join(Contact).where(Contact.timezone == "Asia/Tokyo")
        ).all()
    assert {a.next_attempt_at for a in held} == {datetime(2026, 3, 3, 0, 0, tzinfo=UTC)}
    assert {a.reason["held"][-1]["rule"] for a in held} == {"quiet hours 18:00-09:00 (Asia/Tokyo)"}
    # The whole claim was a handful of statements, not a few per contact.
    assert len(seen) < 20, collections.Counter(s[:70] for s in seen)

    clock.set(datetime(2026, 3, 3, 0, 1, tzinfo=UTC))  # 09:01 in Tokyo
    runtime.run_until_idle()
    assert [len(r.body["personalizations"]) for r in fake.requests] == [30, 30]
    assert actions_by_zone(runtime)["Asia/Tokyo"] == {ActionStatus.SENT}
    assert {a.attempts for a in held} == {0}  # a hold is not an attempt


def test_a_contact_with_a_held_email_keeps_its_order_inside_a_batch(
    world: tuple[Runtime, VirtualClock], fake: FakeSendGrid
) -> None:
    """History rules still apply in a batch: an email queued behind a held one waits for it."""
    runtime, clock = world
    add(runtime, "Asia/Tokyo", 3)
    runtime.broadcast("spring_sale")
    runtime.drain()
    assert fake.requests == []  # all three held by quiet hours
    clock.set(datetime(2026, 3, 3, 0, 1, tzinfo=UTC))
    runtime.run_until_idle()
    assert [len(r.body["personalizations"]) for r in fake.requests] == [3]


def test_a_frequency_cap_holds_only_contacts_emailed_recently_with_one_history_query(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    """The cap reads every batched contact's recent emails in one query, not one each."""
    summer = Workflow(
        "summer_sale",
        trigger=on_stage_entered("consideration"),
        steps=[send_email("spring_sale", id="summer")],
    )
    worlds = _world(tmp_path, fake, [SALE, summer], Guardrails(cap=at_most(1, per_days=1)))
    runtime, clock = next(worlds)
    try:
        add(runtime, "Europe/London", 10)
        runtime.broadcast("spring_sale")
        runtime.drain()
        add_contacts(runtime, 5, prefix="late", timezone="Europe/London")
        runtime.broadcast("summer_sale")  # the first 10 had an email today; "late" none
        with statements(runtime.db) as seen:
            runtime.drain()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [10, 5]
        with Session(runtime.db) as session:
            summer_actions = session.exec(
                select(Contact.email, Action.status, Action.reason)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(col(Action.idempotency_key).endswith(":step:summer"))
            ).all()
        held = {email for email, status, _ in summer_actions if status == ActionStatus.PENDING}
        sent = {email for email, status, _ in summer_actions if status == ActionStatus.SENT}
        assert held == {f"london{i}@example.com" for i in range(10)}
        assert sent == {f"late{i}@example.com" for i in range(5)}
        assert {r["held"][-1]["rule"] for _, s, r in summer_actions if s == "pending"} == {
            "frequency cap: 1 per 1 day"
        }
        history = [
            s
            for s in seen
            if "actions.kind = " in s and "actions.contact_id" in s.split("WHERE")[-1]
        ]
        history = [s for s in history if "GROUP BY" not in s]
        assert len(history) == 1, history  # one read of recent emails for the whole batch

        clock.set(clock.now() + timedelta(days=1, minutes=1))
        runtime.run_until_idle()
        assert [len(r.body["personalizations"]) for r in fake.requests] == [10, 5, 10]
    finally:
        next(worlds, None)


TRIAL = EventRule("trial.started", triggers=("evaluate",))


def _two_emails_on_decision() -> list[Workflow]:
    """Two workflows that each send one email when a contact enters decision."""
    return [
        Workflow(
            "spring_sale",
            trigger=on_stage_entered("decision"),
            steps=[send_email("spring_sale", id="sale")],
        ),
        Workflow(
            "sale_reminder",
            trigger=on_stage_entered("decision"),
            steps=[send_email("sale_reminder", id="reminder")],
        ),
    ]


def test_emails_of_different_steps_from_one_job_share_a_batch_not_one_job_each(
    tmp_path: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workflows answer one stage change: their two emails go in one batch job (one
    claim), and each still gets a request with its own content."""
    worlds = _world(tmp_path, fake, _two_emails_on_decision(), Guardrails(), rules=(TRIAL,))
    runtime, _clock = next(worlds)
    try:
        singles: list[int] = []
        batches: list[list[int]] = []
        monkeypatch.setattr(runtime, "perform", singles.append)
        perform_batch = runtime.perform_batch
        monkeypatch.setattr(
            runtime, "perform_batch", lambda ids: (batches.append(ids), perform_batch(ids))[1]
        )
        runtime.track("ana@example.com", "trial.started")
        runtime.drain()
        assert singles == []
        assert [len(batch) for batch in batches] == [2]
        subjects = sorted(r.body["subject"] for r in fake.requests)
        assert subjects == ["Last day of the sale", "Spring sale: 20% off"]
        assert [len(r.body["personalizations"]) for r in fake.requests] == [1, 1]
        with Session(runtime.db) as session:
            statuses = session.exec(select(Action.status).where(Action.kind == "email")).all()
        assert statuses == [ActionStatus.SENT, ActionStatus.SENT]
    finally:
        next(worlds, None)


def test_two_emails_to_one_contact_in_one_batch_still_respect_the_cap(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    """A cap of one a day holds the second of two emails a stage change causes, though both
    are claimed in the same batch: the first one claimed counts for the second."""
    guardrails = Guardrails(cap=at_most(1, per_days=1))
    worlds = _world(tmp_path, fake, _two_emails_on_decision(), guardrails, rules=(TRIAL,))
    runtime, clock = next(worlds)
    try:
        runtime.track("ana@example.com", "trial.started")
        runtime.drain()
        assert len(fake.requests) == 1
        with Session(runtime.db) as session:
            emails = session.exec(
                select(Action).where(Action.kind == "email").order_by(col(Action.id))
            ).all()
        assert [a.status for a in emails] == [ActionStatus.SENT, ActionStatus.PENDING]
        assert emails[1].reason["held"][-1]["rule"] == "frequency cap: 1 per 1 day"

        clock.set(clock.now() + timedelta(days=1, minutes=1))
        runtime.run_until_idle()
        assert len(fake.requests) == 2  # the held one, a day later
    finally:
        next(worlds, None)


def test_transactional_email_of_one_job_shares_requests_on_its_own_queue_never_held(
    tmp_path: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receipts that one job writes for several contacts go out in one request on the
    transactional queue, apart from the marketing email of the same job; quiet hours hold
    the marketing email but not the receipts, and consent is not asked of a receipt."""
    workflows = [
        Workflow(
            "receipt",
            trigger=on_stage_entered("decision"),
            steps=[send_email("hello_name", id="receipt", marketing=False)],
        ),
        *_two_emails_on_decision()[:1],
    ]
    guardrails = Guardrails(quiet_hours=quiet_hours("18:00", "09:00"))
    worlds = _world(tmp_path, fake, workflows, guardrails, rules=(TRIAL,))
    runtime, _clock = next(worlds)
    try:
        add_contacts(runtime, 2, prefix="london", timezone="Europe/London")  # 10:00 there
        add_contacts(runtime, 2, prefix="tokyo", timezone="Asia/Tokyo")  # 19:00: quiet
        with Session(runtime.db) as session:
            gone = session.exec(select(Contact).where(Contact.email == "tokyo1@example.com")).one()
            gone.subscription_status = "unsubscribed"
            session.add(gone)
            session.commit()
        sent: list[tuple[str, str, int]] = []
        enqueue = runtime.broker.enqueue

        def recording(message, **kwargs):  # type: ignore[no-untyped-def]
            if message.actor_name.startswith("perform"):
                arg = message.args[0]
                sent.append(
                    (
                        message.actor_name,
                        message.queue_name,
                        len(arg) if isinstance(arg, list) else 1,
                    )
                )
            return enqueue(message, **kwargs)

        monkeypatch.setattr(runtime.broker, "enqueue", recording)
        emails = [f"{p}{i}@example.com" for p in ("london", "tokyo") for i in range(2)]
        record_all(runtime, [EventIn(email=email, type="trial.started") for email in emails])
        runtime.drain()

        assert sorted(sent) == [
            ("perform_email_batch", "journeyline", 3),  # not the unsubscribed one
            ("perform_transactional_batch", "journeyline_transactional", 4),
        ]
        receipts = [r for r in fake.requests if r.body["subject"].startswith("Hello")]
        assert len(receipts) == 1  # every receipt, in one request
        assert sorted(p["to"][0]["email"] for p in receipts[0].body["personalizations"]) == sorted(
            emails
        )
        with Session(runtime.db) as session:
            rows = session.exec(
                select(Contact.email, Action.reason, Action.status)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(Action.kind == "email")
            ).all()
        statuses = {(email, reason["workflow"]): status for email, reason, status in rows}
        assert {k: v for k, v in statuses.items() if k[1] == "receipt"} == {
            (email, "receipt"): ActionStatus.SENT for email in emails
        }
        assert {k[0]: v for k, v in statuses.items() if k[1] == "spring_sale"} == {
            "london0@example.com": ActionStatus.SENT,
            "london1@example.com": ActionStatus.SENT,
            "tokyo0@example.com": ActionStatus.PENDING,  # held: 19:00 in Tokyo
        }  # and none for tokyo1, unsubscribed, who still has a receipt
    finally:
        next(worlds, None)
