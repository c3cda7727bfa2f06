"""``journeyline simulate``: a population living through months of virtual time.

Synthetic contacts behave by stage (daily chances of each event, from a profile), react to
what the workflows send them (they open and click at the profile's rates, and an email can
raise the chance of an event for a while: a trial offer makes a trial likelier), and the
engine moves them through the journey. Deterministic for a seed. The result is a funnel
(contacts reaching each stage, conversion, median time in stage), emails per step, goal
conversions per workflow and per A/B variant, a stage-over-time series, and an HTML report.

It runs the real pipeline on a throw-away SQLite file with the inline broker, so what it
shows is what the workflows do.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from connectors.email import EmailConnector, EmailMessage, SendResult
from connectors.email.sendgrid import Recipient
from engine.clock import VirtualClock
from engine.db import make_engine, transaction
from engine.models import Action, Contact, Enrollment, StageTransition
from engine.recording_batch import record_batch
from engine.registry import Registry, load_registry, registry_from_module
from engine.runtime import Runtime
from engine.settings import Settings
from engine.virtual_time import advance_to, settle

# --- the behaviour profile ----------------------------------------------------------------

DEFAULT_BEHAVIOUR: dict[str, dict[str, float]] = {
    "awareness": {"page.viewed": 0.15, "content.downloaded": 0.08, "webinar.attended": 0.03,
                  "demo.requested": 0.01, "trial.started": 0.012},
    "consideration": {"page.viewed": 0.12, "content.downloaded": 0.04, "demo.requested": 0.05,
                      "trial.started": 0.06},
    "decision": {"page.viewed": 0.1, "order.completed": 0.06},
    "purchase": {"product.activated": 0.3},
    "onboarding": {"product.activated": 0.15, "product.used": 0.2,
                   "subscription.cancelled": 0.004},
    "engagement": {"product.used": 0.2, "subscription.renewed": 0.02, "nps.answered": 0.01,
                   "product.inactive": 0.01, "subscription.cancelled": 0.004},
    "retention": {"product.used": 0.2, "order.completed": 0.03, "nps.answered": 0.01,
                  "product.inactive": 0.01, "subscription.cancelled": 0.003},
    "loyalty": {"product.used": 0.2, "nps.answered": 0.03, "subscription.cancelled": 0.002},
    "advocacy": {"product.used": 0.2},
    "churned": {"order.completed": 0.005},
}  # fmt: skip

# An email with this template multiplies the daily chance of an event, for ``days`` days.
DEFAULT_REACTIONS: dict[str, dict[str, Any]] = {
    "trial_offer": {"boost": {"trial.started": 3.0, "order.completed": 1.5}, "days": 7},
    "trial_invitation": {"boost": {"trial.started": 3.0}, "days": 7},
    "trial_reminder": {"boost": {"order.completed": 2.0}, "days": 5},
    "trial_nudge": {"boost": {"order.completed": 1.5}, "days": 5},
    "demo_invitation": {"boost": {"demo.requested": 3.0}, "days": 7},
    "comparison_guide": {"boost": {"trial.started": 1.5}, "days": 7},
    "onboarding_welcome": {"boost": {"product.activated": 1.5}, "days": 5},
    "onboarding_help": {"boost": {"product.activated": 2.0}, "days": 5},
    "winback": {"boost": {"product.used": 2.0, "subscription.cancelled": 0.5}, "days": 10},
    "winback_offer": {"boost": {"order.completed": 2.0}, "days": 10},
    "renewal_reminder": {"boost": {"subscription.renewed": 3.0}, "days": 10},
    "nps_survey": {"boost": {"nps.answered": 25.0}, "days": 3},
}  # fmt: skip

PLANS = (("starter", 49), ("team", 149), ("business", 499))
ZONES = (
    "Europe/Madrid",
    "America/New_York",
    "Europe/London",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Australia/Sydney",
)


@dataclass(frozen=True)
class Profile:
    behaviour: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_BEHAVIOUR)
    reactions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_REACTIONS)
    open_rate: float = 0.35
    click_rate: float = 0.08  # of all delivered, not of opens
    promoter_share: float = 0.45
    detractor_share: float = 0.15
    new_contacts_share_day0: float = 0.3  # the rest arrive spread over the run

    @classmethod
    def from_file(cls, path: Path) -> Profile:
        data = json.loads(path.read_text())
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown profile keys {unknown}; known: {sorted(known)}")
        return cls(**data)


# --- results ------------------------------------------------------------------------------


@dataclass
class FunnelRow:
    stage: str
    reached: int
    conversion: float | None  # reached / reached of the stage before, in journey order
    median_days_in_stage: float | None


@dataclass
class SimulationResult:
    label: str
    contacts: int
    days: int
    seed: int
    events: int
    seconds: float
    funnel: list[FunnelRow]
    emails: dict[str, int]  # "workflow:step" -> sent
    goals: dict[str, tuple[int, int]]  # workflow -> (entered, converted)
    variants: dict[str, tuple[int, int]]  # "workflow:split=variant" -> (entered, converted)
    daily: list[dict[str, int]]  # per day: stage -> contacts
    stages: list[str]


# --- running --------------------------------------------------------------------------------


def load_workflows(source: str | Path) -> Registry:
    """A module name (``workflows``) or a folder holding a workflows package."""
    path = Path(source)
    if not path.is_dir():
        return load_registry(str(source))
    init = path / "__init__.py"
    if not init.exists():
        raise FileNotFoundError(f"{path} has no __init__.py: not a workflows package")
    name = f"_journeyline_sim_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return registry_from_module(module, templates_dir=path / "templates")


SHARD_CONTACTS = 5_000
"""Contacts per shard. Each shard pays the same per-instant costs (a scheduler pass, the
next due instant) whatever its size, so larger shards are cheaper per contact (10,000 x 10
days: 0.88x the CPU of shards of 2,000); 5,000 keeps two shards for 10,000 contacts, one per
core of a 2-core machine."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container limits it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


