"""The ``journeyline`` command line: demo, worker, scheduler, db, track, contact, actions.

Each command builds ``Settings`` from the environment (``JOURNEYLINE_*``), with
``--database-url`` / ``--broker-url`` (given before or after the command name) taking
precedence. Bad input exits with code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import pydantic
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from engine.errors import ConfigurationError, ValidationError
from engine.models import Action, ActionStatus, Contact, Event, EventStatus
from engine.settings import WORKER_THREADS, Settings

if TYPE_CHECKING:
    from engine.registry import Registry
    from engine.timeline import LiveEnrollment

log = logging.getLogger("engine.cli")

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="journeyline",
    help="Lead nurturing and customer lifecycle automation, defined in tested Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL; overrides JOURNEYLINE_DATABASE_URL."),
]
BrokerUrl = Annotated[
    str | None,
    typer.Option(
        "--broker-url", help="stub://, redis://, amqp://; overrides JOURNEYLINE_BROKER_URL."
    ),
]


@dataclass
class Overrides:
    database_url: str | None = None
    broker_url: str | None = None


@app.callback()
def _global(ctx: typer.Context, database_url: DatabaseUrl = None, broker_url: BrokerUrl = None):
    ctx.obj = Overrides(database_url=database_url, broker_url=broker_url)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING,
            format="%(message)s",
            handlers=[RichHandler(console=err_console, show_path=False)],
        )


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(code)


def settings_for(
    ctx: typer.Context, database_url: str | None = None, broker_url: str | None = None
) -> Settings:
    """Settings from the environment, overridden by the command's and then global options."""
    given = ctx.obj if isinstance(ctx.obj, Overrides) else Overrides()
    overrides: dict[str, Any] = {}
    if database_url or given.database_url:
        overrides["database_url"] = database_url or given.database_url
    if broker_url or given.broker_url:
        overrides["broker_url"] = broker_url or given.broker_url
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        fail(f"invalid settings: {exc}")


@contextmanager
def friendly_errors(settings: Settings) -> Iterator[None]:
    """Turn the errors an operator can fix into a message and exit code 2."""
    try:
        yield
    except ValidationError as exc:
        fail(str(exc))
    except ConfigurationError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(
            f"database {settings.database_url}: {exc.orig}. "
            "Is it migrated? Run: journeyline db upgrade"
        )


# --- demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(min=1, help="Synthetic contacts.")] = 300,
    days: Annotated[int, typer.Option(min=1, help="Virtual days to simulate.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same story.")] = 7,
    output: Annotated[Path, typer.Option(help="Folder for the database and outbox.")] = Path(
        "demo-output"
    ),
) -> None:
    """Simulate a month of contacts on a throw-away SQLite database, then report."""
    from engine import demo as demo_module

    options = demo_module.DemoOptions(contacts=contacts, days=days, seed=seed, output=output)
    try:
        report = demo_module.run(options, console)
    except FileExistsError as exc:
        fail(str(exc))
    demo_module.render_report(report, console)


# --- running ------------------------------------------------------------------------------


