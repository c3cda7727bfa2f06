"""Broadcasts and batched sends, end to end over real HTTP to the fake SendGrid.

Given contacts in a segment and a workflow triggered by it, when it is broadcast, then each
contact's first email goes out in requests of up to 1,000 personalizations, each mapped back
to its action by ``custom_args``; suppression, failures, timeouts and redelivered jobs keep
the exactly-once rules of the single-send path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from sqlalchemy import insert, update
from sqlmodel import Session, col, select

import engine
from connectors import SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import (
    Segment,
    Settings,
    ValidationError,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_condition,
    on_event,
    on_schedule,
    on_segment_joined,
    on_stage_left,
    pipeline,
    pipeline_jobs,
    send_email,
    stage_in,
    wait,
)
from engine.broadcast import PUBLIC_TRIGGER_NAMES, audience_of, public_trigger, sql_filter
from engine.conditions import all_of, any_of, attribute, not_, score, subscribed
from engine.db import make_engine
from engine.models import (
    Action,
    ActionStatus,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Suppression,
    metadata,
)
from engine.runtime import WAKES_PER_JOB, Runtime
from engine.steps import add_tag
from engine.workflow import Trigger

KEY = "SG.broadcast-test"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

TEMPLATES = {
    "spring_sale": (
        "{% block subject %}Spring sale: 20% off{% endblock %}"
        "{% block text %}Everything is 20% off this week.{% endblock %}"
    ),
    "sale_reminder": (
        "{% block subject %}Last day of the sale{% endblock %}"
        "{% block text %}The sale ends tonight.{% endblock %}"
    ),
    "hello_name": (
        "{% block subject %}Hello {{ contact.first_name | default('there') }}{% endblock %}"
        "{% block text %}Hi {{ contact.first_name | default('there') }}.{% endblock %}"
    ),
    "hello_plan": (
        "{% block subject %}News for {{ contact.first_name }}{% endblock %}"
        "{% block text %}{% if contact.plan == 'pro' %}Pro tips, {{ contact.first_name }}"
        "{% else %}Hi {{ contact.first_name }}, see Pro{% endif %} ({{ contact.email }})"
        "{% endblock %}"
        "{% block html %}<p>Hi {{ contact.first_name }}</p><p>{{ contact.score + 1 }}</p>"
        "{% endblock %}"
    ),
    "hello_html": (
        "{% block subject %}Hello {{ contact.first_name }}{% endblock %}"
        "{% block text %}Hi {{ contact.first_name }}, your plan: {{ contact.plan }}{% endblock %}"
        "{% block html %}<p>Hi <b>{{ contact.first_name }}</b> ({{ contact.plan }})</p>"
        "{% endblock %}"
    ),
}

LEADS = Segment("leads", stage_in("consideration"))


def sale(**overrides: Any) -> Workflow:
    fields: dict[str, Any] = {
        "name": "spring_sale",
        "trigger": on_segment_joined(LEADS),
        "steps": [
            send_email("spring_sale", id="sale"),
            wait(days=3),
            send_email("sale_reminder", id="reminder"),
        ],
    }
    fields.update(overrides)
    return Workflow(**fields)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jl.db"
    return str(request.getfixturevalue("pg_db_url"))


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@contextmanager
def running(
    database_url: str,
    tmp_path: Path,
    fake: FakeSendGrid,
    workflows: Sequence[Workflow],
    *,
    batch_size: int = 1000,
    timeout_s: float = 30.0,  # generous: a busy CI machine is slow to parse 1,000 recipients
    substitutions: bool = True,
) -> Iterator[tuple[Runtime, VirtualClock]]:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    for name, body in TEMPLATES.items():
        (templates / f"{name}.j2").write_text(body)
    registry = build_registry(
        journey=lifecycle_journey(), workflows=workflows, templates_dir=templates
    )
    db = make_engine(database_url)
    metadata.create_all(db)
    clock = VirtualClock(START)
    connector = SendGridEmailConnector(
        api_key=KEY,
        host=fake.url,
        timeout_s=timeout_s,
        batch_size=batch_size,
        substitutions=substitutions,
    )
    runtime = Runtime(
        Settings(database_url=database_url, broker_url="inline://", outbox_dir=tmp_path / "outbox"),
        clock=clock,
        registry=registry,
        email=connector,
        db=db,
    )
    try:
        yield runtime, clock
    finally:
        runtime.close()


def add_contacts(
    runtime: Runtime,
    count: int,
    *,
    stage: str = "consideration",
    prefix: str = "c",
    attributes: dict[str, Any] | None = None,
    timezone: str = "UTC",
) -> None:
    rows = [
        {
            "email": f"{prefix}{i}@example.com",
            "timezone": timezone,
            "attributes": dict(attributes or {}),
            "external_ids": {},
            "stage": stage,
            "score": i % 100,
            "subscription_status": "subscribed",
            "version": 1,
            "stage_entered_at": START,
            "created_at": START,
            "updated_at": START,
        }
        for i in range(count)
    ]
    with Session(runtime.db) as session:
        session.execute(insert(Contact), rows)
        session.commit()


def email_actions(runtime: Runtime) -> list[Action]:
    with Session(runtime.db) as session:
        return list(
            session.exec(select(Action).where(Action.kind == "email").order_by(col(Action.id)))
        )


def emails_by_contact(runtime: Runtime) -> dict[int, str]:
    with Session(runtime.db) as session:
        return {c.id: c.email for c in session.exec(select(Contact))}  # type: ignore[misc]


def test_a_broadcast_to_2500_contacts_takes_three_requests_each_mapped_to_its_action(
    database_url: str, tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(database_url, tmp_path, fake, [sale()]) as (runtime, _):
        add_contacts(runtime, 2500)
        add_contacts(runtime, 40, stage="awareness", prefix="other")  # outside the segment

        result = runtime.broadcast("spring_sale")
        runtime.drain()

        assert (result.matched, result.enrolled, result.actions) == (2500, 2500, 2500)
        assert result.fast_path
        requests = fake.requests
        assert [len(r.body["personalizations"]) for r in requests] == [1000, 1000, 500]
        assert all(r.status == 202 for r in requests)
        actions = {a.id: a for a in email_actions(runtime)}
        emails = emails_by_contact(runtime)
        message_ids = {r.message_id for r in requests}
        mapped = 0
        for request in requests:
            for personalization in request.body["personalizations"]:
                args = personalization["custom_args"]
                action = actions[int(args["jl_action_id"])]
                assert int(args["jl_contact_id"]) == action.contact_id
                assert personalization["to"] == [{"email": emails[action.contact_id]}]
                assert action.status == ActionStatus.SENT
                assert action.provider_id == request.message_id
                assert action.attempts == 1
                mapped += 1
        assert mapped == len(actions) == 2500 and len(message_ids) == 3
        assert {a.idempotency_key.split(":")[-1] for a in actions.values()} == {"sale"}
        with Session(runtime.db) as session:
            enrollments = list(session.exec(select(Enrollment)))
        assert len(enrollments) == 2500
        assert {(e.status, e.wake_at, e.position) for e in enrollments} == {
            (EnrollmentStatus.WAITING, START + timedelta(days=3), 2)
        }


def test_after_the_broadcast_the_scheduler_carries_each_enrollment_on(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()]) as (runtime, clock):
        add_contacts(runtime, 12)
        runtime.broadcast("spring_sale")
        runtime.drain()
        clock.advance(days=3, minutes=1)
        runtime.run_until_idle()
        reminders = [a for a in email_actions(runtime) if a.reason["step"] == "reminder"]
        with Session(runtime.db) as session:
            ended = {e.status for e in session.exec(select(Enrollment))}
    assert len(reminders) == 12
    assert {a.status for a in reminders} == {ActionStatus.SENT}
    assert ended == {EnrollmentStatus.COMPLETED}


def test_the_step_after_a_wait_goes_out_in_batches_too(
    database_url: str, tmp_path: Path, fake: FakeSendGrid
) -> None:
    """Enrollments that wake at the same instant are woken a job's worth at a time, in one
    transaction, and the emails they reach share requests like the broadcast's own."""
    with running(database_url, tmp_path, fake, [sale()]) as (runtime, clock):
        add_contacts(runtime, 50)
        runtime.broadcast("spring_sale")
        runtime.drain()
        before = len(fake.requests)
        clock.advance(days=3, minutes=1)
        runtime.run_until_idle()
        sizes = [len(r.body["personalizations"]) for r in fake.requests[before:]]
        reminders = [a for a in email_actions(runtime) if a.reason["step"] == "reminder"]
        runtime.run_until_idle()  # nothing left to do, nothing sent again
        with Session(runtime.db) as session:
            woken = [e.id for e in session.exec(select(Enrollment))]
        again = runtime.wake_many(woken)  # a redelivered wake_enrollments job
        runtime.drain()
        assert (again.actions, len(fake.requests)) == ([], before + len(sizes))
    per_job = WAKES_PER_JOB
    assert sizes == [per_job, per_job, 50 - 2 * per_job]
    assert len(reminders) == 50
    assert {a.status for a in reminders} == {ActionStatus.SENT}
    assert {a.attempts for a in reminders} == {1}


