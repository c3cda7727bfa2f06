"""The access log: one line per request, naming the route template, never the path.

uvicorn's own access log writes the path as requested (``DELETE /v1/contacts/ana@example.com``)
and the client's address, so an erased contact's address would outlive the erasure in the
logs. ``journeyline serve`` turns it off; this middleware logs what an operator needs instead:
``DELETE /v1/contacts/{email} 204 3.1 ms`` (a path no route matched is ``unmatched``), with
``method``, ``route``, ``status`` and ``duration_ms`` on the record for structured handlers.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class AccessLog:
    """Logs each HTTP request at INFO once it is answered (or failed: then status 500)."""

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
            if log.isEnabledFor(logging.INFO):
                duration_ms = (time.perf_counter() - started) * 1000
                # The router leaves the matched route in the scope: its template, not the path.
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                method = scope.get("method", "")
                log.info(
                    "%s %s %s %.1f ms",
                    method,
                    route,
                    status,
                    duration_ms,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration_ms, 1),
                    },
                )
