"""Prometheus metrics at ``/metrics``: what the database holds, and how the API is doing.

At each scrape the database is counted (events by status, actions by status, contacts by
stage), so every API process reports the same truth, whoever did the work. Request counts
and latencies are this process's own. Each app has its own registry: two apps in one
process (tests) never collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.models import Action, Contact, Event

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class DatabaseCollector(Collector):
    """Counts rows by status or stage when scraped."""

    def __init__(self, db: Engine) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "journeyline_database_up", "1 if the database answered this scrape's counts."
        )
        events = GaugeMetricFamily(
            "journeyline_events", "Events in the database, by status.", labels=["status"]
        )
        actions = GaugeMetricFamily(
            "journeyline_actions", "Actions in the database, by status.", labels=["status"]
        )
        contacts = GaugeMetricFamily(
            "journeyline_contacts", "Contacts in the database, by stage.", labels=["stage"]
        )
        try:
            with Session(self.db) as session:
                for family, column in (
                    (events, Event.status),
                    (actions, Action.status),
                    (contacts, Contact.stage),
                ):
                    counted = session.exec(select(column, func.count()).group_by(column)).all()
                    for label, count in counted:
                        family.add_metric([str(label)], count)
        except Exception as exc:
            log.warning("metrics: counting rows failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (up, events, actions, contacts)


class RequestMetrics:
    """Counts requests and times them, labelled by route template (never by raw path, which
    holds email addresses)."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "journeyline_http_requests",
            "HTTP requests answered, by method, route and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "journeyline_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route.",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - started)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
