"""``journeyline simulate``: run a synthetic population through the workflows."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.cli import app, console, err_console, fail, settings_for
from engine.errors import WorkflowDefinitionError
from engine.registry import Registry
from engine.simulation_profile import Profile, ProfileError, sent_templates
from engine.simulation_report import html_report, print_results
from engine.simulation_results import SimulationResult
from engine.simulator import (
    MAX_CONTACTS,
    MAX_DAYS,
    defined_outside,
    load_workflows,
    same_workflows,
    shard_size,
    simulate,
    usable_cpus,
)

MAX_PROCESSES = 64
"""More worker processes than this is a typo: each is a process of its own, and a process
per shard of a few contacts is slower than one for all of them."""


@app.command("simulate")
def simulate_command(
    ctx: typer.Context,
    contacts: Annotated[
        int, typer.Option(min=1, max=MAX_CONTACTS, help="Synthetic contacts.")
    ] = 1000,
    days: Annotated[int, typer.Option(min=1, max=MAX_DAYS, help="Days of virtual time.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same run.")] = 7,
    workflows: Annotated[
        str | None,
        typer.Option(
            help="Workflows module name or folder (a package with templates/). "
            "Default: JOURNEYLINE_WORKFLOWS (workflows unless set).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="JSON behaviour profile (engine.simulation_profile.Profile)."),
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_PROCESSES,
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
    if compare and workflows is not None:
        fail("--compare A B runs the two it names: leave --workflows out, or give it as A or B")
    if html is not None:
        _writable(html)
    try:
        behaviour = Profile.from_file(profile) if profile else Profile()
    except OSError as exc:
        fail(f"profile {profile}: {exc.strerror or exc}")
    except ProfileError as exc:
        fail(f"profile {profile}: {exc}")
    registries: list[tuple[str, Registry]] = []
    if compare:
        for source in compare:
            registries.append((source, _load(source)))
    elif workflows is not None:
        registries.append((workflows, _load(workflows)))
    else:  # the configured module, as every other command loads it
        settings = settings_for(ctx)
        registries.append((settings.workflows, _load(settings.workflows, settings.templates_dir)))
    # Compared, a reaction is for the side whose workflows send its template (the new
    # variant's email): refused only when neither side sends it.
    sent_anywhere = set().union(*(sent_templates(r) for _, r in registries))
    for source, registry in registries:
        problems = behaviour.registry_problems(registry, sent_elsewhere=sent_anywhere)
        if problems:
            fail(
                f"profile {profile or '(default)'} for workflows {source}: {ProfileError(problems)}"
            )
    for source, registry in registries:
        if not registry.workflows:
            _warn(
                f"{source} defines no workflows (its WORKFLOWS is missing or empty): its "
                "contacts only move by the event rules, and no email goes out."
            )
        outside = defined_outside(registry, source) if Path(source).is_dir() else []
        if outside:
            _warn(
                f"{source} runs workflows defined outside it: {', '.join(outside)}. A copied "
                "folder should import its own modules relatively (from .common import later)."
            )
    if compare and same_workflows(registries[0][1], registries[1][1]):
        _warn(
            f"{compare[0]} and {compare[1]} hold the same workflows, each at the same version: "
            "unless their journey or rules differ, the two runs will be identical."
        )
    results: list[SimulationResult] = []
    for source, registry in registries:
        with Progress(
            TextColumn(f"simulating {escape(source)} (shard-days)"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            # Off a terminal it would print nothing but an empty line: ProgressLines instead.
            disable=not console.is_terminal,
        ) as progress:
            workers = processes or usable_cpus()
            shards = -(-contacts // shard_size(contacts, workers))
            task = progress.add_task("days", total=shards * days)
            # Off a terminal (a CI log, a pipe) the bar shows nothing: a line to stderr at
            # every tenth of the run instead, with the time left at the pace so far.
            logged = ProgressLines(str(source)) if not console.is_terminal else None

            def advance(
                done: int, total: int, task: TaskID = task, logged: ProgressLines | None = logged
            ) -> None:
                progress.update(task, completed=done, total=total)
                if logged is not None:
                    logged.tick(done, total)

            try:
                results.append(
                    simulate(
                        registry,
                        contacts=contacts,
                        days=days,
                        seed=seed,
                        profile=behaviour.for_registry(registry),
                        label=str(source),
                        processes=processes or usable_cpus(),
                        on_progress=advance,
                    )
                )
            except KeyboardInterrupt:
                progress.stop()
                done = int(progress.tasks[0].completed)
                err_console.print(
                    f"interrupted after {done}/{shards * days} shard-days of "
                    f"{escape(str(source))}; its temporary databases are removed",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(130) from None
    print_results(results, console)
    if html is not None:
        try:
            html.write_text(html_report(results), encoding="utf-8")  # as the page declares
        except OSError as exc:  # it could be written when the run started
            fail(f"--html {html}: {exc.strerror or exc}")
        console.print(f"HTML report: {escape(str(html))}", highlight=False)


def _writable(path: Path) -> None:
    """Refuse, before a run that may take minutes, a report path that cannot be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(f"--html {path}: is a folder; give a file name, such as {path / 'report.html'}")
    if not folder.is_dir():
        fail(f"--html {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"--html {path}: cannot be written here")


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def _load(source: str, templates_dir: Path | None = None) -> Registry:
    try:
        return load_workflows(source, templates_dir=templates_dir)
    except (WorkflowDefinitionError, FileNotFoundError, ModuleNotFoundError) as exc:
        fail(f"workflows {source}: {exc}")


class ProgressLines:
    """A progress line to stderr at every tenth of a run (done, elapsed, time left), once it
    has run ``QUIET_SECONDS``: a short run says nothing."""

    QUIET_SECONDS = 5.0

    def __init__(self, source: str) -> None:
        self.source = source
        self.started = time.monotonic()
        self.tenths = 0

    def tick(self, done: int, total: int) -> None:
        tenths = done * 10 // max(1, total)
        elapsed = time.monotonic() - self.started
        if tenths <= self.tenths or elapsed < self.QUIET_SECONDS:
            return
        self.tenths = tenths
        left = elapsed * (total - done) / done if done else 0.0
        err_console.print(
            f"simulating {escape(self.source)}: {done}/{total} shard-days "
            f"({done * 100 // max(1, total)}%), "
            f"{elapsed:.0f} s so far, about {left:.0f} s left",
            highlight=False,
            soft_wrap=True,  # one line in a CI log, however narrow its console
        )
