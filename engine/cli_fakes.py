"""``journeyline fake sendgrid|hubspot``: the local fake providers as standalone servers.

For trying the connectors by hand or from another language's tests: the banner prints the
``export`` lines that point the connector at the fake, with the credential it accepts
(``JOURNEYLINE_SENDGRID_HOST`` and ``JOURNEYLINE_SENDGRID_API_KEY``,
``JOURNEYLINE_HUBSPOT_BASE_URL`` and ``JOURNEYLINE_HUBSPOT_TOKEN``). Every request is logged
to the console as it is recorded.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Annotated

import typer

from connectors.fakes import FakeHubSpot, FakeSendGrid
from engine.cli import app, console, fail
from engine.settings import Settings, env_var

fake_app = typer.Typer(
    help="Run the fake SendGrid or HubSpot HTTP server (for local trials and tests).",
    no_args_is_help=True,
)
app.add_typer(fake_app, name="fake")

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")]


def exports(settings: Mapping[str, str]) -> list[str]:
    """``export`` lines setting these ``Settings`` fields, ready to paste into a shell."""
    unknown = set(settings) - set(Settings.model_fields)
    assert not unknown, f"not settings: {sorted(unknown)}"  # the names must stay real
    return [f"export {env_var(field)}={shlex.quote(value)}" for field, value in settings.items()]


def _serve(
    fake: FakeSendGrid | FakeHubSpot, what: str, credential: str, settings: Mapping[str, str]
) -> None:
    seen = 0

    def log_new() -> None:
        nonlocal seen
        requests = fake.requests
        for request in requests[seen:]:
            console.print(f"{request.method} {request.path} -> {request.status}")
        seen = len(requests)

    try:  # Ctrl-C (SIGINT) may come at any point from here on: always a clean stop
        console.print(
            f"fake {what} listening on [bold]{fake.url}[/] ({credential})", soft_wrap=True
        )
        console.print("point the connector at it:")
        for line in exports(settings):
            console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
        console.print("Ctrl-C to stop")
        while True:
            log_new()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        fake.close()
        log_new()  # what came in since the last look


def _start(fake: FakeSendGrid | FakeHubSpot, host: str, port: int) -> None:
    """Listen on ``host:port``, or end in one line saying why not (a port in use)."""
    try:
        fake.start(host=host, port=port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fail(f"cannot listen on {host}:{port}: {reason}; choose another --port (0: any free port)")


@fake_app.command("sendgrid")
def fake_sendgrid(
    host: Host = "127.0.0.1",
    port: Port = 8025,
    api_key: Annotated[str, typer.Option(help="The API key it accepts.")] = "SG.fake-key",
) -> None:
    """A fake SendGrid v3 Mail Send API: validates, records, answers 202/400/401/413/429."""
    fake = FakeSendGrid(api_key=api_key)
    _start(fake, host, port)
    connector = {"email_connector": "sendgrid", "sendgrid_host": fake.url}
    _serve(fake, "SendGrid", f"API key {api_key}", {**connector, "sendgrid_api_key": api_key})


@fake_app.command("hubspot")
def fake_hubspot(
    host: Host = "127.0.0.1",
    port: Port = 8026,
    token: Annotated[str, typer.Option(help="The private app token it accepts.")] = (
        "pat-fake-token"
    ),
    max_per_interval: Annotated[
        int, typer.Option(min=0, help="Requests per 10 s before 429 (0: no limit).")
    ] = 100,
) -> None:
    """A fake HubSpot CRM API: contacts, batch upsert, tasks and notes, 10-second rate windows."""
    fake = FakeHubSpot(token=token, max_per_interval=max_per_interval or None)
    _start(fake, host, port)
    connector = {"crm_connector": "hubspot", "hubspot_base_url": fake.url}
    _serve(fake, "HubSpot", f"token {token}", {**connector, "hubspot_token": token})
