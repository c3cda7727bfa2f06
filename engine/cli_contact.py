"""``journeyline contact``: one contact's stage, timeline and live enrollments; with
``--unsubscribe`` / ``--resubscribe``, its consent to marketing email."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from engine.cli import (
    BrokerUrl,
    DatabaseUrl,
    app,
    console,
    err_console,
    fail,
    friendly_errors,
    settings_for,
)
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.registry import Registry
    from engine.timeline import LiveEnrollment


DEFAULT_LIMIT = 200


@app.command()
def contact(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's email address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline as JSON.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show the newest N entries of the timeline.")
    ] = DEFAULT_LIMIT,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show the whole timeline, however long.")
    ] = False,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Show the entries before this cursor: the one a page of the timeline ends "
            "with (the API's next_before).",
        ),
    ] = None,
    unsubscribe: Annotated[
        bool,
        typer.Option(
            "--unsubscribe",
            help="Unsubscribe the contact from marketing email (ends their marketing "
            "workflows), instead of showing it.",
        ),
    ] = False,
    resubscribe: Annotated[
        bool,
        typer.Option("--resubscribe", help="Subscribe the contact to marketing email again."),
    ] = False,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Show a contact: stage, score, subscription and its timeline (the newest 200 entries
    unless --limit or --all; earlier pages with --before); or change its consent
    (--unsubscribe, --resubscribe)."""
    from engine.db import make_engine
    from engine.timeline import contact_timeline, name_steps

    settings = settings_for(ctx, database_url, broker_url)
    if unsubscribe or resubscribe:
        _change_subscription(settings, email, unsubscribe=unsubscribe, resubscribe=resubscribe)
        return
    unnamed = ""
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            timeline = contact_timeline(
                session, email, limit=None if show_all else limit, before=before
            )
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
    if timeline.more:
        partial = "; the oldest instant shown goes on there" if timeline.partial_instant else ""
        console.print(
            f"[dim]showing {len(timeline.entries)} entries of more; the earlier ones: "
            f"--before {timeline.next_before}, or --limit / --all{partial}[/]",
            highlight=False,
            soft_wrap=True,
        )
    if timeline.live:
        console.print(_live_table(timeline.live, now=datetime.now(UTC)))


def _change_subscription(
    settings: Settings, email: str, *, unsubscribe: bool, resubscribe: bool
) -> None:
    """Set the contact's consent as a SendGrid unsubscribe (or resubscribe) would, and say
    what changed."""
    from engine.models import SubscriptionStatus
    from engine.runtime import Runtime
    from engine.unsubscribe import change_subscription

    if unsubscribe and resubscribe:
        fail("--unsubscribe and --resubscribe contradict each other: give one")
    status = SubscriptionStatus.UNSUBSCRIBED if unsubscribe else SubscriptionStatus.SUBSCRIBED
    with friendly_errors(settings), Runtime(settings) as runtime:
        done = change_subscription(runtime, status, via="cli", email=email)
        if runtime.in_process:
            runtime.drain()  # stub://: nobody else will run what the unsubscribe triggers
    if done is None:
        err_console.print(f"no contact with email {escape(email)!r}")
        raise typer.Exit(1)
    console.print(escape(done.describe()), highlight=False)


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
