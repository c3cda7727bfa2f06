"""``journeyline simulate``: run a synthetic population through the workflows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from engine.cli import app, console, fail
from engine.errors import WorkflowDefinitionError
from engine.simulation_report import html_report, print_results
from engine.simulator import (
    SHARD_CONTACTS,
    Profile,
    SimulationResult,
    load_workflows,
    simulate,
    usable_cpus,
)


@app.command("simulate")
def simulate_command(
    contacts: Annotated[int, typer.Option(min=1, help="Synthetic contacts.")] = 1000,
    days: Annotated[int, typer.Option(min=1, help="Days of virtual time.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same run.")] = 7,
    workflows: Annotated[
        str, typer.Option(help="Workflows module name or folder (a package with templates/).")
    ] = "workflows",
    profile: Annotated[
        Path | None, typer.Option(help="JSON behaviour profile (see engine.simulator.Profile).")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (shards of 5,000 contacts run in parallel); the result "
            "does not depend on it. Default: one per CPU this process may use.",
            show_default=False,
        ),
    ] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            help="Two workflows folders or modules to run on the same seed, side by side."
        ),
    ] = None,
) -> None:
    """Simulate contacts living through the journey; print the funnel, emails and goals."""
    try:
        behaviour = Profile.from_file(profile) if profile else Profile()
    except (OSError, ValueError, TypeError) as exc:
        fail(f"profile {profile}: {exc}")
    sources = list(compare) if compare else [workflows]
    results: list[SimulationResult] = []
    for source in sources:
        try:
            registry = load_workflows(source)
        except (WorkflowDefinitionError, FileNotFoundError, ModuleNotFoundError) as exc:
            fail(f"workflows {source}: {exc}")
        with Progress(
            TextColumn(f"simulating {source} (shard-days)"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("days", total=-(-contacts // SHARD_CONTACTS) * days)

            def advance(done: int, total: int, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            results.append(
                simulate(
                    registry,
                    contacts=contacts,
                    days=days,
                    seed=seed,
                    profile=behaviour,
                    label=str(source),
                    processes=processes or usable_cpus(),
                    on_progress=advance,
                )
            )
    print_results(results, console)
    if html is not None:
        html.write_text(html_report(results))
        console.print(f"HTML report: {html}")
