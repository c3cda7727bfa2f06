"""``GET /v1/reports``: the report ``journeyline report --json`` prints, over a period;
``GET /v1/reports.html``: the same as a page with charts, the dashboard. Both need the
``reports:read`` scope.

``since`` and ``until`` take what the CLI's options take: an age before now (``30d``,
``6h``, ``90m``) or an ISO date or time, UTC unless it says otherwise (a date alone as
``until``: the end of that day). A value that is neither is 422 naming the parameter.

Both are business data: never stored by a cache on the way (``Cache-Control: no-store``).
The page is also never framed by another site and runs no script (it has none; its content
is escaped, and its Content-Security-Policy allows only its own inline styles).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse

from engine.api.auth import AuthenticatedRoute, require
from engine.api.deps import RuntimeDep
from engine.api.errors import ERROR_RESPONSES
from engine.reports import Period, Report, build_report, html_report, reading
from engine.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["reports"], route_class=AuthenticatedRoute)

SCOPE = "reports:read"
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: ERROR_RESPONSES[status] for status in (401, 403, 422)
}

Since = Annotated[
    str | None,
    Query(
        description="Start of the period (included): an age before now (30d, 6h, 90m) or an "
        "ISO date or time, UTC unless it says otherwise. Default: the beginning.",
        examples=["30d"],
    ),
]
Until = Annotated[
    str | None,
    Query(
        description="End of the period (excluded), written as since is; a date alone means "
        "the end of that day. Default: now.",
        examples=["2026-06-30"],
    ),
]


NOT_STORED = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NOT_STORED,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
}


def _report(runtime: Runtime, since: str | None, until: str | None) -> Report:
    now = runtime.clock.now()
    period = Period.parse(since, until, now=now)  # a bad value: ValidationError, 422
    with reading(runtime.db) as session:
        return build_report(
            session, runtime.registry, since=period.since, until=period.until, now=now
        )


@router.get(
    "/reports",
    summary="Funnel, email performance, goals and A/B, NPS, retention and revenue",
    description="Computed from the live tables over the period; each section's "
    "`computed_from` says from what. The same JSON as `journeyline report --json`.",
    responses=RESPONSES,
    dependencies=[Depends(require(SCOPE))],
)
def get_report(
    runtime: RuntimeDep, response: Response, since: Since = None, until: Until = None
) -> Report:
    response.headers.update(NOT_STORED)
    return _report(runtime, since, until)


@router.get(
    "/reports.html",
    summary="The report as an HTML page with charts (the dashboard)",
    response_class=HTMLResponse,
    responses={**RESPONSES, 200: {"content": {"text/html": {}}, "description": "The page."}},
    dependencies=[Depends(require(SCOPE))],
)
def get_report_page(runtime: RuntimeDep, since: Since = None, until: Until = None) -> HTMLResponse:
    return HTMLResponse(html_report(_report(runtime, since, until)), headers=PAGE_HEADERS)
