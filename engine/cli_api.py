"""``journeyline serve`` (the HTTP service) and ``journeyline keys`` (its API keys)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from engine.api_keys import SCOPES, create_key, list_keys, revoke
from engine.cli import (
    BrokerUrl,
    DatabaseUrl,
    app,
    console,
    err_console,
    friendly_errors,
    load_settings,
    settings_for,
)
from engine.clock import SystemClock
from engine.db import make_engine, transaction
from engine.runtime import Runtime

log = logging.getLogger("engine.cli")

keys_app = typer.Typer(
    help="Create, list and revoke API keys of the HTTP API.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


class SchedulerThread:
    """Ticks the scheduler every ``interval_s`` in a thread, for ``serve`` on ``stub://``
    (where nobody else would wake waiting enrollments or sweep stuck rows)."""

    def __init__(self, runtime: Runtime, *, interval_s: float) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journeyline-scheduler", daemon=True)

    def _run(self) -> None:
        failing: str | None = None  # what the failing passes raise, said once
        while not self._stop.is_set():
            try:
                self.runtime.tick()
            except Exception as exc:  # a bad tick must not end the loop; the next one retries
                said = f"{type(exc).__name__}: {exc}"
                if failing is None:
                    log.exception("scheduler passes failing (retried every %g s)", self.interval_s)
                elif said != failing:
                    log.error("scheduler passes failing now with %s", said)
                failing = said
            else:
                if failing is not None:
                    log.warning("scheduler passes work again")
                failing = None
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _stop_signals_end_serving() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGINT / SIGTERM, then raises the same signal again
    for the handler that was installed before it. Make that handler a no-op, so the worker
    and scheduler threads are stopped and the process exits 0 (as `docker stop` expects)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in stop_signals}
    for sig in stop_signals:
        signal.signal(sig, lambda signum, frame: None)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Run the HTTP API (docs at /docs). With stub:// the jobs and the scheduler run here too."""
    import uvicorn

    from engine.api import ApiSettings, access_log, create_app

    settings = settings_for(ctx, database_url, broker_url)
    api_settings = load_settings(ApiSettings)
    log.setLevel(settings.log_level.upper())
    access_log.log.setLevel(settings.log_level.upper())
    with friendly_errors(settings), Runtime(settings) as runtime:
        scheduler: SchedulerThread | None = None
        if runtime.in_process:
            runtime.start()
            scheduler = SchedulerThread(runtime, interval_s=settings.scheduler_interval_seconds)
            scheduler.start()
        config = uvicorn.Config(
            create_app(runtime, settings=api_settings),
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            # Its lines hold the path, and so the address of a contact being erased: the
            # app logs each request itself, by route template (engine/api/access_log.py).
            access_log=False,
            ws="none",
        )
        try:
            with _stop_signals_end_serving():
                uvicorn.Server(config).run()
        finally:
            if scheduler is not None:
                scheduler.stop()


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses the key, like 'website'.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help=f"Repeat for each: {', '.join(SCOPES)}."),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    settings = settings_for(ctx, database_url)
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), transaction(db) as session:
            row, plaintext = create_key(session, name, scope, SystemClock().now())
    finally:
        db.dispose()
    console.print(plaintext, highlight=False, soft_wrap=True)
    err_console.print(
        f"key {row.prefix} ({escape(row.name)}) with scopes {', '.join(row.scopes)}. "
        "Store it now: it is not shown again.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Every key: prefix, name, scopes, when it was created, last used and revoked."""
    settings = settings_for(ctx, database_url)
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), Session(db) as session:
            rows = list_keys(session)
    finally:
        db.dispose()
    table = Table(title=f"API keys ({len(rows)})")
    for column in ("prefix", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=column in ("prefix", "created"))

    def when(value: object) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"

    for row in rows:
        table.add_row(
            row.prefix,
            escape(row.name),
            ", ".join(row.scopes),
            when(row.created_at),
            when(row.last_used_at),
            f"[red]{when(row.revoked_at)}[/]" if row.revoked_at else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The key's prefix (as in `keys list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    settings = settings_for(ctx, database_url)
    if prefix.startswith("jl_"):  # the whole key was pasted: only its prefix matters
        prefix = prefix.split("_", 2)[1]
    db = make_engine(settings.database_url)
    try:
        with friendly_errors(settings), transaction(db) as session:
            row = revoke(session, prefix, SystemClock().now())
    finally:
        db.dispose()
    console.print(
        f"key {row.prefix} ({escape(row.name)}) revoked at {row.revoked_at:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
