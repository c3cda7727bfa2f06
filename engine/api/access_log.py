"""The access log: one line per request, naming the route template, never the path.

uvicorn's own access log writes the path as requested (``DELETE /v1/contacts/ana@example.com``)
and the client's address, so an erased contact's address would outlive the erasure in the
logs. ``journeyline serve`` turns it off; this middleware logs what an operator needs instead:
``DELETE /v1/contacts/{email} 204 3.1 ms`` (a path no route matched is ``unmatched``), with
``method``, ``route``, ``status`` and ``duration_ms`` on the record for structured handlers.
"""

from __future__ import annotations

import logging

from engine.api.observed import ObservedRequests

log = logging.getLogger(__name__)


class AccessLog(ObservedRequests):
    """Logs each HTTP request at INFO once it is answered (or failed: then status 500)."""

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        duration_ms = seconds * 1000
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
