"""The application factory: ``create_app(runtime)`` builds the HTTP service around a runtime.

Routes are grouped by concept (``events``, ``contacts``, ``reports``, ``health``, ``metrics``,
``webhooks``, ``unsubscribe``: the one-click links in marketing email, without an API key);
errors are mapped to one JSON shape in ``errors``; API keys are checked in ``auth``. The app
does not own the runtime: whoever built it starts its worker (``stub://``) and closes it.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api import contacts, events, health, metrics, reports, unsubscribe, webhooks
from engine.api.access_log import AccessLog
from engine.api.auth import RefusalLog, VerifiedKeys
from engine.api.errors import install_error_handlers, route_methods
from engine.inbound_generic import load_sources
from engine.runtime import Runtime

MIB = 1024 * 1024

DESCRIPTION = """\
Journeyline's HTTP API: send events in, look contacts up with their timeline, erase them.

Authenticate with an API key from `journeyline keys create NAME --scope ...`, sent as
`Authorization: Bearer jl_<prefix>_<secret>`. Scopes: `events:write`, `contacts:read`,
`contacts:write`, `reports:read`. Errors always read
`{"error": {"field": ..., "message": ...}}`, with `problems` listing every field at fault
when there are several. Send bodies as JSON (`Content-Type: application/json`, or none);
paths end without a slash.
"""


class ApiSettings(BaseSettings):
    """Settings of the HTTP service, from ``JOURNEYLINE_API_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="JOURNEYLINE_API_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    max_body_bytes: int = Field(
        default=MIB, ge=1, description="Larger request bodies are refused with 413."
    )
    public_url: str | None = Field(
        default=None,
        description="The service's public base URL (https://jl.example.com), when a proxy "
        "stands in front: HubSpot signs the URL it called, not the one we see.",
    )


class BodyTooLarge(HTTPException):
    """The request body is over the limit (413), named as the field at fault."""

    field = "body"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 when the body is first read: at
    once if Content-Length says so, otherwise as soon as the streamed body passes the limit.

    Nothing is refused before the route reads the body, so that an authenticated route answers
    a request without a usable key 401, whatever it sends (``auth.AuthenticatedRoute``)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        received = 0

        async def limited() -> Message:
            nonlocal received
            if declared is not None and received == 0:
                try:
                    too_large = int(declared) > self.max_bytes
                except ValueError:
                    raise HTTPException(400, "Content-Length is not a number") from None
                if too_large:
                    raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


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
        # Starlette would answer /v1/events/ with a 307 to an absolute URL built from the
        # Host header and the scheme it sees: behind a TLS proxy an http:// URL, which clients
        # follow without the Authorization header (or not at all). A 404 says what to do.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    app.state.api_settings = settings
    app.state.verified_keys = VerifiedKeys()
    app.state.refusal_log = RefusalLog()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(
        metrics.DatabaseCollector(
            runtime.db, clock=runtime.clock, stages=runtime.registry.journey.stage_names
        )
    )
    registry.register(metrics.BrokerCollector(runtime.broker))
    app.state.metrics_registry = registry
    # Declared generic webhook sources, validated now so a bad declaration fails at start.
    app.state.webhook_sources = load_sources(
        runtime.settings.inbound_sources,
        workflows=runtime.registry.module or runtime.settings.workflows,
    )
    app.state.hubspot_stage_map = webhooks.hubspot_stage_map(runtime)
    install_error_handlers(app)
    routers = (
        events.router,
        contacts.router,
        reports.router,
        health.router,
        metrics.router,
        webhooks.router,
        unsubscribe.router,
    )
    for router in routers:
        app.include_router(router)
    app.state.route_methods = route_methods(
        [*app.routes, *(route for router in routers for route in router.routes)]
    )
    # The last added runs first: time everything, including refusals of oversized bodies.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.RequestMetrics, registry=registry)
    app.add_middleware(AccessLog)
    return app
