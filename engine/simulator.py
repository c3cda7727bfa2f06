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
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, select

from connectors.email import EmailConnector, EmailMessage, SendResult
from connectors.email.sendgrid import Recipient
from engine.clock import VirtualClock
from engine.db import make_engine, transaction
from engine.errors import WorkflowImportError
from engine.models import Action, Contact
from engine.recording_batch import record_batch
from engine.registry import Registry, import_failure, load_registry, registry_from_module
from engine.runtime import Runtime
from engine.settings import Settings
from engine.simulation_profile import Profile, ProfileError
from engine.simulation_results import ShardPart, SimulationResult, count_shard, merge_shards
from engine.virtual_time import advance_to, settle

PLANS = (("starter", 49), ("team", 149), ("business", 499))
ZONES = (
    "Europe/Madrid",
    "America/New_York",
    "Europe/London",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Australia/Sydney",
)


# --- running --------------------------------------------------------------------------------


def load_workflows(source: str | Path, *, templates_dir: Path | None = None) -> Registry:
    """A module name (``workflows``) or a folder holding a workflows package.

    A folder loads as a package of its own, under a name of its own, so a copy of
    ``workflows/`` runs its own modules, provided they import each other relatively
    (``from .common import later``), as the shipped ones do. Its email templates are its
    ``templates/`` unless ``templates_dir`` says otherwise."""
    path = Path(source)
    if not path.is_dir():
        if isinstance(source, Path) or "/" in source or os.sep in source:
            raise FileNotFoundError(f"no folder {str(source)!r}")
        return load_registry(source, templates_dir=templates_dir)
    init = path / "__init__.py"
    if not init.exists():
        raise FileNotFoundError(f"{path} has no __init__.py: not a workflows package")
    name = f"_journeyline_sim_{abs(hash(str(path.resolve())))}"
    # Loaded before (the folder may have changed since): its modules are imported afresh.
    for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[loaded]
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code raised: its file and line, not a traceback
        del sys.modules[name]
        raise WorkflowImportError(import_failure(str(path), exc)) from exc
    return registry_from_module(module, templates_dir=templates_dir or path / "templates")


def same_workflows(first: Registry, second: Registry) -> bool:
    """Whether two registries hold the same workflows, each at the same version."""
    return {name: w.version for name, w in first.workflows.items()} == {
        name: w.version for name, w in second.workflows.items()
    }


def defined_outside(registry: Registry, folder: str | Path) -> list[str]:
    """The workflows of ``registry`` built by code outside ``folder``, as ``name (file:line)``.
    A copied package whose modules import the original absolutely (``from workflows.common
    import ...``) runs the original's workflows, not its own."""
    inside = Path(folder).resolve()
    return [
        f"{name} ({w.source})"
        for name, w in registry.workflows.items()
        if w.source and not Path(w.source.rpartition(":")[0]).resolve().is_relative_to(inside)
    ]


SHARD_CONTACTS = 5_000
"""Contacts per shard. Each shard pays the same per-instant costs (a scheduler pass, the
next due instant) whatever its size, so larger shards are cheaper per contact (10,000 x 10
days: 0.88x the CPU of shards of 2,000); 5,000 keeps two shards for 10,000 contacts, one per
core of a 2-core machine."""


