"""The demo: synthetic contacts living through a month of virtual time, then a report.

``run`` sets up a throw-away installation (SQLite file, ``.eml`` outbox, in-process broker
and worker, a ``VirtualClock``) and feeds it a seeded stream of the events the default
playbook knows: page views and downloads build the lead score, trials and demo requests
start an evaluation, orders make customers, usage, renewals, NPS answers and cancellations
move them on. What a contact does next depends on the stage the engine has put it in, so
the funnel the report shows is the engine's work, not the generator's.

Every event goes through ``Runtime.track``, the path the API and the CLI use. The report
counts emails and the other actions workflows take (CRM tasks and updates, webhooks) apart:
only the emails are ``.eml`` files in the outbox; the embedded CRM connector writes the CRM
steps as JSON files in ``outbox/crm/``.
"""

from __future__ import annotations

import logging
import random
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.email import OutboxEmailConnector
from engine.clock import VirtualClock
from engine.models import Action, ActionStatus, Contact
from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings

FIRST_NAMES = (
    "Ana", "Ben", "Chloé", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jin", "Kofi",
    "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera",
    "Wen", "Ximena", "Yusuf", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Alvarez", "Brown", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jones", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Silva",
)  # fmt: skip
TIME_ZONES = (
    "Europe/Madrid", "Europe/London", "America/New_York", "America/Los_Angeles",
    "Asia/Tokyo", "Australia/Sydney", "UTC",
)  # fmt: skip
PAGES = ("/", "/pricing", "/features", "/blog/nurture-playbook", "/customers", "/docs")
CONTENT = ("lifecycle-ebook", "roi-calculator", "benchmark-report")
PLANS = (("starter", 49), ("team", 149), ("business", 499))

# Chance per active day of each event, by the contact's current stage. Contacts differ in
# appetite (``Persona.intent``), which scales the chances of moving forward. A page view is
# one visit (``pages`` says how many pages) and product usage a daily roll-up, as a
# tracking plan would send them, not one event per click.
Behaviour = dict[str, float]
BEHAVIOUR: dict[str, Behaviour] = {
    "awareness": {
        "page.viewed": 0.14, "email.clicked": 0.05, "content.downloaded": 0.1,
        "webinar.attended": 0.04, "demo.requested": 0.01, "trial.started": 0.015,
    },
    "consideration": {
        "page.viewed": 0.12, "email.clicked": 0.06, "content.downloaded": 0.05,
        "webinar.attended": 0.04, "demo.requested": 0.07, "trial.started": 0.09,
    },
    "decision": {"page.viewed": 0.1, "email.clicked": 0.05, "order.completed": 0.09},
    "purchase": {"product.activated": 0.3},
    "onboarding": {
        "product.activated": 0.22, "product.used": 0.15, "subscription.cancelled": 0.004,
    },
    "engagement": {
        "product.used": 0.15, "subscription.renewed": 0.06, "nps.answered": 0.03,
        "product.inactive": 0.02, "subscription.cancelled": 0.008,
    },
    "retention": {
        "product.used": 0.15, "order.completed": 0.08, "nps.answered": 0.04,
        "product.inactive": 0.02, "subscription.cancelled": 0.005,
    },
    "loyalty": {"product.used": 0.15, "nps.answered": 0.12, "subscription.cancelled": 0.003},
    "advocacy": {"product.used": 0.15, "nps.answered": 0.02},
    "churned": {"page.viewed": 0.04, "order.completed": 0.01},
}  # fmt: skip
# Events that move a contact forward: these scale with intent; the rest do not.
FORWARD = frozenset(
    {
        "content.downloaded",
        "webinar.attended",
        "demo.requested",
        "trial.started",
        "order.completed",
        "product.activated",
        "subscription.renewed",
    }
)


@dataclass(frozen=True)
class DemoOptions:
    contacts: int = 300
    days: int = 30
    seed: int = 7
    output: Path = Path("demo-output")


@dataclass
class Persona:
    email: str
    first_name: str
    timezone: str
    arrives_day: int
    intent: float  # 0.2 (browsing) .. 2.0 (in a hurry)
    quiet_after_day: int | None  # the day they lose interest, if they do
    plan: tuple[str, int]
    seen: bool = False


@dataclass(frozen=True)
class StageCount:
    stage: str
    contacts: int
    percent: float


@dataclass(frozen=True)
class StepStats:
    workflow: str
    step: str
    kind: str = "email"  # the action's kind: email, crm.task, crm.update, crm.note, webhook
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    other: int = 0


