"""``journeyline report``: the funnel, email performance per step, goals and A/B results,
NPS, retention and revenue of the live database over a period (``engine.reports``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from engine.cli import DatabaseUrl, app, console, err_console, fail, friendly_errors, settings_for
from engine.errors import ValidationError, WorkflowDefinitionError, WorkflowImportError


@app.command("report")
def report_command(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Start of the period: an age before now (30d, 6h, 90m) or an ISO date or "
            "time, UTC unless it says otherwise. Default: the beginning.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="End of the period, excluded, written as --since is; a date alone means the "
            "end of that day. Default: now.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (as GET /v1/reports).")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML page with charts here.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Report on the live database: funnel, emails per step, goals and A/B, NPS, retention,
    revenue."""
    from engine.db import make_engine
    from engine.registry import load_registry
    from engine.reports import Period, build_report, html_report, print_report, reading

    now = datetime.now(UTC)
    try:
        period = Period.parse(since, until, now=now)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.field or 'since'}") from None
    settings = settings_for(ctx, database_url)
    try:  # the journey's stages in order, and which workflows have goals
        registry = load_registry(settings.workflows, templates_dir=settings.templates_dir)
    except (WorkflowImportError, WorkflowDefinitionError) as exc:
        fail(f"workflows {settings.workflows!r} did not load: {exc}")
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), reading(db) as session:
            report = build_report(
                session, registry, since=period.since, until=period.until, now=now
            )
    finally:
        db.dispose()
    if as_json:
        sys.stdout.write(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    else:
        print_report(report, console)
    if html is not None:
        try:
            html.write_text(html_report(report), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror or exc}")
        # With --json on stdout, the line goes to stderr so stdout stays JSON.
        (err_console if as_json else console).print(f"HTML report: {html}", highlight=False)