def test_one_enrollment_that_cannot_wake_does_not_hold_up_the_others(
    tmp_path: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()]) as (runtime, clock):
        add_contacts(runtime, 5)
        runtime.broadcast("spring_sale")
        runtime.drain()
        with Session(runtime.db) as session:
            ids = sorted(e.id for e in session.exec(select(Enrollment)))  # type: ignore[type-var]
        bad = ids[2]
        real = pipeline.wake

        def wake(session, registry, contact, enrollment, *, now):  # type: ignore[no-untyped-def]
            if enrollment.id == bad:
                raise RuntimeError("database went away")
            return real(session, registry, contact, enrollment, now=now)

        monkeypatch.setattr(pipeline_jobs, "wake", wake)  # woken together
        monkeypatch.setattr(pipeline, "wake", wake)  # then one by one
        clock.advance(days=3, minutes=1)
        with pytest.raises(RuntimeError, match="database went away"):
            runtime.wake_many(ids)
        runtime.drain()
        with Session(runtime.db) as session:
            waiting = {e.id for e in session.exec(select(Enrollment)) if e.status == "waiting"}
        reminders = [a for a in email_actions(runtime) if a.reason["step"] == "reminder"]
        assert waiting == {bad}  # kept for the retry; the other four went on and were sent
        assert len(reminders) == 4 and {a.status for a in reminders} == {ActionStatus.SENT}


