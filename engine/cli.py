"""The ``journeyline`` command line: demo, worker, scheduler, db, track, contact, actions.

Each command builds ``Settings`` from the environment (``JOURNEYLINE_*``), with
``--database-url`` / ``--broker-url`` (given before or after the command name) taking
precedence. Failures end in a message, never a traceback, and an exit code:

    1  not found, or an action ``actions retry`` was asked for and refused
    2  bad input, bad settings, or a database that cannot be reached or is not migrated
    3  stored, but the broker did not take the job (or, on stub://, the jobs it started did
       not finish): nothing is lost, a scheduler pass hands it to the workers once its
       lease runs out and the broker answers
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import pydantic
import typer
from dramatiq.errors import QueueJoinTimeout
from pydantic_settings import BaseSettings, SettingsError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError
from sqlmodel import Session, col, select

from engine.broker import broker_errors, describe_broker_error
from engine.db_errors import schema_behind
from engine.errors import ConfigurationError, ValidationError, WorkflowDefinitionError
from engine.models import Contact, Event, EventStatus
from engine.settings import (
    WORKER_THREADS,
    Settings,
    describe_settings_error,
    environment_problems,
)
from engine.urls import UNPARSABLE, redact_url

if TYPE_CHECKING:
    from engine.runtime import Runtime

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
        logging.basicConfig(level=logging.WARNING, **_log_format())
    if ctx.invoked_subcommand not in _LONG_RUNNING:
        # pika logs an unreachable RabbitMQ at ERROR, traceback and all, a dozen records per
        # connection attempt, before the command's own one-line message says the same.
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def _log_format() -> dict[str, Any]:
    """Rich's records on a terminal; elsewhere (a service's log, read by a log shipper) one
    plain line a record, each with its time: Rich wraps a record at the console's width
    and leaves out a time equal to the line before's, which a shipper reads as several
    records, most without a time."""
    if err_console.is_terminal:
        return {
            "format": "%(message)s",
            "handlers": [RichHandler(console=err_console, show_path=False)],
        }
    return {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        "handlers": [logging.StreamHandler(sys.stderr)],
    }


_LONG_RUNNING = frozenset({"serve", "worker"})
"""Commands whose logs are the service's: they keep every library's records."""


EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_ENQUEUED = 3
"""Stored, but the broker did not take the job (see the module docstring)."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console.print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(code)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """``settings_cls`` from the environment and ``.env``; a bad variable ends the command
    with one line per variable, named as the operator set it, and so does a
    ``JOURNEYLINE_*`` variable that is no setting (a typo would leave the default)."""
    lines = environment_problems()
    try:
        loaded = settings_cls(**overrides)
    except (pydantic.ValidationError, SettingsError) as exc:
        lines += describe_settings_error(exc, settings_cls)
    if lines:
        for line in lines:
            err_console.print(f"[bold red]error:[/] [red]{escape(line)}[/]", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    return loaded


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
    return load_settings(Settings, **overrides)


def describe_database(url: str) -> str:
    """Where a database URL points, without its password: ``host:port/name`` or a file."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return redact_url(url)
    if parsed.host and "@" in parsed.host:
        return UNPARSABLE
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}" if parsed.database else "SQLite in memory"
    port = parsed.port or {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name())
    where = parsed.host or "localhost (socket)"
    return f"{where}{f':{port}' if port else ''}/{parsed.database or ''}"


def database_problem(exc: DBAPIError, url: str) -> str | None:
    """What an operator should hear about a database error, or None when it is no
    connection or schema problem (a bug, which had better keep its traceback)."""
    reason = _one_line(exc.orig).rstrip(".?!")
    where = describe_database(url)
    if exc.statement is None:  # raised while connecting: no statement ran
        check = (
            "that its folder exists and can be written"
            if where.startswith("SQLite")
            else "that the server is running and reachable"
        )
        return (
            f"cannot connect to the database at {where}: {reason}. Check {check}, and "
            "JOURNEYLINE_DATABASE_URL (or --database-url)"
        )
    if schema_behind(exc):
        first_line = str(exc.orig).strip().splitlines()[0]  # PostgreSQL adds the SQL
        return (
            f"the database at {where} answers, but Journeyline's tables are missing or older "
            f"than this version ({first_line}). Run: journeyline db upgrade"
        )
    if isinstance(exc, OperationalError):
        return f"database at {where}: {reason}"
    return None


def _one_line(exc: BaseException | None) -> str:
    return " ".join(str(exc).split())


def broker_problem(exc: BaseException, url: str) -> str:
    return f"the broker {redact_url(url)} did not take the job ({describe_broker_error(exc)})"


def read_rows(settings: Settings, query: Any) -> list[Any]:
    """Run one read-only ``query`` on the configured database, errors made friendly."""
    from engine.db import make_engine

    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            return list(session.exec(query).all())
    finally:
        db.dispose()


