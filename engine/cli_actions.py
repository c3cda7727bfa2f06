"""``journeyline actions``: list actions (what holds a pending one, and until when), and
``actions retry``: put failed ones back for a fresh attempt, never a second send."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from engine.broker import broker_errors
from engine.cli import (
    EXIT_NOT_ENQUEUED,
    EXIT_NOT_FOUND,
    BrokerUrl,
    DatabaseUrl,
    app,
    broker_problem,
    console,
    err_console,
    friendly_errors,
    read_rows,
    redact_url,
    settings_for,
)
from engine.hold_notes import hold_note
from engine.models import Action, ActionStatus, Contact

actions_app = typer.Typer(help="List actions, or retry failed ones (`actions retry`).")
app.add_typer(actions_app, name="actions")


@actions_app.callback(invoke_without_command=True)
def actions(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed and unknown ones: the dead letters.")
    ] = False,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="List at most this many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List actions, newest first; pending ones say what holds them, and until when."""
    if ctx.invoked_subcommand is not None:
        return

    known = [s.value for s in ActionStatus]
    if status is not None and status not in known:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(known)}", param_hint="--status"
        )
    settings = settings_for(ctx, database_url)
    wanted: list[ColumnElement[bool]] = []
    if failed:
        wanted.append(col(Action.status).in_([ActionStatus.FAILED, ActionStatus.UNKNOWN]))
    if status is not None:
        wanted.append(col(Action.status) == status)
    query = (
        select(Action, Contact.email)
        .join(Contact, col(Contact.id) == col(Action.contact_id))
        .where(*wanted)
        .order_by(col(Action.updated_at).desc(), col(Action.id).desc())
        .limit(limit)
    )
    rows = read_rows(settings, query)
    total = len(rows)
    if total == limit:  # a full page: there may be more
        total = read_rows(settings, select(func.count()).select_from(Action).where(*wanted))[0]
    now = datetime.now(UTC)
    title = "Failed and unknown actions" if failed else "Actions"
    table = Table(title=f"{title} ({total})")
    if total > len(rows):
        table.title = f"{title} ({len(rows)} of {total})"
        table.caption = f"the newest {len(rows)} of {total}: --limit {total} lists them all"
    columns = ("id", "contact", "workflow/step", "status", "attempts", "error", "note", "updated")
    for name in columns:
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
            escape(action_note(action, now=now)),
            f"{action.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def action_note(action: Action, *, now: datetime) -> str:
    """What an operator asks of an action beyond its status: for a pending one what holds
    it and until when (the guard rail that deferred it, as ``journeyline contact`` says it,
    or its next attempt after an error); for any, the retries an operator asked for."""
    notes: list[str] = []
    if action.status == ActionStatus.PENDING:
        held = hold_note(action, now=now)
        if held is not None:
            notes.append(held)
        elif action.next_attempt_at > now:
            notes.append(f"next attempt at {action.next_attempt_at:%Y-%m-%d %H:%M} UTC")
        elif action.lease_until is not None and action.lease_until <= now:
            notes.append("due: the next scheduler pass hands it out")
    retries = action.reason.get("retries") or []
    if retries:
        last_retry = datetime.fromisoformat(retries[-1]["at"])
        times = "once" if len(retries) == 1 else f"{len(retries)} times"
        notes.append(
            f"retried {times}, last at {last_retry:%Y-%m-%d %H:%M} UTC "
            f"(was {retries[-1]['status']})"
        )
    return "; ".join(notes)


def parse_since(text: str, *, now: datetime) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age before
    ``now`` such as ``90m``, ``6h`` or ``2d``."""
    age = re.fullmatch(r"(\d+)\s*([mhd])", text.strip())
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
        return now - timedelta(**{unit: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO date or time nor an age like 6h or 2d",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@actions_app.command("retry")
def actions_retry(
    ctx: typer.Context,
    ids: Annotated[
        list[int] | None, typer.Argument(help="Ids of failed actions (as `actions` lists).")
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every failed action (see --kind, --since).")
    ] = False,
    kind: Annotated[
        str | None, typer.Option("--kind", help="With --failed: only this kind (email, ...).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --failed: only failed since (2024-06-01, 6h, 2d)."),
    ] = None,
    unknown_ok: Annotated[
        bool,
        typer.Option(
            "--unknown-ok",
            help="Also retry the named actions in status unknown, which the provider may "
            "already have accepted (a second email is possible).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Send failed actions again after their cause is fixed: back to pending, attempts from
    0, same idempotency key, the retry noted on the row. Sent and skipped ones never."""
    from engine.actions import retry_actions
    from engine.db import transaction
    from engine.executor import Effects
    from engine.runtime import Runtime

    if not ids and not failed:
        raise typer.BadParameter("name action ids, or pass --failed", param_hint="IDS")
    if (kind is not None or since is not None) and not failed:
        raise typer.BadParameter("--kind and --since select among --failed", param_hint="--kind")
    settings = settings_for(ctx, database_url, broker_url)
    with friendly_errors(settings), Runtime(settings) as runtime:
        now = runtime.clock.now()
        after = parse_since(since, now=now) if since is not None else None
        with transaction(runtime.db) as session:
            done = retry_actions(
                session,
                ids=ids or [],
                failed=failed,
                kind=kind,
                since=after,
                unknown_ok=unknown_ok,
                now=now,
                lease=runtime.lease,
            )
        for action_id, why in done.refused.items():
            err_console.print(
                f"[yellow]not retried:[/] action {action_id}: {escape(why)}", highlight=False
            )
        for action_id in done.was_unknown:
            err_console.print(
                f"[yellow]warning:[/] action {action_id} was unknown: the provider may already "
                "have accepted it, so its contact may get it twice",
                highlight=False,
            )
        retried = done.ids
        if not retried:
            console.print("no action retried" + ("" if ids else ": none failed"))
            raise typer.Exit(EXIT_NOT_FOUND if done.refused else 0)
        console.print(
            f"{len(retried)} action(s) back to pending for a fresh attempt: "
            + ", ".join(map(str, retried)),
            highlight=False,
            soft_wrap=True,
        )
        try:
            runtime.dispatch(Effects(actions=done.marketing, transactional=done.transactional))
        except broker_errors() as exc:
            err_console.print(
                f"[yellow]warning:[/] {escape(broker_problem(exc, settings.broker_url))}: "
                "they wait for the sweeper, which hands them out once their lease ends at "
                f"{now + runtime.lease:%Y-%m-%d %H:%M:%S} UTC and the broker answers",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_NOT_ENQUEUED) from None
        if runtime.in_process:
            runtime.drain()  # stub://: nobody else will run the jobs
            with Session(runtime.db) as session:
                statuses = session.exec(
                    select(Action.status).where(col(Action.id).in_(retried))
                ).all()
            outcome = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
            console.print(f"performed in this process: {outcome}", highlight=False)
        else:
            console.print(
                f"handed to the workers on {redact_url(settings.broker_url)}", highlight=False
            )
    if done.refused:
        raise typer.Exit(EXIT_NOT_FOUND)
