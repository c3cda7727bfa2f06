"""``journeyline broadcast WORKFLOW``: start a workflow now for every contact in its audience."""

from __future__ import annotations

import time

import typer

from engine.cli import BrokerUrl, DatabaseUrl, app, console, friendly_errors, settings_for


@app.command("broadcast")
def broadcast_command(
    ctx: typer.Context,
    workflow: str = typer.Argument(help="Workflow to start for its whole segment or stage."),
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Enroll every contact in the workflow's audience now; first emails go out batched."""
    from engine.runtime import Runtime

    settings = settings_for(ctx, database_url, broker_url)
    with friendly_errors(settings), Runtime(settings) as runtime:
        started = time.perf_counter()
        result = runtime.broadcast(workflow)
        if runtime.in_process:
            runtime.drain()  # stub://: nobody else will run the jobs
        seconds = time.perf_counter() - started
    console.print(
        f"{result.workflow}: {result.matched} contacts matched, {result.enrolled} enrolled, "
        f"{result.skipped} already enrolled or barred by re-entry, {result.actions} emails "
        f"queued in {seconds:.1f} s",
        highlight=False,
    )
