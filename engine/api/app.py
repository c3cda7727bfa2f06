"""The application factory: ``create_app(runtime)`` builds the HTTP service around a runtime.

Routes are grouped by concept (``events``, ``contacts``, ``health``, ``metrics``); errors are
mapped to one JSON shape in ``errors``; API keys are checked in ``auth``. The app does not own
the runtime: whoever built it starts its worker (``stub://``) and closes it.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api import contacts, events, health, metrics, webhooks
from engine.api.auth import VerifiedKeys
from engine.api.errors import error_response, install_error_handlers
from engine.inbound_generic import load_sources
from engine.runtime import Runtime

MIB = 1024 * 1024

DESCRIPTION = """\
Journeyline's HTTP API: send events in, look contacts up with their timeline, erase them.

Authenticate with an API key from `journeyline keys create NAME --scope ...`, sent as
`Authorization: Bearer jl_<prefix>_<secret>`. Scopes: `events:write`, `contacts:read`,
`contacts:write`. Errors always read `{"error": {"field": ..., "message": ...}}`, with
`problems` listing every field at fault when there are several.
"""


class ApiSettings(BaseSettings):
    """Settings of the HTTP service, from ``JOURNEYLINE_API_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="JOURNEYLINE_API_", env_file=".env", extra="ignore"
    )

    max_body_bytes: int = Field(
        default=MIB, ge=1, description="Larger request bodies are refused with 413."
    )
    public_url: str | None = Field(
        default=None,
        description="The service's public base URL (https://jl.example.com), when a proxy "
        "stands in front: HubSpot signs the URL it called, not the one we see.",
    )


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413: at once when Content-Length says
    so, otherwise as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if too_large:
                await self._refuse()(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"

    def _refuse(self) -> ASGIApp:
        return error_response(413, self._message(), field="body")


def create_app(runtime: Runtime, *, settings: ApiSettings | None = None) -> FastAPI:
    """The HTTP service for ``runtime``."""
    settings = settings or ApiSettings()
    app = FastAPI(
        title="Journeyline",
        summary="Lead nurturing and customer lifecycle automation.",
        description=DESCRIPTION,
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.api_settings = settings
    app.state.verified_keys = VerifiedKeys()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(metrics.DatabaseCollector(runtime.db))
    app.state.metrics_registry = registry
    # Declared generic webhook sources, validated now so a bad declaration fails at start.
    app.state.webhook_sources = load_sources(
        runtime.settings.inbound_sources, workflows=runtime.settings.workflows
    )
    app.state.hubspot_stage_map = webhooks.hubspot_stage_map(runtime)
    install_error_handlers(app)
    for router in (
        events.router,
        contacts.router,
        health.router,
        metrics.router,
        webhooks.router,
    ):
        app.include_router(router)
    # The last added runs first: time everything, including refusals of oversized bodies.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.RequestMetrics, registry=registry)
    return app
