"""``journeyline workflows``: list, check, show (Mermaid) and migrate workflow versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Session

from engine.cli import (
    DatabaseUrl,
    app,
    console,
    database_problem,
    err_console,
    fail,
    redact_url,
    settings_for,
)
from engine.db import make_engine, transaction
from engine.diagram import describe_trigger, mermaid
from engine.errors import WorkflowDefinitionError, WorkflowImportError
from engine.executor import count_at_steps
from engine.registry import Registry, load_registry
from engine.settings import Settings
from engine.versions import MigrationPlan, apply_migration, plan_migration

workflows_app = typer.Typer(help="List, check, draw and migrate workflows.", no_args_is_help=True)
app.add_typer(workflows_app, name="workflows")


def _registry(settings: Settings) -> Registry:
    try:
        return load_registry(settings.workflows, templates_dir=settings.templates_dir)
    except WorkflowImportError as exc:  # not found, or the module raised: one paragraph
        fail(str(exc), code=1)
    except WorkflowDefinitionError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]- {escape(problem)}[/]")
        fail(f"{len(exc.problems)} problem(s) in {settings.workflows}", code=1)


def _counts(settings: Settings, name: str) -> dict[tuple[str, int], int] | None:
    if _sqlite_file_missing(settings.database_url):
        return None  # connecting would create an empty database file where none was
    db = make_engine(settings.database_url)
    try:
        with Session(db) as session:
            return count_at_steps(session, name)
    except (OperationalError, ProgrammingError):
        return None  # no database (or not migrated): draw without live counts
    finally:
        db.dispose()


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path:
        return False
    return not Path(path).exists()


@workflows_app.command("check")
def check(ctx: typer.Context) -> None:
    """Validate every workflow; exit 1 and list every problem if any."""
    settings = settings_for(ctx)
    registry = _registry(settings)
    console.print(f"[green]{len(registry.workflows)} workflows OK[/] in {settings.workflows}")


@workflows_app.command("list")
def list_workflows(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Every workflow with its trigger, version and live enrollments."""
    settings = settings_for(ctx, database_url)
    registry = _registry(settings)
    table = Table(title=f"Workflows in {settings.workflows}")
    for column in ("name", "trigger", "steps", "version", "live (this / older versions)"):
        table.add_column(column, overflow="fold")
    for workflow in registry.workflows.values():
        counts = _counts(settings, workflow.name)
        if counts is None:
            live = "-"
        else:
            this = sum(n for (v, _), n in counts.items() if v == workflow.version)
            older = sum(n for (v, _), n in counts.items() if v != workflow.version)
            live = f"{this} / {older}"
        table.add_row(
            workflow.name,
            escape(describe_trigger(workflow.trigger)),
            str(len(workflow.program)),
            workflow.version,
            live,
        )
    console.print(table)


@workflows_app.command("show")
def show(ctx: typer.Context, name: str, database_url: DatabaseUrl = None) -> None:
    """Print a workflow as a Mermaid diagram, with live counts per step when a database
    is reachable."""
    settings = settings_for(ctx, database_url)
    registry = _registry(settings)
    workflow = registry.workflows.get(name)
    if workflow is None:
        fail(f"no workflow named {name!r}; known: {', '.join(sorted(registry.workflows))}", code=1)
    counts = _counts(settings, name) or {}
    here = {p: n for (v, p), n in counts.items() if v == workflow.version}
    print(mermaid(workflow, here))
    older = sum(n for (v, _), n in counts.items() if v != workflow.version)
    if older:
        # On stderr, so that the diagram can be piped on its own; after a blank line, so
        # that it never reads as part of the diagram's last line where both streams meet.
        err_console.print(
            f"\n{older} enrollment(s) still run older versions: journeyline workflows migrate "
            f"{name}"
        )


@workflows_app.command("migrate")
def migrate(
    ctx: typer.Context,
    name: str,
    apply: Annotated[bool, typer.Option("--apply", help="Move them (default: preview).")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Preview, then with --apply move, live enrollments from older versions of NAME to the
    current one. An enrollment lands on the step it would run next only if the current
    version has that same step; otherwise it is refused, with the reason, and stays put."""
    settings = settings_for(ctx, database_url)
    registry = _registry(settings)
    db = make_engine(settings.database_url)
    try:
        with transaction(db) as session:
            try:
                plan = plan_migration(session, registry, name)
            except KeyError as exc:
                fail(str(exc.args[0]), code=1)
            _print_plan(plan)
            if apply:
                moved = apply_migration(session, plan)
                console.print(f"[green]moved {moved} enrollment(s)[/]")
            else:
                console.print(
                    f"{plan.movable} would move; run again with --apply to move them"
                    + (" (the refused ones stay where they are)" if plan.refused else "")
                )
    except (OperationalError, ProgrammingError) as exc:
        fail(
            database_problem(exc, settings.database_url)
            or f"database {redact_url(settings.database_url)}: {exc.orig}"
        )
    finally:
        db.dispose()


def _print_plan(plan: MigrationPlan) -> None:
    """Where the enrollments of older versions are, in the steps' own words, and where each
    group would land (or why it is refused)."""
    table = Table(title=f"{plan.workflow}: to version {plan.target_version}")
    table.add_column("from version")
    table.add_column("where they are", overflow="fold")
    table.add_column("enrollments", justify="right")
    table.add_column("lands on", overflow="fold")
    for group in plan.groups:
        lands = "[yellow]refused[/]" if group.lands_on is None else escape(group.landing)
        table.add_row(group.version, escape(group.where), str(group.count), lands)
    console.print(table)
    for group in plan.groups:
        if group.lands_on is None:
            console.print(
                f"[yellow]refused[/] {group.count} of version {group.version}, "
                f"{escape(group.where)}: {escape(group.reason)}"
            )