@dataclass
class DemoReport:
    database_url: str
    outbox: Path
    eml_files: int
    events: int
    seconds: float
    crm_records: int = 0
    stages: list[StageCount] = field(default_factory=list)
    emails: list[StepStats] = field(default_factory=list)
    other_actions: list[StepStats] = field(default_factory=list)  # CRM steps, webhooks
    sample_email: str | None = None
    cli: str = "journeyline"  # how to run the CLI again, as the report prints it


# --- the synthetic population -------------------------------------------------------------


def make_personas(rng: random.Random, count: int, days: int) -> list[Persona]:
    people: list[Persona] = []
    used: set[str] = set()
    for n in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{_ascii(first)}.{_ascii(last)}@example.com"
        if email in used:
            email = f"{_ascii(first)}.{_ascii(last)}{n}@example.com"
        used.add(email)
        people.append(
            Persona(
                email=email,
                first_name=first,
                timezone=rng.choice(TIME_ZONES),
                # Most arrive early so the month has time to show the whole funnel.
                arrives_day=min(int(rng.expovariate(1 / max(days / 5, 1))), max(days - 1, 0)),
                intent=min(2.0, max(0.2, rng.lognormvariate(0, 0.6))),
                quiet_after_day=rng.randrange(days) if rng.random() < 0.25 else None,
                plan=rng.choice(PLANS),
            )
        )
    return people


def _ascii(name: str) -> str:
    return name.lower().replace("é", "e")


def plan_day(
    rng: random.Random, person: Persona, stage: str | None, day: int
) -> list[tuple[str, dict[str, Any]]]:
    """The events ``person`` produces on ``day``, given the stage they are in now."""
    if day < person.arrives_day:
        return []
    if not person.seen:
        return [("page.viewed", {"url": rng.choice(PAGES), "utm_source": "search"})]
    quiet = person.quiet_after_day is not None and day >= person.quiet_after_day
    if quiet:
        if stage in ("engagement", "retention", "loyalty") and rng.random() < 0.2:
            return [("product.inactive", {"days": day - (person.quiet_after_day or 0)})]
        if stage in ("engagement", "retention") and rng.random() < 0.03:
            return [("subscription.cancelled", {"reason": "not using it"})]
        return []
    chosen: list[tuple[str, dict[str, Any]]] = []
    for event_type, chance in BEHAVIOUR.get(stage or "awareness", {}).items():
        if event_type in FORWARD:
            chance *= person.intent
        if rng.random() < chance:
            chosen.append((event_type, _properties(rng, person, event_type, stage)))
    return chosen


def _properties(
    rng: random.Random, person: Persona, event_type: str, stage: str | None
) -> dict[str, Any]:
    plan, price = person.plan
    match event_type:
        case "page.viewed":
            return {"url": rng.choice(PAGES), "pages": rng.randint(1, 6)}
        case "content.downloaded":
            return {"asset": rng.choice(CONTENT)}
        case "webinar.attended":
            return {"webinar": "lifecycle-101", "minutes": rng.randint(10, 55)}
        case "trial.started" | "demo.requested" | "subscription.renewed":
            return {"plan": plan}
        case "order.completed":
            return {"plan": plan, "total": price * rng.choice((1, 1, 12)), "currency": "EUR"}
        case "product.used":
            features = ("workflows", "reports", "segments", "api")
            return {"sessions": rng.randint(1, 9), "top_feature": rng.choice(features)}
        case "nps.answered":
            # Promoters are likelier among rewarded, loyal customers.
            high = 0.65 if stage in ("loyalty", "advocacy") else 0.35
            roll = rng.random()
            score = rng.randint(9, 10) if roll < high else rng.randint(7, 8)
            if roll > 0.85:
                score = rng.randint(0, 6)
            return {"score": score}
        case "subscription.cancelled":
            return {"reason": rng.choice(("price", "missing feature", "switched vendor"))}
        case _:
            return {}


def _local_hour_utc(rng: random.Random, person: Persona, day_start: datetime) -> int:
    """An hour offset from ``day_start`` (UTC) that falls in the person's waking day."""
    local = rng.choice((8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21))
    offset = day_start.astimezone(ZoneInfo(person.timezone)).utcoffset() or timedelta(0)
    return int((local - offset.total_seconds() / 3600) % 24)


# --- running it ---------------------------------------------------------------------------


def prepare_output(output: Path) -> None:
    """Empty ``output`` (a previous demo's folder) and create it again.

    Refuses to delete a folder holding anything a demo does not write, so a mistyped
    ``--output`` cannot remove someone's work.
    """
    if output.exists():
        ours = {"journeyline.db", "journeyline.db-wal", "journeyline.db-shm", "outbox"}
        foreign = sorted(p.name for p in output.iterdir() if p.name not in ours)
        if not output.is_dir() or foreign:
            raise FileExistsError(
                f"{output} exists and holds files a demo did not write ({', '.join(foreign[:3])}"
                f"{'...' if len(foreign) > 3 else ''}); choose another --output"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True)