def test_broadcasting_twice_enrolls_and_sends_nobody_twice(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()]) as (runtime, _):
        add_contacts(runtime, 30)
        runtime.broadcast("spring_sale")
        runtime.drain()
        again = runtime.broadcast("spring_sale")
        runtime.drain()
    assert (again.matched, again.enrolled, again.skipped, again.actions) == (30, 0, 30, 0)
    assert len(fake.sent_messages()) == 30


def test_a_suppressed_contact_inside_a_batch_is_skipped_with_its_reason(
    database_url: str, tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(database_url, tmp_path, fake, [sale()]) as (runtime, _):
        add_contacts(runtime, 10)
        runtime.broadcast("spring_sale")
        # The contact bounces after the broadcast was written, before its batch is sent.
        with Session(runtime.db) as session:
            session.add(Suppression(email="c3@example.com", reason="bounce", created_at=START))
            session.commit()
        runtime.drain()
        actions = email_actions(runtime)
    (request,) = fake.requests
    sent_to = [p["to"][0]["email"] for p in request.body["personalizations"]]
    assert len(sent_to) == 9 and "c3@example.com" not in sent_to
    skipped = [a for a in actions if a.status == ActionStatus.SKIPPED]
    assert len(skipped) == 1
    assert skipped[0].reason["skipped"] == "suppressed (bounce)"


def test_a_redelivered_batch_job_sends_nothing_twice(
    database_url: str, tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(database_url, tmp_path, fake, [sale()]) as (runtime, _):
        add_contacts(runtime, 20)
        runtime.broadcast("spring_sale")
        runtime.drain()
        ids = [a.id for a in email_actions(runtime)]

        outcome = runtime.perform_batch(ids)  # the same message delivered again

        assert outcome.requests == 0
        assert outcome.statuses == {ActionStatus.SENT: 20}
        assert len(fake.requests) == 1


def test_a_batch_a_dead_worker_left_mid_send_becomes_unknown_not_resent(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()]) as (runtime, clock):
        add_contacts(runtime, 5)
        runtime.broadcast("spring_sale")
        runtime.broker.pending.clear()  # type: ignore[attr-defined]  # the worker died...
        with Session(runtime.db) as session:  # ...after claiming the batch
            session.execute(
                update(Action).values(status=ActionStatus.SENDING, lease_until=START, attempts=1)
            )
            session.commit()
        clock.advance(minutes=10)
        runtime.run_until_idle()
        actions = email_actions(runtime)
    assert fake.requests == []
    assert {a.status for a in actions} == {ActionStatus.UNKNOWN}
    assert all("check delivery events" in (a.error or "") for a in actions)


def test_a_429_leaves_the_batch_pending_and_it_goes_out_again_as_a_batch(
    database_url: str, tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(database_url, tmp_path, fake, [sale()]) as (runtime, clock):
        add_contacts(runtime, 50)
        fake.fail_next(429)
        runtime.broadcast("spring_sale")
        runtime.drain()
        first = email_actions(runtime)
        assert {a.status for a in first} == {ActionStatus.PENDING}
        assert all("429" in (a.error or "") for a in first)

        clock.advance(hours=1)
        runtime.run_until_idle()
        actions = email_actions(runtime)
    assert [r.status for r in fake.requests] == [429, 202]
    assert len(fake.requests[1].body["personalizations"]) == 50
    assert {(a.status, a.attempts) for a in actions} == {(ActionStatus.SENT, 2)}


def test_a_400_fails_every_action_of_the_request_with_the_reason(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()]) as (runtime, _):
        add_contacts(runtime, 12)
        fake.fail_next(
            400, body={"errors": [{"message": "Invalid asm group.", "field": "asm.group_id"}]}
        )
        runtime.broadcast("spring_sale")
        runtime.drain()
        actions = email_actions(runtime)
    assert len(fake.requests) == 1
    assert {a.status for a in actions} == {ActionStatus.FAILED}
    assert all(
        "permanent error" in (a.error or "")
        and "Invalid asm group. (field: asm.group_id)" in (a.error or "")
        for a in actions
    )


def test_a_timed_out_batch_is_unknown_for_every_action_and_not_resent(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()], timeout_s=0.5) as (
        runtime,
        clock,
    ):
        add_contacts(runtime, 8)
        fake.delay_next(3.0)
        runtime.broadcast("spring_sale")
        runtime.drain()
        clock.advance(hours=1)
        runtime.run_until_idle()
        actions = email_actions(runtime)
    fake.close()  # joins the handler still answering the stalled request
    assert len(fake.requests) == 1
    assert {a.status for a in actions} == {ActionStatus.UNKNOWN}
    assert all("reconcile the 8 actions" in (a.error or "") for a in actions)