def shard_size(contacts: int, processes: int) -> int:
    """Contacts per shard: at most ``SHARD_CONTACTS``, in a number of shards that keeps
    ``processes`` equally busy (1,000 contacts on 2 processes: two shards of 500; 12,000:
    four of 3,000, not 5,000, 5,000 and 2,000 that leave a process idle at the end). A
    run's result does not depend on it: every contact draws from streams of her own."""
    workers = max(1, processes)
    shards = max(1, -(-contacts // SHARD_CONTACTS))  # no contacts: one (empty) shard
    shards = -(-shards // workers) * workers
    return max(1, -(-contacts // shards))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container limits it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


MAX_CONTACTS = 1_000_000
MAX_DAYS = 3_650
"""The largest run ``simulate`` takes: a million contacts (some hours on two cores) over ten
years. Larger ones would run for days, or run out of memory or of calendar (the virtual
clock starts in 2026 and a date ends at 9999) before anything is shown."""


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
    shard_contacts: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run ``contacts`` synthetic contacts through ``days`` of virtual time.

    Contacts never interact, so the population is cut into shards of ``shard_contacts`` (by
    default ``shard_size``: up to 5,000, in a number that keeps ``processes`` equally
    busy), each with its own database; every contact draws from random streams of her own,
    seeded from ``seed`` and her number; ``processes`` > 1 runs shards in parallel worker
    processes. The result depends on the seed, the number of contacts and days and the
    profile, never on ``processes`` or the shard size.
    ``on_progress(done, total)`` counts shard-days. A profile naming a stage or event type
    the registry does not know raises ``ProfileError`` before anything runs.
    """
    if contacts < 1 or days < 1 or (shard_contacts is not None and shard_contacts < 1):
        raise ValueError("contacts, days and shard_contacts must be at least 1")
    if contacts > MAX_CONTACTS or days > MAX_DAYS:
        raise ValueError(
            f"at most {MAX_CONTACTS:,} contacts and {MAX_DAYS:,} days, "
            f"not {contacts:,} contacts and {days:,} days"
        )
    if shard_contacts is None:  # worked out from ``contacts``: checked first
        shard_contacts = shard_size(contacts, processes)
    profile = profile or Profile()
    problems = profile.registry_problems(registry)
    if problems:
        raise ProfileError(problems)
    started = time.perf_counter()
    shards = [
        (first, min(shard_contacts, contacts - first))
        for first in range(0, contacts, shard_contacts)
    ]
    total = len(shards) * days
    parts: list[ShardPart]
    if processes <= 1 or len(shards) == 1 or "fork" not in mp.get_all_start_methods():
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        with _fewer_collections():
            parts = [
                _shard(registry, profile, seed, n, first, count, days, tick)
                for n, (first, count) in enumerate(shards)
            ]
    else:
        parts = _run_in_processes(registry, profile, seed, shards, days, processes, on_progress)
    return merge_shards(parts, registry, label, contacts, days, seed, time.perf_counter() - started)


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
) -> list[ShardPart]:
    context = mp.get_context("fork")
    days_done = context.SimpleQueue()
    stop = context.Event()
    _FORKED.update(registry=registry, profile=profile, queue=days_done, stop=stop)
    total = len(shards) * days
    done = 0
    # Workers ignore Ctrl-C (a terminal sends it to the whole process group): this process
    # gets it, and tells them to stop at the end of their day, as it does when a shard fails,
    # so each removes its database and none starts another shard.
    pool = ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=_ignore_interrupts
    )
    try:
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
        failed = next((f for f in futures if f.done() and f.exception()), None)
        if failed is not None:
            # The others stop at the end of their day (nobody reads their progress any more:
            # left running, they would fill the queue and hang), and this shard's error is
            # the run's, not that of a shard stopped for it.
            stop.set()
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED.clear()


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stopped(Exception):
    """A worker's shard stopped early: the run was interrupted, or another shard failed."""


def _forked_shard(seed: int, shard: int, first: int, count: int, days: int) -> ShardPart:
    queue, stop = _FORKED["queue"], _FORKED["stop"]

    def day_done() -> None:
        if stop.is_set():
            raise _Stopped(f"shard {shard} stopped")
        queue.put(1)

    if stop.is_set():  # never started: nothing to clean up
        raise _Stopped(f"shard {shard} stopped")
    with _fewer_collections():
        return _shard(
            _FORKED["registry"], _FORKED["profile"], seed, shard, first, count, days, day_done
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


def _shard(
    registry: Registry,
    profile: Profile,
    seed: int,
    shard: int,
    first: int,
    count: int,
    days: int,
    day_done: Callable[[], None],
) -> ShardPart:
    """``_run_shard`` in a temporary folder of its own, removed however the shard ends (also
    on Ctrl-C while the shard is being set up)."""
    folder = Path(tempfile.mkdtemp(prefix="journeyline-simulate-"))
    try:
        return _run_shard(registry, profile, seed, shard, first, count, days, day_done, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_shard(
    registry: Registry,
    profile: Profile,
    seed: int,
    shard: int,
    first: int,
    count: int,
    days: int,
    day_done: Callable[[], None],
    folder: Path,
) -> ShardPart:
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
    people = _population(seed, first, count, days, profile)
    by_email = {person["email"]: person for person in people}
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
                rng = person["daily"]
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
                rng = by_email[to]["reacting"]
                reactions += _react(rng, to, action_id, template, day, profile, boosts)
            _track_all(runtime, reactions)
            events += len(reactions)
            settle(runtime, clock)
            daily.append(Counter(_stages(runtime).values()))
            day_done()
        return count_shard(runtime, registry, events, daily)
    finally:
        runtime.close()
        shutil.rmtree(folder, ignore_errors=True)


def _population(
    seed: int, first: int, count: int, days: int, profile: Profile
) -> list[dict[str, Any]]:
    """Contacts ``first`` to ``first + count - 1``. Each draws from random streams of her
    own, seeded from the seed and her number: who she is and what she does each day from
    one, how she reacts to emails from another. So two versions of the workflows compared
    on one seed differ only for the contacts their emails treated differently (with one
    shared stream, one email more to anyone shifted every later draw for everyone), and the
    result does not depend on how the population is cut into shards. (About 5 KB a contact
    in the shard being run.)"""
    people = []
    for n in range(first, first + count):
        rng = random.Random(f"{seed}:{n}")
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
                "daily": rng,
                "reacting": random.Random(f"{seed}:{n}:reactions"),
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