def simulate(
    runtime: Runtime,
    clock: VirtualClock,
    options: DemoOptions,
    *,
    on_hour: Callable[[], None] | None = None,
) -> int:
    """Feed the population through ``options.days`` of virtual time; returns events sent."""
    rng = random.Random(options.seed)
    people = make_personas(rng, options.contacts, options.days)
    sent = 0
    for day in range(options.days):
        day_start = clock.now()
        stages = current_stages(runtime.db)
        by_hour: dict[int, list[tuple[Persona, str, dict[str, Any]]]] = {}
        for person in people:
            for event_type, props in plan_day(rng, person, stages.get(person.email), day):
                hour = _local_hour_utc(rng, person, day_start)
                by_hour.setdefault(hour, []).append((person, event_type, props))
        for hour in range(24):
            for person, event_type, props in by_hour.get(hour, []):
                first = not person.seen
                runtime.track(
                    person.email,
                    event_type,
                    props,
                    source="demo",
                    idempotency_key=f"{person.email}:{sent}",
                    attributes={"first_name": person.first_name} if first else None,
                    timezone=person.timezone if first else None,
                )
                person.seen = True
                sent += 1
            runtime.run_until_idle()
            clock.advance(hours=1)
            if on_hour is not None:
                on_hour()
    runtime.run_until_idle()
    return sent


def current_stages(db: Engine) -> dict[str, str]:
    with Session(db) as session:
        return dict(session.exec(select(Contact.email, Contact.stage)).all())  # type: ignore[arg-type]


def stage_counts(db: Engine, registry: Registry) -> list[StageCount]:
    """Contacts per stage, in journey order (stages nobody reached included)."""
    with Session(db) as session:
        rows = session.exec(
            select(Contact.stage, func.count(col(Contact.id))).group_by(col(Contact.stage))
        ).all()
    counts = dict(rows)
    total = sum(counts.values()) or 1
    names = list(registry.journey.stage_names)
    names += sorted(s for s in counts if s not in names)
    return [StageCount(s, counts.get(s, 0), 100 * counts.get(s, 0) / total) for s in names]


def action_stats(db: Engine, registry: Registry) -> list[StepStats]:
    """Actions per workflow step, kind and outcome, in the order workflows and steps are
    defined."""
    with Session(db) as session:
        rows = session.exec(select(Action.reason, Action.kind, Action.status)).all()
    tally: Counter[tuple[str, str, str, str]] = Counter()
    for reason, kind, status in rows:
        flow, step = str(reason.get("workflow", "manual")), str(reason.get("step", "?"))
        tally[(flow, step, kind, status)] += 1
    order: dict[tuple[str, str], int] = {}
    for workflow in registry.workflows.values():
        for node in workflow.program:
            order.setdefault((workflow.name, node.id), len(order))
    steps = sorted(
        {(w, s, k) for w, s, k, _ in tally},
        key=lambda key: (order.get(key[:2], len(order)), key),
    )
    known = (ActionStatus.SENT, ActionStatus.SKIPPED, ActionStatus.FAILED)
    return [
        StepStats(
            workflow=w,
            step=s,
            kind=k,
            sent=tally[(w, s, k, ActionStatus.SENT)],
            skipped=tally[(w, s, k, ActionStatus.SKIPPED)],
            failed=tally[(w, s, k, ActionStatus.FAILED)],
            other=sum(
                n
                for (w2, s2, k2, st), n in tally.items()
                if (w2, s2, k2) == (w, s, k) and st not in known
            ),
        )
        for w, s, k in steps
    ]


def email_stats(db: Engine, registry: Registry) -> list[StepStats]:
    """Emails per workflow step and outcome: the steps whose sent ones are ``.eml`` files."""
    return [row for row in action_stats(db, registry) if row.kind == "email"]


def cli_command(
    *,
    executable: str | None = None,
    cwd: Path | None = None,
    path: str | None = None,
) -> str:
    """How to run ``journeyline`` from ``cwd``, as a shell command that works as printed.

    ``journeyline`` itself when the one on ``PATH`` is this installation's (an activated
    venv); else the entry point beside this interpreter (``.venv/bin/journeyline`` after
    ``make demo``), relative to ``cwd`` when under it; else ``python -m engine.cli``.
    """
    executable = executable or sys.executable
    cwd = cwd or Path.cwd()
    script = Path(executable).parent / "journeyline"
    on_path = shutil.which("journeyline", path=path)  # None: the PATH of the environment
    if on_path and Path(on_path).absolute() == script.absolute():
        return "journeyline"
    if not script.is_file():
        return f"{shlex.quote(executable)} -m engine.cli"
    try:
        shown = script.absolute().relative_to(cwd.absolute()).as_posix()
    except ValueError:
        shown = str(script.absolute())
    if "/" not in shown:  # a bare name would be looked up on PATH, where it is not
        shown = f"./{shown}"
    return shlex.quote(shown)