def test_without_substitutions_per_contact_renderings_are_not_batched_together(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    hello = sale(name="hello", steps=[send_email("hello_name", id="hello")])
    url = f"sqlite:///{tmp_path}/jl.db"
    with running(url, tmp_path, fake, [hello], substitutions=False) as (runtime, _):
        add_contacts(runtime, 3, prefix="ada", attributes={"first_name": "Ada"})
        add_contacts(runtime, 2, prefix="bob", attributes={"first_name": "Bob"})
        runtime.broadcast("hello")
        runtime.drain()
    subjects = sorted((r.body["subject"], len(r.body["personalizations"])) for r in fake.requests)
    assert subjects == [("Hello Ada", 3), ("Hello Bob", 2)]


def test_each_personalised_request_is_recorded_by_its_own_outcome(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    """Requests of one batch are recorded together at its end: the accepted ones sent with
    their own provider id, a refused one failed alone."""
    hello = sale(name="hello", steps=[send_email("hello_name", id="hello")])
    url = f"sqlite:///{tmp_path}/jl.db"
    with running(url, tmp_path, fake, [hello], substitutions=False) as (runtime, _):
        add_contacts(runtime, 3, prefix="ada", attributes={"first_name": "Ada"})
        add_contacts(runtime, 2, prefix="bob", attributes={"first_name": "Bob"})
        add_contacts(runtime, 2, prefix="cy", attributes={"first_name": "Cy"})
        fake.fail_next(400, body={"errors": [{"message": "Invalid from address."}]})
        runtime.broadcast("hello")
        runtime.drain()
        with Session(runtime.db) as session:
            rows = session.exec(
                select(Contact.email, Action.status, Action.provider_id)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(Action.kind == "email")
            ).all()
    assert [r.status for r in fake.requests] == [400, 202, 202]
    by_name: dict[str, set[tuple[str, str | None]]] = {}
    for email, status, provider_id in rows:
        by_name.setdefault(email[:2], set()).add((status, provider_id))
    assert by_name["ad"] == {(ActionStatus.FAILED, None)}
    (bob,) = by_name["bo"]
    (cy,) = by_name["cy"]
    assert bob[0] == cy[0] == ActionStatus.SENT
    assert bob[1] and cy[1] and bob[1] != cy[1]  # each request's own message id


def test_with_batching_off_each_email_is_its_own_request(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [sale()], batch_size=1) as (
        runtime,
        _,
    ):
        add_contacts(runtime, 7)
        runtime.broadcast("spring_sale")
        runtime.drain()
        actions = email_actions(runtime)
    assert [len(r.body["personalizations"]) for r in fake.requests] == [1] * 7
    assert {a.status for a in actions} == {ActionStatus.SENT}


def test_a_workflow_not_starting_with_an_email_takes_the_per_contact_path(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    tagged = sale(name="tagged", steps=[add_tag("spring"), send_email("spring_sale", id="s")])
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [tagged]) as (runtime, _):
        add_contacts(runtime, 6)
        result = runtime.broadcast("tagged")
        runtime.drain()
        with Session(runtime.db) as session:
            tags = {tuple(c.attributes.get("tags", [])) for c in session.exec(select(Contact))}
    assert not result.fast_path and result.enrolled == 6
    assert tags == {("spring",)}
    (request,) = fake.requests  # the six actions of one dispatch still share a request
    assert len(request.body["personalizations"]) == 6


def test_an_audience_on_attributes_is_evaluated_in_python_page_by_page(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    vip = sale(
        name="vip",
        trigger=on_segment_joined(Segment("vips", attribute("plan", "pro"))),
        steps=[send_email("spring_sale", id="s")],
    )
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [vip]) as (runtime, _):
        add_contacts(runtime, 150, prefix="pro", attributes={"plan": "pro"})
        add_contacts(runtime, 100, prefix="free", attributes={"plan": "free"})
        result = runtime.broadcast("vip")
        runtime.drain()
    assert (result.scanned, result.matched, result.enrolled) == (250, 150, 150)
    assert sum(len(r.body["personalizations"]) for r in fake.requests) == 150


def test_an_event_triggered_workflow_cannot_be_broadcast(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    evented = sale(name="evented", trigger=on_event("email.opened"))
    with (
        running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [evented]) as (runtime, _),
        pytest.raises(ValidationError, match="no audience") as refused,
    ):
        runtime.broadcast("evented")
    # The trigger is named as the workflow's author wrote it, not by its internal kind
    assert 'is triggered by on_event("email.opened")' in str(refused.value)
    assert "event_received" not in str(refused.value)
    with (
        running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [evented]) as (runtime, _),
        pytest.raises(ValidationError, match="no workflow named 'nope'"),
    ):
        runtime.broadcast("nope")


def test_refusals_name_every_trigger_kind_as_the_workflow_language_does() -> None:
    # Given a trigger of each kind, then each is named by a function users import from engine
    assert {kind_of(t) for t in get_args(Trigger)} == set(PUBLIC_TRIGGER_NAMES)
    assert set(PUBLIC_TRIGGER_NAMES.values()) <= set(engine.__all__)
    assert public_trigger(on_stage_left("awareness")) == 'on_stage_left("awareness")'
    assert public_trigger(on_schedule("0 9 * * MON")) == 'on_schedule("0 9 * * MON")'
    assert public_trigger(on_condition(stage_in("a"))) == "on_condition(...)"
    for trigger in (on_stage_left("awareness"), on_schedule("0 9 * * MON")):
        with pytest.raises(ValidationError) as refused:
            audience_of(sale(name="nope", trigger=trigger))
        assert f"is triggered by {public_trigger(trigger)} and has no audience" in str(
            refused.value
        )


def kind_of(trigger_class: type) -> str:
    return str(trigger_class.kind)  # type: ignore[attr-defined]


def test_sql_filters_are_exact_only_where_sql_and_python_agree() -> None:
    assert sql_filter(stage_in("a"))[1]
    assert sql_filter(all_of(stage_in("a"), score(__import__("engine").gte(5)), subscribed()))[1]
    clause, exact = sql_filter(all_of(stage_in("a"), attribute("plan", "pro")))
    assert clause is not None and not exact  # SQL narrows, Python decides
    assert sql_filter(any_of(stage_in("a"), attribute("plan", "pro"))) == (None, False)
    assert sql_filter(not_(attribute("plan", "pro"))) == (None, False)


def test_the_cli_broadcasts_a_shipped_workflow_to_its_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import engine.cli_broadcast  # noqa: F401 - registers the command, as main() does
    from engine.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYLINE_BROKER_URL", "stub://")
    monkeypatch.setenv("JOURNEYLINE_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert CliRunner().invoke(app, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    with Runtime(Settings(database_url=url)) as runtime:
        for name in ("ana", "ben", "cy"):
            runtime.upsert_contact(f"{name}@example.com", stage="awareness")
        runtime.upsert_contact("dee@example.com", stage="decision")

    result = CliRunner().invoke(app, ["broadcast", "awareness_nurture", "--database-url", url])
    again = CliRunner().invoke(app, ["broadcast", "awareness_nurture", "--database-url", url])
    refused = CliRunner().invoke(app, ["broadcast", "nope", "--database-url", url])
    evented = CliRunner().invoke(app, ["broadcast", "retention_winback", "--database-url", url])

    assert result.exit_code == 0, result.output
    assert "3 contacts matched, 3 enrolled" in result.output
    assert "3 emails queued" in result.output
    assert "3 contacts matched, 0 enrolled, 3 already enrolled" in again.output
    assert refused.exit_code == 2 and "no workflow named 'nope'" in refused.output
    # An event-triggered workflow is refused in the README's words (on_event), not the engine's
    assert evented.exit_code == 2, evented.output
    assert 'on_event("product.inactive")' in evented.output
    assert "event_received" not in evented.output


def test_a_workflow_that_allows_reentry_enrolls_finished_contacts_again(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    from engine import reenter_always

    once = sale(name="weekly", steps=[send_email("spring_sale", id="s")], reentry=reenter_always())
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [once]) as (runtime, clock):
        add_contacts(runtime, 5)
        runtime.broadcast("weekly")
        runtime.drain()
        clock.advance(days=7)
        again = runtime.broadcast("weekly")
        runtime.drain()
        with Session(runtime.db) as session:
            entries = sorted(e.entry for e in session.exec(select(Enrollment)))
        keys = {a.idempotency_key for a in email_actions(runtime)}
    assert (again.enrolled, again.actions) == (5, 5)
    assert entries == [1] * 5 + [2] * 5 and len(keys) == 10
    assert [len(r.body["personalizations"]) for r in fake.requests] == [5, 5]


def test_the_audience_leaves_out_the_unsubscribed_only_where_the_entry_rule_does() -> None:
    """As ``meets_entry_rules``: a marketing-only workflow needs a subscribed contact; one
    that also sends a transactional email (the receipt goes, the upsell is skipped) does not."""
    marketing_only = audience_of(sale())
    with_receipt = audience_of(
        sale(steps=[send_email("spring_sale", id="receipt", marketing=False), wait(days=3)])
    )
    assert "subscribed" in marketing_only.describe()
    assert "subscribed" not in with_receipt.describe()


def test_a_broadcast_converts_at_entry_those_who_already_meet_a_condition_goal(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    # Given a sale whose goal is the pro plan, and leads of whom some are on it already
    flow = sale(goals=[on_condition(attribute("plan", "pro"))])
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [flow]) as (runtime, _):
        add_contacts(runtime, 3, attributes={"plan": "free"})
        add_contacts(runtime, 2, prefix="pro", attributes={"plan": "pro"})
        # When the sale is broadcast
        runtime.broadcast("spring_sale")
        runtime.run_until_idle()
        # Then only the free ones get it; the pro ones converted at entry, sent nothing
        sent = sorted(email for email, _step in _recipients(runtime))
        assert sent == ["c0@example.com", "c1@example.com", "c2@example.com"]
        with Session(runtime.db) as session:
            converted = session.exec(
                select(Enrollment.status, Enrollment.context).where(
                    Enrollment.status == "converted"
                )
            ).all()
        assert len(converted) == 2


def _recipients(runtime: Runtime) -> list[tuple[str, str]]:
    with Session(runtime.db) as session:
        return [
            (email, str(action.reason.get("step")))
            for action, email in session.exec(
                select(Action, Contact.email)
                .join(Contact, col(Contact.id) == col(Action.contact_id))
                .where(Action.kind == "email", Action.status == "sent")
            ).all()
        ]