@app.command()
def worker(
    ctx: typer.Context,
    processes: Annotated[int, typer.Option(min=1)] = 2,
    threads: Annotated[int, typer.Option(min=1)] = WORKER_THREADS,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Run Dramatiq worker processes consuming Journeyline's jobs (needs Redis or RabbitMQ).

    One process per core, a few threads each (why 4: ``engine.settings.WORKER_THREADS``).
    """
    settings = settings_for(ctx, database_url, broker_url)
    if settings.broker_url.startswith("stub:"):
        fail(
            "the worker needs a shared broker (redis:// or amqp://); with stub:// every "
            "journeyline command processes its own jobs in-process"
        )
    # The worker processes build their settings from the environment.
    os.environ["JOURNEYLINE_DATABASE_URL"] = settings.database_url
    os.environ["JOURNEYLINE_BROKER_URL"] = settings.broker_url
    # Read by Dramatiq at import: how long an idle consumer may sleep between polls (an
    # explicit dramatiq_worker_timeout in the environment wins).
    os.environ.setdefault("dramatiq_worker_timeout", str(settings.worker_poll_ms))
    argv = [sys.executable, "-m", "dramatiq", "engine.worker"]
    argv += ["--processes", str(processes), "--threads", str(threads)]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


@app.command()
def scheduler(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One tick, print counts, exit.")] = False,
    periodic: Annotated[
        bool,
        typer.Option(
            "--periodic",
            help="Start the periodic scheduler_tick job on the shared broker and exit: the "
            "workers then run the scheduler (extra copies of the job stop themselves).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Wake due enrollments, fire due schedule triggers and re-dispatch stuck events and
    actions, every interval."""
    from engine.runtime import Runtime

    settings = settings_for(ctx, database_url, broker_url)
    log.setLevel(settings.log_level.upper())
    if periodic:
        if settings.broker_url.startswith("stub:"):
            fail(
                "--periodic needs a shared broker (redis:// or amqp://) and running workers; "
                "with stub:// run `journeyline scheduler` itself"
            )
        with friendly_errors(settings), Runtime(settings) as runtime:
            runtime.jobs.scheduler_tick.send()
        console.print(
            "scheduler_tick enqueued: workers tick every "
            f"{settings.scheduler_interval_seconds:g} s from now on"
        )
        return
    with friendly_errors(settings), Runtime(settings) as runtime:
        runtime.start()  # a no-op unless the broker is stub://, whose jobs run here
        while True:
            due = runtime.tick()
            counts = (
                f"{len(due.enrollments)} enrollments woken, {len(due.contacts)} contacts and "
                f"{len(due.actions)} actions re-dispatched, "
                f"{len(due.schedule_slots)} schedule slots fired"
            )
            if once:
                if runtime.in_process:
                    runtime.drain()
                console.print(counts)
                return
            if len(due):
                log.info(counts)
            try:
                time.sleep(settings.scheduler_interval_seconds)
            except KeyboardInterrupt:
                return


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="Alembic revision to reach.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Create or migrate the schema to REVISION (default: the newest)."""
    from engine import migrations

    settings = settings_for(ctx, database_url)
    with friendly_errors(settings):
        migrations.upgrade(settings.database_url, revision)
    console.print(f"database {settings.database_url} upgraded to {revision}")


# --- inputs -------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, lists), otherwise the string itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint=option)
        parsed[key.strip()] = parse_value(value)
    return parsed


@app.command()
def track(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's email address.")],
    event: Annotated[str, typer.Argument(help="Event type, like trial.started.")],
    prop: Annotated[list[str] | None, typer.Option("--prop", help="Property k=v.")] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="Attribute k=v.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA zone.")] = None,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Record one event for a contact (creating it if new) and process it."""
    from engine.runtime import Runtime

    properties = parse_pairs(prop or [], "--prop")
    attributes = parse_pairs(attr or [], "--attr")
    settings = settings_for(ctx, database_url, broker_url)
    with friendly_errors(settings), Runtime(settings) as runtime:
        recorded = runtime.track(
            email,
            event,
            properties,
            source="cli",
            idempotency_key=key,
            attributes=attributes or None,
            timezone=timezone,
        )
        if runtime.in_process:
            runtime.drain()  # stub://: nobody else will run the jobs
    status = "[yellow]duplicate[/] (already recorded)" if recorded.duplicate else "recorded"
    console.print(
        f"event {recorded.event_id} for contact {recorded.contact_id}: {status}",
        highlight=False,
    )


# --- looking -------------------------------------------------------------------------------


@app.command()
def contact(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's email address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a contact: stage, score, subscription and its timeline."""
    from engine.db import make_engine
    from engine.timeline import contact_timeline, name_steps

    settings = settings_for(ctx, database_url)
    unnamed = ""
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            timeline = contact_timeline(session, email)
            if timeline is not None and timeline.live:  # only then are the workflows needed
                registry, unnamed = _registry_to_name_steps(settings)
                if registry is not None:
                    live = name_steps(session, registry, timeline.live)
                    timeline = dataclasses.replace(timeline, live=live)
    finally:
        db.dispose()
    if timeline is None:
        err_console.print(f"no contact with email {escape(email)!r}")
        raise typer.Exit(1)
    if unnamed:  # on stderr, so --json output stays JSON
        err_console.print(f"[dim]steps not named: {escape(unnamed)}[/]")
    if as_json:
        sys.stdout.write(json.dumps(timeline.to_dict(), indent=2) + "\n")
        return
    who = timeline.contact
    console.print(f"[bold]{escape(who.email)}[/] (contact {who.id})", highlight=False)
    console.print(
        f"stage [bold]{who.stage}[/] since {who.stage_entered_at:%Y-%m-%d %H:%M} UTC, "
        f"score {who.score}, {who.subscription_status}, time zone {who.timezone}",
        highlight=False,
    )
    if who.attributes:
        console.print("attributes: " + escape(json.dumps(who.attributes)), highlight=False)
    table = Table(title="Timeline")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("kind")
    table.add_column("what")
    colours = {"event": "cyan", "stage": "magenta", "enrollment": "blue", "action": "green"}
    for entry in timeline.entries:
        colour = colours.get(entry.kind, "white")
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            f"[{colour}]{entry.kind}[/]",
            escape(entry.summary),
        )
    console.print(table)
    if timeline.live:
        console.print(_live_table(timeline.live, now=datetime.now(UTC)))


def _registry_to_name_steps(settings: Settings) -> tuple[Registry | None, str]:
    """The workflows, to name each live enrollment's step; without them (another machine's
    database, a module that does not load) the view still works and says why."""
    from engine.registry import load_registry

    try:
        return load_registry(settings.workflows, templates_dir=settings.templates_dir), ""
    except Exception as exc:  # shown to the operator, the timeline goes on without names
        return None, f"workflows {settings.workflows!r} did not load ({type(exc).__name__}: {exc})"