@contextmanager
def friendly_errors(settings: Settings, *, broker_hint: str | None = None) -> Iterator[None]:
    """Turn the errors an operator can fix into a message and exit code 2 (3 when the
    broker refused a job after the database kept what it is for; ``broker_hint`` says
    what becomes of it)."""
    try:
        yield
    except ValidationError as exc:
        fail(str(exc))
    except (ConfigurationError, WorkflowDefinitionError) as exc:
        fail(str(exc))
    except (OperationalError, ProgrammingError) as exc:
        problem = database_problem(exc, settings.database_url)
        if problem is None:
            raise
        fail(problem)
    except QueueJoinTimeout:
        fail(
            "the jobs this command started on the in-process broker (stub://) did not "
            "finish in time: one keeps failing, its error is logged above. What was recorded "
            "is kept: a scheduler pass (journeyline scheduler --once) hands pending rows to "
            "the jobs again; journeyline actions and journeyline events --failed show where "
            "they are",
            code=EXIT_NOT_ENQUEUED,
        )
    except broker_errors() as exc:
        hint = broker_hint or (
            "Whatever was stored before it is kept: a scheduler pass hands pending rows to "
            "the workers once their lease runs out and the broker answers"
        )
        fail(f"{broker_problem(exc, settings.broker_url)}. {hint}", code=EXIT_NOT_ENQUEUED)


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
    except (NotADirectoryError, PermissionError) as exc:  # a file, or a folder not ours
        fail(f"cannot use {output} for the demo: {exc.strerror or exc}; choose another --output")
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
    with friendly_errors(settings):
        _check_workers_can_start(settings)
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