def run(options: DemoOptions, console: Console) -> DemoReport:
    """Build a fresh demo installation in ``options.output``, simulate, and report."""
    from engine.migrations import upgrade

    started = time.perf_counter()
    output = options.output
    prepare_output(output)
    database_url = f"sqlite:///{output.resolve() / 'journeyline.db'}"
    outbox = output / "outbox"
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        broker_url="stub://",
        email_connector="outbox",
        outbox_dir=outbox,
        # SQLite has one writer at a time: more threads only queue on its lock.
        worker_threads=1,
    )
    clock = VirtualClock()
    with (
        _quiet("engine"),
        Runtime(settings, clock=clock, email=OutboxEmailConnector(outbox)) as runtime,
    ):
        runtime.start()
        columns = (
            TextColumn("[bold]simulating[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"{options.contacts} contacts", total=options.days * 24)
            events = simulate(runtime, clock, options, on_hour=lambda: progress.advance(task))
        actions = action_stats(runtime.db, runtime.registry)
        report = DemoReport(
            database_url=database_url,
            outbox=outbox,
            eml_files=len(list(outbox.glob("*.eml"))) if outbox.exists() else 0,
            crm_records=len(list((outbox / "crm").glob("*.json"))),
            events=events,
            seconds=0.0,
            stages=stage_counts(runtime.db, runtime.registry),
            emails=[row for row in actions if row.kind == "email"],
            other_actions=[row for row in actions if row.kind != "email"],
            sample_email=_sample_email(runtime.db),
            cli=cli_command(),
        )
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Routine per-event warnings would bury the progress bar; errors still show."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sample_email(db: Engine) -> str | None:
    """A contact with an interesting timeline: the one furthest along with most actions."""
    with Session(db) as session:
        row = session.exec(
            select(Contact.email)
            .join(Action, col(Action.contact_id) == col(Contact.id))
            .group_by(col(Contact.email))
            .order_by(func.count(col(Action.id)).desc(), col(Contact.email))
            .limit(1)
        ).first()
    return row


# --- the report ---------------------------------------------------------------------------


def render_report(report: DemoReport, console: Console) -> None:
    stages = Table(title="Contacts per stage")
    stages.add_column("stage")
    stages.add_column("contacts", justify="right")
    stages.add_column("%", justify="right")
    for row in report.stages:
        stages.add_row(row.stage, str(row.contacts), f"{row.percent:.1f}")
    console.print(stages)

    emails = Table(title="Emails per workflow step", show_footer=True)
    _step_columns(emails, report.emails, kind=False)
    console.print(emails)
    if report.other_actions:
        others = Table(title="CRM steps and other actions per workflow step", show_footer=True)
        _step_columns(others, report.other_actions, kind=True)
        console.print(others)

    console.print(
        f"{report.events} events simulated in {report.seconds:.1f}s. "
        f"Outbox: [bold]{escape(str(report.outbox))}[/] holds {report.eml_files} .eml files"
        + (
            f", and {report.crm_records} CRM records in "
            f"[bold]{escape(str(report.outbox / 'crm'))}[/]."
            if report.crm_records
            else "."
        )
    )
    if report.sample_email:
        command = (
            f"{report.cli} contact {shlex.quote(report.sample_email)} "
            f"--database-url {shlex.quote(report.database_url)}"
        )
        console.print("See one contact's story:")
        # soft_wrap: a command folded at the terminal's width would not run when pasted.
        console.print(f"  [bold]{escape(command)}[/]", soft_wrap=True)
        performance = f"{report.cli} report --database-url {shlex.quote(report.database_url)}"
        console.print("See how the workflows performed:")
        console.print(f"  [bold]{escape(performance)}[/]", soft_wrap=True)


def _step_columns(table: Table, rows: list[StepStats], *, kind: bool) -> None:
    """Workflow, step (and kind) per row, then the outcomes, with their totals as footer."""
    table.add_column("workflow", footer="total")
    table.add_column("step")
    if kind:
        table.add_column("kind")
    for name, total in (
        ("sent", sum(r.sent for r in rows)),
        ("skipped", sum(r.skipped for r in rows)),
        ("failed", sum(r.failed for r in rows)),
    ):
        table.add_column(name, justify="right", footer=str(total))
    for row in rows:
        failed = f"[red]{row.failed}[/]" if row.failed else "0"
        names = (row.workflow, row.step, row.kind) if kind else (row.workflow, row.step)
        table.add_row(*names, str(row.sent), str(row.skipped), failed)