def _live_table(live: list[LiveEnrollment], *, now: datetime) -> Table:
    """What comes next for a contact: each running or waiting enrollment, its step, its next
    wake-up and whether a scheduler pass holds that wake-up (for an on-call engineer asking
    why a wait past due has not run)."""
    table = Table(title="Live enrollments")
    for column in ("workflow", "status", "next step (position)", "wakes at (UTC)", "scheduler"):
        table.add_column(column)
    for e in live:
        if e.claimed_until is None:
            past_due = e.wake_at is not None and e.wake_at <= now
            held = "past due: the next scheduler pass hands it out" if past_due else ""
        elif e.claimed_until > now:
            held = f"handed to a job, held until {e.claimed_until:%Y-%m-%d %H:%M:%S}"
        else:  # the job was lost or is late: the next pass hands it out again
            held = f"claim lapsed at {e.claimed_until:%Y-%m-%d %H:%M:%S}: due again"
        table.add_row(
            escape(e.workflow),
            e.status,
            str(e.position) if e.step is None else f"{escape(e.step)} ({e.position})",
            "" if e.wake_at is None else f"{e.wake_at:%Y-%m-%d %H:%M:%S}",
            held,
        )
    return table


@app.command()
def actions(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed and unknown ones: the dead letters.")
    ] = False,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List actions, newest first."""
    from engine.db import make_engine

    known = [s.value for s in ActionStatus]
    if status is not None and status not in known:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(known)}", param_hint="--status"
        )
    settings = settings_for(ctx, database_url)
    query = select(Action, Contact.email).join(Contact, col(Contact.id) == col(Action.contact_id))
    if failed:
        query = query.where(col(Action.status).in_([ActionStatus.FAILED, ActionStatus.UNKNOWN]))
    if status is not None:
        query = query.where(Action.status == status)
    query = query.order_by(col(Action.updated_at).desc(), col(Action.id).desc()).limit(limit)
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            rows = session.exec(query).all()
    finally:
        db.dispose()
    title = "Failed and unknown actions" if failed else "Actions"
    table = Table(title=f"{title} ({len(rows)})")
    for name in ("id", "contact", "workflow/step", "status", "attempts", "error", "updated"):
        table.add_column(
            name,
            justify="right" if name in ("id", "attempts") else "left",
            overflow="fold",
            no_wrap=name in ("id", "status", "updated"),
        )
    styles = {"failed": "red", "unknown": "yellow", "sent": "green"}
    for action, email in rows:
        workflow = action.reason.get("workflow", "manual")
        step = action.reason.get("step", action.payload.get("template", "?"))
        style = styles.get(action.status, "white")
        table.add_row(
            str(action.id),
            escape(email),
            escape(f"{workflow}/{step}"),
            f"[{style}]{action.status}[/]",
            str(action.attempts),
            escape(action.error or action.reason.get("skipped", "") or ""),
            f"{action.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command()
def events(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only events whose processing failed.")
    ] = False,
    unmapped: Annotated[
        bool, typer.Option("--unmapped", help="Only events no rule knows (kept, not applied).")
    ] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List recorded events, newest first: what came in and what became of it."""
    from engine.db import make_engine

    settings = settings_for(ctx, database_url)
    query = select(Event, Contact.email).join(Contact, col(Contact.id) == col(Event.contact_id))
    wanted = [s for s, on in ((EventStatus.FAILED, failed), (EventStatus.UNMAPPED, unmapped)) if on]
    if wanted:
        query = query.where(col(Event.status).in_(wanted))
    query = query.order_by(col(Event.id).desc()).limit(limit)
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            rows = session.exec(query).all()
    finally:
        db.dispose()
    table = Table(title=f"Events ({len(rows)})")
    for name in ("id", "contact", "type", "source", "status", "error", "received"):
        table.add_column(name, justify="right" if name == "id" else "left", overflow="fold")
    styles = {"failed": "red", "unmapped": "yellow", "processed": "green"}
    for event, email in rows:
        style = styles.get(event.status, "white")
        table.add_row(
            str(event.id),
            escape(email),
            escape(event.type),
            escape(event.source),
            f"[{style}]{event.status}[/]",
            escape(event.error or ""),
            f"{event.received_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _register_subcommands() -> None:
    # Sub-commands in their own modules register themselves on the app when imported.
    import engine.cli_api
    import engine.cli_broadcast
    import engine.cli_fakes
    import engine.cli_simulate
    import engine.cli_workflows  # noqa: F401


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    # Under `python -m engine.cli` this module runs as __main__, while the sub-command
    # modules register on the importable engine.cli: run that one.
    import engine.cli as importable

    importable.main()
