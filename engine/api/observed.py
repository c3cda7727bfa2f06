"""A middleware base that sees each HTTP request once it is answered: its method, its route
template (never the raw path, which holds email addresses), its status and how long it took.
The metrics (``metrics.RequestMetrics``) and the access log (``access_log.AccessLog``) are
both this, each doing its own thing with what it sees."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ObservedRequests(ABC):
    """Calls ``observe`` once per HTTP request, after it is answered (or failed: status
    500). A path no route matched is ``unmatched``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            # The router leaves the matched route in the scope: its template, not the path.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.observe(scope.get("method", ""), route, status, time.perf_counter() - started)

    @abstractmethod
    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """What to do with one answered request."""