def _check_workers_can_start(settings: Settings) -> None:
    """Load the workflows, build the connectors and read the database's schema revision
    once, as every worker process will need them: a broken workflows module, a connector
    factory that raises, a database that cannot be reached or is not migrated is one line
    here, before the processes start, not a line per process beside Dramatiq's "exited
    unexpectedly", nor a worker that looks ready and fails every job."""
    from engine import migrations
    from engine.performer_setup import configured_performers
    from engine.registry import load_registry
    from engine.runtime import email_connector_for

    registry = load_registry(settings.workflows, templates_dir=settings.templates_dir)
    email_connector_for(settings).close()
    setup = configured_performers(settings, registry)
    for connector in (setup.crm, setup.webhooks):
        if connector is not None:
            connector.close()
    revision = migrations.current(settings.database_url)
    problem = migrations.schema_problem([revision] if revision else [])
    if problem is not None:
        raise ConfigurationError(problem)


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="Alembic revision to reach.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Create or migrate the schema to REVISION (default: the newest)."""
    from alembic.util.exc import CommandError

    from engine import migrations

    settings = settings_for(ctx, database_url)
    where = describe_database(settings.database_url)
    with friendly_errors(settings):
        before = migrations.current(settings.database_url)
        newest = migrations.head()
        if before not in (None, newest) and migrations.schema_problem([before]) is None:
            # A revision this version does not know: a newer Journeyline migrated it (a
            # rolling deploy, a rollback), and this one runs on it as it is.
            ahead = (
                f"database {where} is at {before}, newer than this version's newest "
                f"({newest}): a newer Journeyline migrated it"
            )
            if revision != "head":
                fail(f"{ahead}; it never goes back, so not to {revision!r}")
            console.print(f"{ahead}; this version runs on it as it is: nothing to do")
            return
        try:
            # Where it was when this run's turn came: another deploy's upgrade may have run
            # while this one waited for it.
            before = migrations.upgrade(settings.database_url, revision)
        except CommandError as exc:  # no such revision, or one behind where it is
            fail(f"cannot upgrade {where} to {revision!r}: {exc}")
        after = migrations.current(settings.database_url)
    if after == before:
        newer = "" if revision in ("head", after) else f"; {revision} is not ahead of it"
        console.print(f"database {where} already at {after}{newer}: nothing to do")
    else:
        console.print(f"database {where} upgraded from {before or 'an empty schema'} to {after}")


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
    occurred_at: Annotated[
        str | None,
        typer.Option(
            "--occurred-at",
            help="When it happened, ISO 8601 (2026-03-01T09:30:00+01:00; UTC without an "
            "offset); default now. Over LATE_EVENTS_AFTER ago it is kept as history.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Record one event for a contact (creating it if new) and process it."""
    from engine.runtime import Runtime

    occurred = _parse_occurred_at(occurred_at) if occurred_at is not None else None
    properties = parse_pairs(prop or [], "--prop")
    attributes = parse_pairs(attr or [], "--attr")
    settings = settings_for(ctx, database_url, broker_url)
    # A key of the form the engine gives a keyless event, chosen here: if the broker refuses
    # the job after the event is stored, this is how the stored event is found again.
    key = key or f"auto:{uuid.uuid4()}"
    with friendly_errors(settings), Runtime(settings) as runtime:
        try:
            recorded = runtime.track(
                email,
                event,
                properties,
                source="cli",
                idempotency_key=key,
                attributes=attributes or None,
                timezone=timezone,
                occurred_at=occurred,
            )
        except broker_errors() as exc:
            _recorded_not_enqueued(runtime, f"cli:{key}", exc)
        if runtime.in_process:
            runtime.drain()  # stub://: nobody else will run the jobs
    status = "[yellow]duplicate[/] (already recorded)" if recorded.duplicate else "recorded"
    console.print(
        f"event {recorded.event_id} for contact {recorded.contact_id}: {status}",
        highlight=False,
    )


def _parse_occurred_at(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--occurred-at {text!r} is not an ISO 8601 time, like 2026-03-01T09:30:00+01:00")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _recorded_not_enqueued(runtime: Runtime, idempotency_key: str, exc: BaseException) -> NoReturn:
    """The event is stored but its job is not on the broker: say so, and when a scheduler
    pass hands it to the workers anyway (its dispatch lease, then a pass every interval)."""
    from engine.recording import EVENT_LEASE

    settings = runtime.settings
    with Session(runtime.db) as session:
        stored = session.exec(
            select(Event.id, Event.contact_id, Event.lease_until).where(
                Event.idempotency_key == idempotency_key
            )
        ).first()
    if stored is None:  # cannot be: the insert committed before the send
        fail(broker_problem(exc, settings.broker_url), code=EXIT_NOT_ENQUEUED)
    event_id, contact_id, lease_until = stored
    console.print(f"event {event_id} for contact {contact_id}: recorded", highlight=False)
    minutes = EVENT_LEASE.total_seconds() / 60
    err_console.print(
        f"[yellow]warning:[/] event {event_id} is recorded (pending) but was not handed to "
        f"the workers: {escape(broker_problem(exc, settings.broker_url))}.\n"
        f"Nothing is lost: the first scheduler pass after {lease_until:%Y-%m-%d %H:%M:%S} "
        f"UTC (its {minutes:g}-minute dispatch lease; a pass every "
        f"{settings.scheduler_interval_seconds:g} s) hands it to the workers, once the broker "
        "answers; `journeyline scheduler` or workers with "
        "JOURNEYLINE_SCHEDULER_IN_WORKERS=true must be running.",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_NOT_ENQUEUED)


# --- looking -------------------------------------------------------------------------------


@app.command()
def events(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only events whose processing failed.")
    ] = False,
    unmapped: Annotated[
        bool, typer.Option("--unmapped", help="Only events no rule knows (kept, not applied).")
    ] = False,
    late: Annotated[
        bool,
        typer.Option(
            "--late", help="Only events that arrived too late to apply (kept as history)."
        ),
    ] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List recorded events, newest first: what came in and what became of it."""

    settings = settings_for(ctx, database_url)
    query = select(Event, Contact.email).join(Contact, col(Contact.id) == col(Event.contact_id))
    chosen = (
        (EventStatus.FAILED, failed),
        (EventStatus.UNMAPPED, unmapped),
        (EventStatus.LATE, late),
    )
    wanted = [s for s, on in chosen if on]
    if wanted:
        query = query.where(col(Event.status).in_(wanted))
    query = query.order_by(col(Event.id).desc()).limit(limit)
    rows = read_rows(settings, query)
    table = Table(title=f"Events ({len(rows)})")
    for name in ("id", "contact", "type", "source", "status", "error", "occurred", "received"):
        table.add_column(name, justify="right" if name == "id" else "left", overflow="fold")
    styles = {"failed": "red", "unmapped": "yellow", "late": "yellow", "processed": "green"}
    for event, email in rows:
        style = styles.get(event.status, "white")
        table.add_row(
            str(event.id),
            escape(email),
            escape(event.type),
            escape(event.source),
            f"[{style}]{event.status}[/]",
            escape(event.error or ""),
            f"{event.occurred_at:%Y-%m-%d %H:%M}",
            f"{event.received_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _register_subcommands() -> None:
    # Sub-commands in their own modules register themselves on the app when imported.
    import engine.cli_actions
    import engine.cli_api
    import engine.cli_broadcast
    import engine.cli_contact
    import engine.cli_fakes
    import engine.cli_report
    import engine.cli_scheduler
    import engine.cli_simulate
    import engine.cli_workflows  # noqa: F401


def main() -> None:
    try:
        _register_subcommands()  # seconds of imports: a Ctrl-C then is no traceback either
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ConfigurationError as exc:  # met before a command's own friendly_errors (a bad
        # database URL as the engine is made): one line, as for any other bad setting
        err_console.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]")
        raise SystemExit(EXIT_BAD_INPUT) from None


if __name__ == "__main__":
    # Under `python -m engine.cli` this module runs as __main__, while the sub-command
    # modules register on the importable engine.cli: run that one.
    import engine.cli as importable

    importable.main()