JOB_SIZE = 200
"""Contacts per ``process_contacts`` job and wake-ups per ``wake_enrollments`` job."""


def simulate(
    registry: Registry,
    *,
    contacts: int = 1000,
    days: int = 90,
    seed: int = 7,
    profile: Profile | None = None,
    label: str = "",
    processes: int = 1,
    shard_contacts: int = SHARD_CONTACTS,
    on_progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run ``contacts`` synthetic contacts through ``days`` of virtual time.

    Contacts never interact, so the population is cut into shards of ``shard_contacts``,
    each with its own database and its own random stream seeded from ``seed`` and the
    shard's number; ``processes`` > 1 runs shards in parallel worker processes. The result
    depends on the seed, the sizes and the profile, never on ``processes``.
    ``on_progress(done, total)`` counts shard-days.
    """
    if contacts < 1 or days < 1 or shard_contacts < 1:
        raise ValueError("contacts, days and shard_contacts must be at least 1")
    profile = profile or Profile()
    started = time.perf_counter()
    shards = [
        (first, min(shard_contacts, contacts - first))
        for first in range(0, contacts, shard_contacts)
    ]
    total = len(shards) * days
    parts: list[_Part]
    if processes <= 1 or len(shards) == 1 or "fork" not in mp.get_all_start_methods():
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        with _fewer_collections():
            parts = [
                _run_shard(registry, profile, seed, n, first, count, days, tick)
                for n, (first, count) in enumerate(shards)
            ]
    else:
        parts = _run_in_processes(registry, profile, seed, shards, days, processes, on_progress)
    return _merge(parts, registry, label, contacts, days, seed, time.perf_counter() - started)


# The state forked worker processes inherit (a registry holds callables: never pickled).
_FORKED: dict[str, Any] = {}


def _run_in_processes(
    registry: Registry,
    profile: Profile,
    seed: int,
    shards: list[tuple[int, int]],
    days: int,
    processes: int,
    on_progress: Callable[[int, int], None] | None,
) -> list[_Part]:
    context = mp.get_context("fork")
    days_done = context.SimpleQueue()
    _FORKED.update(registry=registry, profile=profile, queue=days_done)
    total = len(shards) * days
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
            futures = [
                pool.submit(_forked_shard, seed, n, first, count, days)
                for n, (first, count) in enumerate(shards)
            ]
            while done < total and not any(f.done() and f.exception() for f in futures):
                if days_done.empty():
                    time.sleep(0.05)
                    continue
                days_done.get()
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
            return [f.result() for f in futures]
    finally:
        _FORKED.clear()


def _forked_shard(seed: int, shard: int, first: int, count: int, days: int) -> _Part:
    queue = _FORKED["queue"]
    with _fewer_collections():
        return _run_shard(
            _FORKED["registry"],
            _FORKED["profile"],
            seed,
            shard,
            first,
            count,
            days,
            lambda: queue.put(1),
        )


GC_THRESHOLDS = (5_000, 20, 20)
"""The cycle collector's thresholds while shards run. A shard allocates millions of short-
lived objects (rows, ORM states, messages) that reference counting frees; at Python's
default (700, 10, 10) the collector also walked the young ones some 1,500 times and the
whole heap 9 times in a 2,000 x 20 days run. With the objects that exist before the run
frozen out of its sight and these thresholds: 4% less CPU (BENCHMARKS.md), and memory still
flat (garbage in cycles is collected, only less often)."""


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run with ``GC_THRESHOLDS`` and what exists now frozen; the caller's settings after."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class _Mailbox(EmailConnector):
    """Keeps only what the population has not reacted to yet (so memory stays flat in
    simulated days): the recipient, the action and the template of each email."""

    name = "simulation"

    def __init__(self) -> None:
        self.unread: list[tuple[str, str, str]] = []
        self.count = 0

    def send(self, message: EmailMessage) -> SendResult:
        self.count += 1
        self.unread.append(
            (
                message.to,
                message.custom_args.get("jl_action_id", ""),
                message.headers.get("X-Journeyline-Template", ""),
            )
        )
        return SendResult(f"sim-{self.count}")

    batch_size = 1000  # emails of one step due together go through perform_email_batch
    substitutions = True  # personalised emails share requests, as with SendGrid's default

    def send_batch(self, message: EmailMessage, recipients: Sequence[Recipient]) -> SendResult:
        self.count += 1
        template = message.headers.get("X-Journeyline-Template", "")
        for recipient in recipients:
            self.unread.append(
                (recipient.to, recipient.custom_args.get("jl_action_id", ""), template)
            )
        return SendResult(f"sim-{self.count}")


class _CrmLog:
    """CRM steps in a simulation: performed and counted, written nowhere (the embedded
    default writes a file per update or task)."""

    name = "simulation crm"
    dedupes = True

    def __init__(self) -> None:
        self.count = 0

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Callable[[], str]:
        key = action.idempotency_key

        def call() -> str:
            self.count += 1
            return f"sim-crm-{key}"

        return call


def _run_shard(
    registry: Registry,
    profile: Profile,
    seed: int,
    shard: int,
    first: int,
    count: int,
    days: int,
    day_done: Callable[[], None],
) -> _Part:
    folder = Path(tempfile.mkdtemp(prefix="journeyline-simulate-"))
    rng = random.Random(f"{seed}:{shard}")
    url = f"sqlite:///{folder / 'sim.db'}"
    db = make_engine(url, durable=False)  # deleted when the shard ends
    SQLModel.metadata.create_all(db)
    clock = VirtualClock(datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    mailbox = _Mailbox()
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://", outbox_dir=folder / "outbox"),
        clock=clock,
        registry=registry,
        email=mailbox,
        db=db,
    )
    crm = _CrmLog()
    runtime.extra_performers.update({kind: crm for kind in ("crm.update", "crm.task", "crm.note")})
    # Nobody waits on a simulated job: larger ones spread each job's fixed statements over
    # more contacts (200 rather than the service's 10 and 20: about 1.3x the speed).
    runtime.contacts_per_job = runtime.wakes_per_job = JOB_SIZE
    people = _population(rng, first, count, days, profile)
    boosts: dict[str, dict[str, tuple[float, int]]] = defaultdict(
        dict
    )  # email -> event -> (x, until)
    events = 0
    daily: list[Counter[str]] = []
    day_start = clock.now()
    try:
        # Anything due at the start (a schedule slot); from here on every hour ends settled.
        settle(runtime, clock)
        for day in range(days):
            stages = _stages(runtime)
            # Today's events, by the hour (UTC) they happen, in a fixed order for the seed.
            by_hour: dict[int, list[tuple[dict[str, Any], str, dict[str, Any]]]] = defaultdict(list)
            for person in people:
                if person["arrives"] > day:
                    continue
                stage = stages.get(person["email"])
                for event_type, props in _plan(rng, person, stage, day, profile, boosts):
                    by_hour[rng.randrange(8, 21)].append((person, event_type, props))
            # Between events the clock jumps from one due wake-up, held email or schedule
            # slot to the next, each at its own instant: a quiet hour costs one query.
            for hour in sorted(by_hour):
                # Settled: the day began with a settle, and each hour ends with one.
                advance_to(runtime, clock, day_start + timedelta(hours=hour), settled=True)
                # The hour's events go in as one batch, as a busy track API would see them.
                batch: list[_Tracked] = []
                for person, event_type, props in by_hour[hour]:
                    first_event = stages.get(person["email"]) is None and not person["seen"]
                    batch.append(
                        _Tracked(
                            person["email"],
                            event_type,
                            props,
                            idempotency_key=f"sim:{events}",
                            attributes=person["attributes"] if first_event else None,
                            timezone=person["timezone"] if first_event else None,
                        )
                    )
                    person["seen"] = True
                    events += 1
                _track_all(runtime, batch)
                settle(runtime, clock)
            day_start += timedelta(days=1)
            advance_to(runtime, clock, day_start, settled=True)  # midnight
            # What the workflows sent today: contacts open, click, and react.
            unread, mailbox.unread = mailbox.unread, []
            reactions: list[_Tracked] = []
            for to, action_id, template in unread:
                reactions += _react(rng, to, action_id, template, day, profile, boosts)
            _track_all(runtime, reactions)
            events += len(reactions)
            settle(runtime, clock)
            daily.append(Counter(_stages(runtime).values()))
            day_done()
        return _part(runtime, registry, events, daily)
    finally:
        runtime.close()
        shutil.rmtree(folder, ignore_errors=True)


def _population(
    rng: random.Random, first: int, count: int, days: int, profile: Profile
) -> list[dict[str, Any]]:
    people = []
    for n in range(first, first + count):
        plan = rng.choice(PLANS)
        arrives = 0 if rng.random() < profile.new_contacts_share_day0 else rng.randrange(days)
        people.append(
            {
                "email": f"person{n:06d}@sim.example",
                "timezone": rng.choice(ZONES),
                "attributes": {"first_name": f"P{n}", "plan": plan[0]},
                "price": plan[1],
                "intent": min(2.5, max(0.2, rng.lognormvariate(0, 0.5))),
                "arrives": arrives,
                "seen": False,
            }
        )
    return people


def _plan(
    rng: random.Random,
    person: dict[str, Any],
    stage: str | None,
    day: int,
    profile: Profile,
    boosts: dict[str, dict[str, tuple[float, int]]],
) -> list[tuple[str, dict[str, Any]]]:
    if stage is None:
        return [("page.viewed", {"url": "/"})] if not person["seen"] else []
    chosen = []
    mine = boosts.get(person["email"], {})
    for event_type, chance in profile.behaviour.get(stage, {}).items():
        factor, until = mine.get(event_type, (1.0, -1))
        chance *= (
            person["intent"]
            if event_type not in ("product.inactive", "subscription.cancelled")
            else 1.0
        )
        if day <= until:
            chance *= factor
        if rng.random() < min(chance, 0.95):
            chosen.append((event_type, _props(rng, person, event_type, profile)))
    return chosen


def _props(
    rng: random.Random, person: dict[str, Any], event_type: str, profile: Profile
) -> dict[str, Any]:
    if event_type == "order.completed":
        return {"total": person["price"], "plan": person["attributes"]["plan"]}
    if event_type == "trial.started":
        return {"plan": person["attributes"]["plan"]}
    if event_type == "nps.answered":
        roll = rng.random()
        if roll < profile.promoter_share:
            return {"score": rng.choice((9, 10))}
        if roll < profile.promoter_share + profile.detractor_share:
            return {"score": rng.randrange(0, 7)}
        return {"score": rng.choice((7, 8))}
    return {}


def _react(
    rng: random.Random,
    to: str,
    action_id: str,
    template: str,
    day: int,
    profile: Profile,
    boosts: dict[str, dict[str, tuple[float, int]]],
) -> list[_Tracked]:
    """The opens and clicks one delivered email gets, and the boosts an open gives."""
    made: list[_Tracked] = []
    if rng.random() < profile.open_rate:
        props = {"action_id": action_id}
        made.append(_Tracked(to, "email.opened", props, idempotency_key=f"open:{action_id}"))
        reaction = profile.reactions.get(template)
        if reaction:
            for event_type, factor in reaction["boost"].items():
                boosts[to][event_type] = (float(factor), day + int(reaction["days"]))
        if rng.random() < profile.click_rate / max(profile.open_rate, 1e-9):
            made.append(_Tracked(to, "email.clicked", props, idempotency_key=f"click:{action_id}"))
    return made


@dataclass(frozen=True)
class _Tracked:
    """One event the population sends (a ``recording_batch.EventInput``)."""

    email: str
    type: str
    properties: dict[str, Any]
    idempotency_key: str
    attributes: dict[str, Any] | None = None
    timezone: str | None = None
    occurred_at: datetime | None = None


SOURCE = "simulation"


def _track_all(runtime: Runtime, batch: list[_Tracked]) -> None:
    """Record a batch of events in one transaction, in a few statements, and enqueue their
    contacts, as the track API does with a POST of many events."""
    if not batch:
        return
    with transaction(runtime.db) as session:
        recorded = record_batch(
            session, runtime.registry, batch, now=runtime.clock.now(), source=SOURCE
        )
    runtime.enqueue_contacts(r.contact_id for r in recorded if not r.duplicate)


def _stages(runtime: Runtime) -> dict[str, str]:
    with Session(runtime.db) as session:
        return dict(session.exec(select(Contact.email, Contact.stage)).all())  # type: ignore[arg-type]


# --- the report -------------------------------------------------------------------------------


@dataclass
class _Part:
    """What one shard found, in a form shards add up from (and a process can return)."""

    events: int
    furthest: Counter[int]  # furthest stage rank (journey order) -> contacts
    exits: Counter[str]  # exit stage (churned) -> contacts who reached it
    durations: dict[str, list[float]]  # stage -> days spent there, per completed stay
    emails: Counter[str]  # "workflow:step" -> sent
    goals: dict[str, list[int]]  # workflow -> [entered, converted]
    variants: dict[str, list[int]]  # "workflow:split=variant" -> [entered, converted]
    daily: list[Counter[str]]


def _part(runtime: Runtime, registry: Registry, events: int, daily: list[Counter[str]]) -> _Part:
    """Add up a finished shard, streaming its rows (a contact's path at a time), so the peak
    memory of the report does not grow with the days simulated."""
    stages = list(registry.journey.stage_names)
    order = {stage: i for i, stage in enumerate(stages)}
    exit_stages = {s.name for s in registry.journey.stages if s.journey == "exit"}
    durations: dict[str, list[float]] = defaultdict(list)
    furthest: Counter[int] = Counter()
    exits: Counter[str] = Counter()
    goals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    variants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    emails: Counter[str] = Counter()

    def add_path(path: list[tuple[str, datetime]]) -> None:
        for (stage, entered), (_next, left) in itertools.pairwise(path):
            durations[stage].append((left - entered).total_seconds() / 86400)
        # A funnel counts a contact at every stage up to the furthest they reached: skipping
        # consideration on the way to a trial still passed through it, as funnels are read.
        ranks = [order[stage] for stage, _ in path if stage not in exit_stages]
        if ranks:
            furthest[max(ranks)] += 1
        exits.update({stage for stage, _ in path if stage in exit_stages})

    streamed = {"yield_per": 2000}
    with Session(runtime.db) as session:
        moves = session.execute(
            select(StageTransition.contact_id, StageTransition.to_stage, StageTransition.at)
            .order_by(
                col(StageTransition.contact_id), col(StageTransition.at), col(StageTransition.id)
            )
            .execution_options(**streamed)
        )
        current: int | None = None
        path: list[tuple[str, datetime]] = []
        for contact_id, stage, at in moves:
            if contact_id != current and path:
                add_path(path)
                path = []
            current = contact_id
            path.append((stage, at))
        if path:
            add_path(path)
        enrollments = session.execute(
            select(Enrollment.workflow, Enrollment.status, Enrollment.context).execution_options(
                **streamed
            )
        )
        for workflow, status, context in enrollments:
            goals[workflow][0] += 1
            goals[workflow][1] += status == "converted"
            for split_id, variant in (context.get("variants") or {}).items():
                key = f"{workflow}:{split_id}={variant}"
                variants[key][0] += 1
                variants[key][1] += status == "converted"
        sent = session.execute(
            select(Action.reason)
            .where(Action.kind == "email", Action.status == "sent")
            .execution_options(**streamed)
        )
        for (reason,) in sent:
            emails[f"{reason.get('workflow')}:{reason.get('step')}"] += 1
    return _Part(
        events=events,
        furthest=furthest,
        exits=exits,
        durations=dict(durations),
        emails=emails,
        goals=dict(goals),
        variants=dict(variants),
        daily=daily,
    )


def _merge(
    parts: list[_Part],
    registry: Registry,
    label: str,
    contacts: int,
    days: int,
    seed: int,
    seconds: float,
) -> SimulationResult:
    stages = list(registry.journey.stage_names)
    order = {stage: i for i, stage in enumerate(stages)}
    exit_stages = {s.name for s in registry.journey.stages if s.journey == "exit"}
    furthest: Counter[int] = Counter()
    exits: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    emails: Counter[str] = Counter()
    goals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    variants: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    daily: list[Counter[str]] = [Counter() for _ in range(days)]
    for part in parts:
        furthest.update(part.furthest)
        exits.update(part.exits)
        for stage, spans in part.durations.items():
            durations[stage].extend(spans)
        emails.update(part.emails)
        for into, found in ((goals, part.goals), (variants, part.variants)):
            for key, (entered, converted) in found.items():
                into[key][0] += entered
                into[key][1] += converted
        for total, today in zip(daily, part.daily, strict=True):
            total.update(today)
    funnel = []
    previous: int | None = None
    for stage in stages:
        if stage in exit_stages:
            funnel.append(FunnelRow(stage, exits.get(stage, 0), None, None))
            continue
        count = sum(n for rank, n in furthest.items() if rank >= order[stage])
        conversion = (count / previous) if previous else None
        median = statistics.median(durations[stage]) if durations[stage] else None
        funnel.append(FunnelRow(stage, count, conversion, median))
        previous = count
    return SimulationResult(
        label=label,
        contacts=contacts,
        days=days,
        seed=seed,
        events=sum(p.events for p in parts),
        seconds=seconds,
        funnel=funnel,
        emails=dict(sorted(emails.items())),
        goals={k: (v[0], v[1]) for k, v in sorted(goals.items())},
        variants={k: (v[0], v[1]) for k, v in sorted(variants.items())},
        daily=[dict(d) for d in daily],
        stages=stages,
    )
