"""Schedule triggers in virtual time: cron in each contact's time zone, DST, re-entry,
parallel schedulers, catch-up after downtime, and the periodic scheduler job."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from connectors import RecordingEmailConnector
from engine import (
    Segment,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    attribute,
    build_registry,
    lifecycle_journey,
    on_schedule,
    reenter_after,
    reenter_always,
    schedules,
    send_email,
    wait,
)
from engine.cli import _register_subcommands, app
from engine.db import transaction
from engine.diagram import mermaid
from engine.models import Action, Contact, Enrollment, PeriodicTick, ScheduleSlot
from engine.periodic import PROBE, START, take_turn
from engine.runtime import Runtime
from engine.schedules import fire_slot, latest_slot, next_slot, zones_in_use
from engine.spec import from_spec
from engine.steps import add_tag
from tests.language_support import TEMPLATES, running
from tests.support import enrollments, make_runtime, rows
from workflows.rules import RULES

_register_subcommands()  # the scheduler's and the workflows' commands, whatever ran first

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def weekly(**options: object) -> Workflow:
    trigger = options.pop("trigger", on_schedule("0 9 * * MON"))
    reentry = options.pop("reentry", reenter_always())
    steps = options.pop("steps", [send_email("engagement_tips", id="tips")])
    return Workflow(
        "monday_tips",
        trigger=trigger,  # type: ignore[arg-type]
        reentry=reentry,  # type: ignore[arg-type]
        steps=steps,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def daily(**options: object) -> Workflow:
    trigger = options.pop("trigger", on_schedule("0 9 * * *"))
    return Workflow(
        "daily_digest",
        trigger=trigger,  # type: ignore[arg-type]
        reentry=reenter_always(),
        steps=[send_email("engagement_tips", id="tips")],
        **options,  # type: ignore[arg-type]
    )


def people(rt: Runtime, *pairs: tuple[str, str], **attributes: object) -> None:
    for address, tz in pairs:
        rt.upsert_contact(address, timezone=tz, attributes=dict(attributes))


def run_hourly(rt: Runtime, clock: VirtualClock, until: datetime) -> None:
    """A scheduler ticking every hour on the hour (and every job run) until ``until``."""
    rt.run_until_idle()
    while clock.now() < until:
        clock.set((clock.now() + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0))
        rt.run_until_idle()


def sends(email: RecordingEmailConnector, to: str) -> list[datetime]:
    return [m.sent_at for m in email.sent if m.to == to]


def slots(rt: Runtime) -> list[ScheduleSlot]:
    return rows(rt, ScheduleSlot)


# --- when it fires --------------------------------------------------------------------------


def test_a_weekly_schedule_fires_at_9_local_in_each_time_zone(tmp_path: Path) -> None:
    with running(tmp_path, [weekly()], start=MONDAY) as (rt, clock, email):
        # Given a contact in Paris and one in New York, on a Monday at 10:00 UTC
        people(rt, ("pia@example.com", "Europe/Paris"), ("ned@example.com", "America/New_York"))
        # When two weeks go by with a scheduler ticking every hour
        run_hourly(rt, clock, MONDAY + timedelta(days=14, hours=4))
        # Then Paris hears at 09:00 Paris time (Monday 2 March's slot had passed at deploy)
        assert sends(email, "pia@example.com") == [
            datetime(2026, 3, 9, 8, 0, tzinfo=UTC),  # 09:00 CET
            datetime(2026, 3, 16, 8, 0, tzinfo=UTC),
        ]
        # and New York at 09:00 New York time, before and after the US DST change of 8 March
        assert sends(email, "ned@example.com") == [
            datetime(2026, 3, 2, 14, 0, tzinfo=UTC),  # 09:00 EST
            datetime(2026, 3, 9, 13, 0, tzinfo=UTC),  # 09:00 EDT
            datetime(2026, 3, 16, 13, 0, tzinfo=UTC),
        ]
        # and each firing is one slot row per time zone, fired once
        assert {(s.timezone, s.status, s.contacts_seen) for s in slots(rt)} == {
            ("Europe/Paris", "done", 1),
            ("America/New_York", "done", 1),
        }
        assert len(slots(rt)) == 5
        (first,) = [e for e in enrollments(rt) if e.entry == 1 and e.contact_id == 2]
        assert (
            first.context["trigger"] == "schedule 0 9 * * MON at 2026-03-02 09:00 America/New_York"
        )


def test_a_daily_schedule_stays_at_9_local_across_the_european_dst_change(
    tmp_path: Path,
) -> None:
    start = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Friday; clocks go forward on Sunday 29th
    with running(tmp_path, [daily()], start=start) as (rt, clock, email):
        people(rt, ("pia@example.com", "Europe/Paris"))
        run_hourly(rt, clock, start + timedelta(days=3))
        assert sends(email, "pia@example.com") == [
            datetime(2026, 3, 28, 8, 0, tzinfo=UTC),  # 09:00 CET
            datetime(2026, 3, 29, 7, 0, tzinfo=UTC),  # 09:00 CEST, the day of the change
            datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
        ]


def test_slot_arithmetic_follows_cron_rules_for_times_dst_skips() -> None:
    # 02:30 does not exist in Paris on 29 March 2026: cron fires just after the jump
    before = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    assert next_slot("30 2 * * *", "Europe/Paris", before) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )  # 03:00 CEST
    # the latest slot counts the current minute as passed
    nine = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert latest_slot("0 9 * * *", "Europe/Paris", nine) == nine
    assert latest_slot("0 9 * * *", "Europe/Paris", nine - timedelta(seconds=1)) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )


def test_a_schedule_narrowed_by_a_segment_offers_it_only_to_members(tmp_path: Path) -> None:
    vips = Segment("enterprise", attribute("plan", "enterprise"))
    workflow = weekly(trigger=on_schedule("0 9 * * MON", when=vips))
    with running(tmp_path, [workflow], start=MONDAY) as (rt, clock, email):
        rt.upsert_contact("big@example.com", attributes={"plan": "enterprise"})
        rt.upsert_contact("small@example.com", attributes={"plan": "starter"})
        run_hourly(rt, clock, MONDAY + timedelta(days=7))
        assert [m.to for m in email.sent] == ["big@example.com"]
        (slot,) = slots(rt)
        assert slot.contacts_seen == 2  # both were looked at, one qualified


def test_contacts_created_after_a_slot_wait_for_the_next_one(tmp_path: Path) -> None:
    with running(tmp_path, [weekly()], start=MONDAY) as (rt, clock, email):
        people(rt, ("old@example.com", "UTC"))
        run_hourly(rt, clock, datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
        # a new contact a minute after Monday's slot, while the first is served
        clock.advance(minutes=1)
        people(rt, ("new@example.com", "UTC"))
        run_hourly(rt, clock, datetime(2026, 3, 16, 12, 0, tzinfo=UTC))
        assert len(sends(email, "old@example.com")) == 2
        assert sends(email, "new@example.com") == [datetime(2026, 3, 16, 9, 0, tzinfo=UTC)]


# --- re-entry ---------------------------------------------------------------------------------


def test_a_weekly_schedule_reenrolls_only_as_its_reentry_policy_allows(tmp_path: Path) -> None:
    fortnightly = weekly(reentry=reenter_after(days=13))
    never = Workflow(
        "once_only",
        trigger=on_schedule("0 9 * * MON"),
        steps=[send_email("guide", id="guide")],
    )
    still_running = Workflow(
        "long_course",
        trigger=on_schedule("0 9 * * MON"),
        reentry=reenter_always(),
        steps=[
            send_email("engagement_academy", id="lesson_1"),
            wait(timedelta(days=10), id="pause"),
            send_email("engagement_academy", id="lesson_2"),
        ],
    )
    with running(tmp_path, [fortnightly, never, still_running], start=MONDAY) as (rt, clock, email):
        people(rt, ("ana@example.com", "UTC"))
        run_hourly(rt, clock, MONDAY + timedelta(weeks=4))
        mondays = [datetime(2026, 3, 9 + 7 * week, 9, 0, tzinfo=UTC) for week in range(4)]
        by_step = {
            step: [m.sent_at for m in email.sent if m.categories[1].endswith(f":{step}")]
            for step in ("tips", "guide", "lesson_1", "lesson_2")
        }
        # every other Monday (13 days after entry is not 14)
        assert by_step["tips"] == [mondays[0], mondays[2]]
        assert by_step["guide"] == [mondays[0]]  # reentry never: once
        # re-enters on a Monday only once the 10-day course has finished
        assert by_step["lesson_1"] == [mondays[0], mondays[2]]
        assert by_step["lesson_2"] == [mondays[0] + timedelta(days=10)]
        assert [e.entry for e in enrollments(rt) if e.workflow == "long_course"] == [1, 2]


# --- several schedulers, lost jobs, downtime ------------------------------------------------


def test_two_schedulers_fire_each_slot_once(tmp_path: Path) -> None:
    with running(tmp_path, [weekly()], start=MONDAY) as (rt, clock, email):
        people(rt, *((f"c{i}@example.com", "Europe/Paris") for i in range(5)))
        # a second scheduler process on the same database and clock
        other, _, other_email = make_runtime(
            f"sqlite:///{tmp_path}/jl.db", broker_url="inline://", clock=clock
        )
        other.registry = rt.registry
        try:
            rt.run_until_idle()
            other.run_until_idle()
            clock.set(datetime(2026, 3, 9, 8, 0, tzinfo=UTC))
            # both plan and claim in the same instant; both run whatever they claimed
            first, second = rt.tick(), other.tick()
            assert len(first.schedule_slots) + len(second.schedule_slots) == 1
            rt.drain()
            other.drain()
            # a duplicate fire_schedule message (a redelivery) does nothing more
            (slot,) = slots(rt)
            assert rt.fire_schedule(slot.id).contacts == 0  # type: ignore[arg-type]
            assert other.tick().schedule_slots == []
            assert len(email.sent) + len(other_email.sent) == 5
            assert sorted(m.to for m in [*email.sent, *other_email.sent]) == sorted(
                f"c{i}@example.com" for i in range(5)
            )
        finally:
            other.close()


def test_a_slot_continues_from_its_cursor_after_a_worker_died(tmp_path: Path) -> None:
    with running(tmp_path, [weekly()], start=MONDAY) as (rt, clock, email):
        people(rt, *((f"c{i}@example.com", "UTC") for i in range(5)))
        rt.run_until_idle()
        clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
        (slot_id,) = rt.tick().schedule_slots
        rt.broker.pending.clear()  # type: ignore[attr-defined]  (the broker lost the job)
        # a worker offers the first two contacts, commits, and dies before going on
        with transaction(rt.db) as session:
            fired = fire_slot(session, rt.registry, slot_id, now=clock.now(), lease=rt.lease,
                              batch_size=2)  # fmt: skip
        rt.dispatch(fired.effects)
        rt.drain()
        assert fired.more and len(email.sent) == 2
        # nothing is re-claimed while the lease holds; afterwards the rest are served once
        assert rt.tick().schedule_slots == []
        clock.advance(seconds=rt.settings.action_lease_seconds + 1)
        rt.run_until_idle()
        assert sorted(m.to for m in email.sent) == sorted(f"c{i}@example.com" for i in range(5))
        (slot,) = slots(rt)
        assert (slot.status, slot.contacts_seen) == ("done", 5)


def test_after_downtime_only_the_latest_missed_slot_fires(tmp_path: Path) -> None:
    with running(tmp_path, [daily()], start=MONDAY) as (rt, clock, email):
        people(rt, ("ana@example.com", "UTC"))
        rt.run_until_idle()
        # Tuesday 09:00 the scheduler plans the slot, but the broker loses the job ...
        clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
        assert len(rt.tick().schedule_slots) == 1
        rt.broker.pending.clear()  # type: ignore[attr-defined]
        # ... and every scheduler is down until Friday noon (Wednesday, Thursday missed)
        clock.set(datetime(2026, 3, 6, 12, 0, tzinfo=UTC))
        rt.run_until_idle()
        # Then one email, for Friday's slot; Tuesday's is superseded, the rest never planned
        assert sends(email, "ana@example.com") == [clock.now()]
        assert [(s.slot_at.day, s.status) for s in slots(rt)] == [(3, "skipped"), (6, "done")]
        assert slots(rt)[0].note.startswith("superseded by the slot at 2026-03-06T09:00")


def test_a_slot_found_later_than_max_delay_is_skipped_not_sent(tmp_path: Path) -> None:
    workflow = daily(trigger=on_schedule("0 9 * * *", max_delay=timedelta(hours=2)))
    with running(tmp_path, [workflow], start=MONDAY) as (rt, clock, email):
        people(rt, ("ana@example.com", "UTC"))
        rt.run_until_idle()
        clock.set(datetime(2026, 3, 3, 14, 0, tzinfo=UTC))  # five hours late
        rt.run_until_idle()
        assert email.sent == []
        (slot,) = slots(rt)
        assert slot.status == "skipped" and "late" in slot.note
        run_hourly(rt, clock, datetime(2026, 3, 4, 10, 0, tzinfo=UTC))  # on time again
        assert sends(email, "ana@example.com") == [datetime(2026, 3, 4, 9, 0, tzinfo=UTC)]


def test_a_schedule_deployed_after_this_weeks_slot_waits_for_the_next(tmp_path: Path) -> None:
    friday = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    with running(tmp_path, [weekly()], start=friday) as (rt, clock, email):
        people(rt, ("ana@example.com", "UTC"))
        run_hourly(rt, clock, friday + timedelta(days=2))
        assert email.sent == [] and slots(rt) == []
        run_hourly(rt, clock, friday + timedelta(days=4))
        assert sends(email, "ana@example.com") == [datetime(2026, 3, 9, 9, 0, tzinfo=UTC)]


@pytest.mark.postgres
def test_on_postgres_parallel_firing_of_one_slot_offers_each_contact_once(
    pg_db_url: str, tmp_path: Path
) -> None:
    clock = VirtualClock(MONDAY)
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[weekly()], templates_dir=TEMPLATES
    )
    runtimes = []
    for _ in range(2):
        rt, _, _ = make_runtime(pg_db_url, broker_url="inline://", clock=clock)
        rt.registry = registry
        runtimes.append(rt)
    first, second = runtimes
    try:
        people(first, *((f"c{i}@example.com", ("UTC", "Asia/Tokyo")[i % 2]) for i in range(60)))
        first.run_until_idle()
        with Session(first.db) as session:
            assert zones_in_use(session) == ["Asia/Tokyo", "UTC"]
        clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
        claimed = first.tick().schedule_slots + second.tick().schedule_slots
        assert len(claimed) == 2  # Tokyo's and UTC's Monday slots, each claimed once
        for rt in runtimes:
            rt.broker.pending.clear()  # type: ignore[attr-defined]

        # When both workers fire every slot at once, in small batches
        def fire_all(rt: Runtime) -> None:
            for slot_id in claimed:
                more = True
                while more:
                    with transaction(rt.db) as session:
                        more = fire_slot(session, rt.registry, slot_id, now=clock.now(),
                                         lease=rt.lease, batch_size=7).more  # fmt: skip

        threads = [threading.Thread(target=fire_all, args=(rt,)) for rt in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then every contact is enrolled exactly once
        with Session(first.db) as session:
            entries = session.exec(select(Enrollment.contact_id, Enrollment.entry)).all()
        assert sorted(c for c, _ in entries) == sorted(range(1, 61))
        assert {e for _, e in entries} == {1}
    finally:
        for rt in runtimes:
            rt.close()


# --- definitions ----------------------------------------------------------------------------


def test_a_bad_cron_expression_is_reported_with_file_and_line() -> None:
    bad = Workflow("bad", trigger=on_schedule("0 25 * * MON"), steps=[send_email("guide")])
    six = Workflow("six", trigger=on_schedule("0 0 9 * * MON"), steps=[send_email("guide")])
    with pytest.raises(WorkflowDefinitionError) as raised:
        build_registry(journey=lifecycle_journey(), workflows=[bad, six], templates_dir=TEMPLATES)
    first, second = raised.value.problems
    assert "test_schedules.py:" in first and "'0 25 * * MON' is not a valid cron" in first
    assert "Bad hour" in first
    assert "needs 5 fields" in second


def test_the_spec_and_the_diagram_know_the_schedule() -> None:
    workflow = weekly(
        trigger=on_schedule("0 9 * * MON", when=Segment("vip", attribute("vip", True)))
    )
    assert workflow.spec["trigger"]["kind"] == "schedule"
    assert from_spec(workflow.spec) == workflow
    diagram = mermaid(workflow)
    assert "schedule 0 9 * * MON (At 09:00 on Monday, contact's time zone) for segment vip" in (
        diagram
    )
    other = weekly(trigger=on_schedule("0 10 * * MON"))
    assert other.version != workflow.version


# --- the periodic job -------------------------------------------------------------------------


def test_take_turn_lets_one_chain_of_the_periodic_job_live(tmp_path: Path) -> None:
    rt, clock, _ = make_runtime(f"sqlite:///{tmp_path}/jl.db", broker_url="inline://")
    interval = timedelta(seconds=10)

    def turn(seconds: float, token: str = START) -> str | None:
        at = clock.now() + timedelta(seconds=seconds)
        return take_turn(rt.db, name="t", now=at, interval=interval, token=token)

    try:
        first = turn(0)  # the first starter owns the chain
        assert first
        assert turn(3) is None  # a second starter finds it alive
        second = turn(10.2, first)  # the owner's next run (a little late) goes on
        assert second and second != first
        assert turn(12, first) is None  # a stale copy of the owner's message stops
        assert turn(12, PROBE) is None  # a starter's second look: still alive
        assert turn(12, second) is None  # too early for the booked run (a delay ignored)
        # the owner's message is lost: once the booked run is an interval overdue, a probe
        # takes over, and the old chain, should its message turn up, stops
        third = turn(31, PROBE)
        assert third and third not in (first, second)
        assert turn(31.5, second) is None
        assert turn(41, third)
    finally:
        rt.close()


def test_the_scheduler_tick_job_ticks_and_books_its_next_run(tmp_path: Path) -> None:
    with running(tmp_path, [weekly()], start=MONDAY) as (rt, clock, email):
        people(rt, ("ana@example.com", "UTC"))
        delays: list[int | None] = []
        enqueue = rt.broker.enqueue

        def recording_enqueue(message, *, delay=None):  # type: ignore[no-untyped-def]
            if message.actor_name == "scheduler_tick":
                delays.append(delay)
            return enqueue(message, delay=delay)

        rt.broker.enqueue = recording_enqueue  # type: ignore[method-assign]
        clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=UTC))
        # When the periodic job runs (no `journeyline scheduler` process anywhere)
        rt.jobs.scheduler_tick.send()
        rt.drain()
        # Then it ticked: Monday's slot fired and the email went out
        assert [m.to for m in email.sent] == ["ana@example.com"]
        # and it sent itself again with the interval as delay; that copy, run at once by the
        # inline broker, found its turn not yet come and stopped the chain there
        interval_ms = int(rt.settings.scheduler_interval_seconds * 1000)
        assert delays == [None, interval_ms]
        with Session(rt.db) as session:
            (booked,) = session.exec(select(PeriodicTick)).all()
        assert booked.next_at == clock.now() + timedelta(milliseconds=interval_ms)
        # A starter arriving while the chain is alive stops, booking one look later
        delays.clear()
        assert rt.periodic_tick() is False
        assert delays == [2 * interval_ms]
        rt.broker.pending.clear()  # type: ignore[attr-defined]
        # Here the chain's message was lost (inline ran it too early): two intervals on, a
        # starter finds the booked run overdue and takes the chain over
        clock.advance(seconds=2 * rt.settings.scheduler_interval_seconds + 1)
        assert rt.periodic_tick() is True


def _cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYLINE_OUTBOX_DIR", str(tmp_path / "outbox"))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert CliRunner().invoke(app, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    return url


def test_scheduler_periodic_refuses_the_in_process_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _cli_env(tmp_path, monkeypatch)
    result = CliRunner().invoke(
        app, ["--database-url", url, "--broker-url", "stub://", "scheduler", "--periodic"]
    )
    assert result.exit_code == 2
    assert "--periodic needs a shared broker" in result.output


@pytest.mark.redis
def test_scheduler_periodic_enqueues_the_tick_job_on_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    import redis

    own_db = redis_url.rsplit("/", 1)[0] + "/11"  # a queue no other test's worker consumes
    client = redis.Redis.from_url(own_db)
    keys = ["dramatiq:journeyline_scheduler", "dramatiq:journeyline_scheduler.msgs"]
    client.delete(*keys)
    try:
        url = _cli_env(tmp_path, monkeypatch)
        result = CliRunner().invoke(
            app, ["--database-url", url, "--broker-url", own_db, "scheduler", "--periodic"]
        )
        assert result.exit_code == 0, result.output
        assert "scheduler_tick enqueued" in result.output
        (body,) = client.hvals("dramatiq:journeyline_scheduler.msgs")
        assert b'"actor_name":"scheduler_tick"' in body
    finally:
        client.delete(*keys)
        client.close()


@pytest.mark.redis
def test_workers_start_the_tick_job_at_boot_when_told_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    import subprocess
    import sys

    import redis

    own_db = redis_url.rsplit("/", 1)[0] + "/11"
    client = redis.Redis.from_url(own_db)
    keys = ["dramatiq:journeyline_scheduler", "dramatiq:journeyline_scheduler.msgs"]
    client.delete(*keys)
    try:
        url = _cli_env(tmp_path, monkeypatch)
        env = {
            "PATH": "/usr/bin:/bin",
            "JOURNEYLINE_DATABASE_URL": url,
            "JOURNEYLINE_BROKER_URL": own_db,
            "JOURNEYLINE_OUTBOX_DIR": str(tmp_path / "outbox"),
        }
        boot = [sys.executable, "-c", "import engine.worker"]
        cwd = Path(__file__).parent.parent
        subprocess.run(boot, env=env, cwd=cwd, check=True, timeout=60)
        assert client.hlen("dramatiq:journeyline_scheduler.msgs") == 0  # off by default
        env["JOURNEYLINE_SCHEDULER_IN_WORKERS"] = "true"
        subprocess.run(boot, env=env, cwd=cwd, check=True, timeout=60)
        (body,) = client.hvals("dramatiq:journeyline_scheduler.msgs")
        assert b'"actor_name":"scheduler_tick"' in body
    finally:
        client.delete(*keys)
        client.close()


def test_workflows_list_and_show_draw_the_nps_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _cli_env(tmp_path, monkeypatch)
    monkeypatch.setenv("COLUMNS", "250")
    shown = CliRunner().invoke(app, ["--database-url", url, "workflows", "show", "nps_survey"])
    assert shown.exit_code == 0, shown.output
    assert (
        "start([\"schedule 0 10 * * TUE (At 10:00 on Tuesday, contact's time zone) for segment "
        'active customers using the product"])'
    ) in shown.output
    listed = CliRunner().invoke(app, ["--database-url", url, "workflows", "list"])
    assert "schedule 0 10 * * TUE" in listed.output


@pytest.mark.slow
@pytest.mark.redis
def test_on_redis_three_started_chains_of_the_tick_job_become_one(
    tmp_path: Path, redis_url: str
) -> None:
    """Real Redis delays, a real worker, the wall clock: the only test here that waits."""
    import time

    import redis
    from dramatiq import Worker

    from engine import SystemClock

    own_db = redis_url.rsplit("/", 1)[0] + "/11"
    client = redis.Redis.from_url(own_db)
    client.flushdb()
    interval = 0.4
    rt, _, _ = make_runtime(
        f"sqlite:///{tmp_path}/jl.db",
        broker_url=own_db,
        clock=SystemClock(),  # type: ignore[arg-type]
        scheduler_interval_seconds=interval,
    )
    ticks: list[float] = []
    real_tick = rt.tick

    def counted_tick():  # type: ignore[no-untyped-def]
        ticks.append(time.monotonic())
        return real_tick()

    rt.tick = counted_tick  # type: ignore[method-assign]
    worker = Worker(rt.broker, worker_threads=2, worker_timeout=100)
    try:
        for _ in range(3):  # three operators each started it
            rt.jobs.scheduler_tick.send()
        worker.start()
        deadline = time.monotonic() + 60
        while len(ticks) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ticks) >= 8, ticks
        # Ticks keep coming, one chain's worth: about one per interval, where three live
        # chains would tick three times per interval
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert sorted(gaps)[len(gaps) // 2] >= interval * 0.9, gaps
        with Session(rt.db) as session:
            (booking,) = session.exec(select(PeriodicTick)).all()
        assert booking.token not in (START, PROBE)
    finally:
        worker.stop()
        rt.close()
        client.flushdb()
        client.close()


# --- how a slot enrolls its contacts ------------------------------------------------------


def _fired_rows(tmp_path: Path, workflow: Workflow, *, set_based: bool) -> list[tuple]:
    """Fire two weekly slots for six contacts (one unsubscribed, one outside the segment)."""
    tmp_path.mkdir()
    with running(tmp_path, [workflow], start=MONDAY) as (rt, clock, email):
        for n in range(6):
            rt.upsert_contact(
                f"p{n}@example.com", timezone="UTC", attributes={"plan": "team" if n else "x"}
            )
        with transaction(rt.db) as session:
            for contact in session.exec(select(Contact).where(Contact.email == "p5@example.com")):
                contact.subscription_status = "unsubscribed"
        run_hourly(rt, clock, MONDAY + timedelta(days=14))
        assert bool(schedules.starts_with_email(workflow)) == set_based
        found = [
            (e.contact_id, e.entry, e.status, e.position, e.wake_at, e.context["trigger"])
            for e in enrollments(rt)
        ]
        keys = sorted(a.idempotency_key for a in rows(rt, Action) if a.kind == "email")
        return [*sorted(found), *keys, *sorted((m.to, m.sent_at) for m in email.sent)]


def test_a_slot_writes_the_same_rows_set_based_as_contact_by_contact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow that starts with an email is enrolled a batch at a time in SQL; the rows
    (enrollments, action keys) and the emails are those the executor writes one by one."""
    team = Segment("team", attribute("plan", "team"))
    workflow = weekly(
        trigger=on_schedule("0 9 * * MON", when=team),
        steps=[send_email("engagement_tips", id="tips"), wait(days=2), send_email("guide")],
        reentry=reenter_after(days=5),
    )
    set_based = _fired_rows(tmp_path / "a", workflow, set_based=True)
    monkeypatch.setattr(schedules, "starts_with_email", lambda _workflow: False)
    one_by_one = _fired_rows(tmp_path / "b", workflow, set_based=False)
    assert set_based == one_by_one
    assert len([r for r in set_based if isinstance(r, tuple) and len(r) == 6]) == 8  # 4 x 2


def test_a_slot_whose_workflow_starts_with_another_step_enrolls_contact_by_contact(
    tmp_path: Path,
) -> None:
    workflow = weekly(steps=[add_tag("weekly"), send_email("engagement_tips", id="tips")])
    with running(tmp_path, [workflow], start=MONDAY) as (rt, clock, email):
        people(rt, ("a@example.com", "UTC"), ("b@example.com", "UTC"))
        run_hourly(rt, clock, MONDAY + timedelta(days=7))
        assert sorted(m.to for m in email.sent) == ["a@example.com", "b@example.com"]
        assert {tuple(c.attributes.get("tags", [])) for c in rows(rt, Contact)} == {("weekly",)}
