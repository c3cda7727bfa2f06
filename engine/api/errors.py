"""Errors at the HTTP boundary: one JSON shape, and the handlers that map our errors to it.

Every error answer reads ``{"error": {"field": ..., "message": ..., "problems": [...]}}``:
``field`` names the input at fault (``events[3].email``) or is null, ``problems`` lists every
fault when there were several (request validation reports them all at once).

    engine ValidationError           422   field and message
    RequestValidationError           422   every field path and why
    InvalidApiKey                    401   missing, malformed, unknown or revoked key
    MissingScope                     403   the key may not do this
    NotFound                         404
    InvalidTransition / Conflict     409
    BadBody                          400   the body cannot be parsed (nested too deeply)
    FastAPI's body parse error       400   nested too deeply (as BadBody); 422 "not valid
                                           JSON" when json.loads refused it otherwise
    NotJson                          422   the body says it is not JSON (its Content-Type)
    HTTPException (404, 413, ...)    its status, its detail as the message
    database unavailable             503   Retry-After; refused or dropped connections, no
                                           free pooled connection, a lock conflict
    database schema behind the code  503   Retry-After; "... run journeyline db upgrade"
    anything else                    500   a short message, the traceback logged once

Database trouble is the database's state, not the request's fault, and is logged one line at
a time (at most one a minute per kind, counting the answers in between), never a traceback.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.api_keys import InvalidApiKey, MissingScope
from engine.db_errors import (
    SCHEMA_BEHIND_MESSAGE,
    database_unavailable,
    describe_database_error,
    schema_behind,
)
from engine.errors import InvalidTransition, JourneylineError, ValidationError

log = logging.getLogger(__name__)

UNION_TAG_MARK = "~"
"""Tags of discriminated unions start with this; they are dropped from field paths."""


class Problem(BaseModel):
    field: str | None = Field(description="The input at fault, like events[3].email.")
    message: str


class ErrorDetail(BaseModel):
    field: str | None = Field(
        default=None, description="The (first) input at fault, or null.", examples=["email"]
    )
    message: str = Field(examples=["email 'x' is not valid: ..."])
    problems: list[Problem] | None = Field(
        default=None, description="Every problem (on every 422: at least one)."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Conflict(JourneylineError):
    """The request contradicts the stored state (HTTP 409)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(JourneylineError):
    """What the request names does not exist (HTTP 404)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BadBody(HTTPException):
    """The body cannot be parsed at all (HTTP 400, naming ``body``)."""

    field = "body"

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotJson(HTTPException):
    """The body says it is not JSON (HTTP 422, naming ``content-type``, as every other input
    the request gets wrong; 415 would be the more usual status)."""

    field = "content-type"

    def __init__(self, content_type: str) -> None:
        super().__init__(
            422,
            f"Content-Type {content_type!r} is not JSON: send the body as JSON, with the "
            "header Content-Type: application/json (or none)",
        )


def declares_json(content_type: str) -> bool:
    """Whether a Content-Type is JSON as FastAPI reads it: ``application/json`` or
    ``application/<anything>+json``, any parameters (``charset``), any case."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class Invalid(JourneylineError):
    """Several inputs were rejected at once (HTTP 422), each named."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first.field}: {first.message}{more}")


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    problems: Sequence[Problem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    detail = ErrorDetail(
        field=field, message=message, problems=list(problems) if problems else None
    )
    body = ErrorResponse(error=detail).model_dump(exclude_none=True)
    body["error"].setdefault("field", None)
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: Sequence[int | str]) -> str:
    """``("body", "events", 3, "email")`` -> ``events[3].email``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header", "cookie"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(UNION_TAG_MARK):
            continue
        else:
            path += f".{part}" if path else part
    return path or str(loc[0] if loc else "body")


def _problem_from_pydantic(error: dict[str, Any]) -> Problem:
    loc = error.get("loc", ())
    message = str(error.get("msg", "is invalid"))
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error")
        return Problem(field="body", message=f"not valid JSON: {detail or message}")
    return Problem(field=field_path(loc), message=message)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    # Every 422 has ``problems``, one here: a client reads them the same way whichever
    # check refused its request (a schema's or a value's).
    problem = Problem(field=exc.field, message=str(exc))
    return error_response(422, str(exc), field=exc.field, problems=[problem])


async def _on_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    first = exc.problems[0]
    return error_response(422, str(exc), field=first.field, problems=exc.problems)


MoreProblems = Callable[[Request, Any], list[Problem]]

VALUE_CHECKS: dict[str, MoreProblems] = {}
"""Per route path: the checks of the values in a body whose structure FastAPI refused, run
on its well-formed parts (``engine/api/events.py`` registers the track API's), so one
answer names every problem, not the structure's first and the values' on the next try."""

_INDEXED = re.compile(r"^[a-z_]+\[(\d+)\]")


def _in_order(problems: list[Problem]) -> list[Problem]:
    """By the position of the item each names (``events[3].email``), body-wide ones first;
    in the order found within an item."""

    def position(problem: Problem) -> int:
        found = _INDEXED.match(problem.field or "")
        return int(found.group(1)) if found else -1

    return sorted(problems, key=position)


async def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem_from_pydantic(e) for e in exc.errors()]
    route = getattr(request.scope.get("route"), "path", None)
    values = VALUE_CHECKS.get(route) if isinstance(route, str) else None
    if values is not None and problems:
        problems = _in_order([*problems, *values(request, exc.body)])
    if not problems:
        return error_response(422, "the request is invalid")
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return error_response(
        422, f"{first.field}: {first.message}{more}", field=first.field, problems=problems
    )


async def _on_invalid_key(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        401, str(exc), field="authorization", headers={"WWW-Authenticate": "Bearer"}
    )


async def _on_missing_scope(request: Request, exc: Exception) -> JSONResponse:
    return error_response(403, str(exc), field="authorization")


async def _on_conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc), field=getattr(exc, "field", None))


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc), field=getattr(exc, "field", None))


NESTED_TOO_DEEPLY = "body is nested too deeply to parse (JSON arrays or objects)"


def unparsable_body(exc: HTTPException) -> JSONResponse | None:
    """The answer to FastAPI's own "There was an error parsing the body" (a 400 it raises
    from whatever ``json.loads`` raised but a syntax error), saying why as the webhooks
    do: 400 for a body nested too deeply, 422 "not valid JSON" for one ``json.loads``
    refuses otherwise (an integer of more than 4,300 digits); None for any other 400."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return error_response(400, NESTED_TOO_DEEPLY, field="body")
    if isinstance(cause, ValueError):
        # Python's own words end in advice for its programmers ("use
        # sys.set_int_max_str_digits() to increase the limit"), not for the client.
        said = str(cause).split("; use sys.set_int_max_str_digits()")[0]
        problem = Problem(field="body", message=f"not valid JSON: {said}")
        return error_response(422, f"body: {problem.message}", field="body", problems=[problem])
    return None


def route_methods(routes: Iterable[BaseRoute]) -> list[tuple[re.Pattern[str], set[str]]]:
    """Each route's path pattern and methods, for ``allowed_methods`` (``create_app`` keeps
    them in ``app.state.route_methods``: FastAPI nests included routers in its own wrappers)."""
    return [
        (route.path_regex, set(route.methods or ()))
        for route in routes
        if isinstance(route, Route) and route.methods
    ]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path, in a fixed order.

    Starlette answers a method no route takes with the ``Allow`` of the first route whose
    path matched, so ``PATCH /v1/contacts/{email}`` said ``Allow: PUT`` alone, though GET
    and DELETE are served there too."""
    known = getattr(request.app.state, "route_methods", None) or []
    found: set[str] = set()
    for pattern, methods in known:
        if pattern.match(request.url.path):
            found |= methods
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(found, key=lambda m: (order.index(m) if m in order else len(order), m))


def _method_not_allowed(request: Request, exc: HTTPException) -> JSONResponse:
    allowed = allowed_methods(request)
    if not allowed:  # nothing else to say than what Starlette said
        allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m]
    listed = " or ".join([", ".join(allowed[:-1]), allowed[-1]] if len(allowed) > 1 else allowed)
    message = f"method {request.method} is not allowed at this path: use {listed}"
    return error_response(405, message, headers={"Allow": ", ".join(allowed)})


NO_ROUTE_MESSAGE = "no endpoint at this path: see the OpenAPI document at /openapi.json"


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    unparsable = unparsable_body(exc)
    if unparsable is not None:
        return unparsable
    if exc.status_code == 405:
        return _method_not_allowed(request, exc)
    if exc.status_code == 404 and request.scope.get("route") is None:
        path = request.url.path
        hint = NO_ROUTE_MESSAGE
        if len(path) > 1 and path.endswith("/"):
            hint += " (paths end without a slash: drop the trailing '/')"
        return error_response(404, hint)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(
        exc.status_code,
        message,
        field=getattr(exc, "field", None),
        headers=dict(exc.headers) if exc.headers else None,
    )


DATABASE_RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a 503 while the database cannot be reached."""
SCHEMA_RETRY_AFTER_SECONDS = 30
"""``Retry-After`` of a 503 while the schema is behind the code (a migration may be running)."""
UNAVAILABLE_MESSAGE = "the database is unavailable: try again shortly"
INTERNAL_MESSAGE = "internal error: it was logged"


class _Throttle:
    """Lets a recurring log line through at most once per ``every_seconds``, counting the
    occurrences it held back in between."""

    def __init__(self, every_seconds: float = 60.0) -> None:
        self.every_seconds = every_seconds
        self.last: float | None = None
        self.held = 0

    def due(self) -> int | None:
        """None to stay quiet; else how many were held back since the last line."""
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every_seconds:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held


class _ErrorLines:
    """An app's throttles of database trouble lines (each app its own, as its metrics)."""

    def __init__(self) -> None:
        self.unavailable = _Throttle()
        self.schema = _Throttle()


def _lines(scope: Scope) -> _ErrorLines:
    app = scope.get("app")
    lines = getattr(getattr(app, "state", None), "error_lines", None)
    return lines if isinstance(lines, _ErrorLines) else _ErrorLines()


def _where(scope: Scope) -> str:
    """``POST /v1/events``: the route template, never the path (it may hold an address)."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    return f"{scope.get('method', '')} {route}"


def _held(held: int) -> str:
    return f" ({held} more such answers since the last line)" if held else ""


def unexpected_error_response(scope: Scope, exc: Exception) -> JSONResponse:
    """The answer to an exception no other handler took: 503 when the database is the
    cause, else 500; the log says why."""
    lines = _lines(scope)
    if schema_behind(exc):
        held = lines.schema.due()
        if held is not None:
            log.error(
                "%s answered 503: the database schema is older than this version (%s): run "
                "journeyline db upgrade%s",
                _where(scope),
                describe_database_error(exc),
                _held(held),
            )
        retry = str(SCHEMA_RETRY_AFTER_SECONDS)
        return error_response(503, SCHEMA_BEHIND_MESSAGE, headers={"Retry-After": retry})
    if database_unavailable(exc):
        held = lines.unavailable.due()
        if held is not None:
            log.warning(
                "%s answered 503: the database is unavailable (%s)%s",
                _where(scope),
                describe_database_error(exc),
                _held(held),
            )
        retry = str(DATABASE_RETRY_AFTER_SECONDS)
        return error_response(503, UNAVAILABLE_MESSAGE, headers={"Retry-After": retry})
    log.error("%s answered 500: unexpected error", _where(scope), exc_info=exc)
    return error_response(500, INTERNAL_MESSAGE)


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(request.scope, exc)


class UnexpectedErrors:
    """Answers what no exception handler took with the JSON error shape (500, or 503 for
    the database), instead of Starlette's plain-text 500. Starlette's handler of last resort
    re-raises after answering, so the server would log the traceback a second time; this
    one does not. It sits inside the access log and the metrics, which so count the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception as exc:
            if started:  # too late for another answer: the server closes the connection
                raise
            await unexpected_error_response(scope, exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Map errors to the JSON shape. Call before adding other middleware: the last added
    runs first, and ``UnexpectedErrors`` must run inside the access log and the metrics."""
    app.state.error_lines = _ErrorLines()
    app.add_exception_handler(ValidationError, _on_validation_error)
    app.add_exception_handler(Invalid, _on_invalid)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(InvalidApiKey, _on_invalid_key)
    app.add_exception_handler(MissingScope, _on_missing_scope)
    app.add_exception_handler(InvalidTransition, _on_conflict)
    app.add_exception_handler(Conflict, _on_conflict)
    app.add_exception_handler(NotFound, _on_not_found)
    app.add_exception_handler(HTTPException, _on_http)
    for database_error in (DBAPIError, PoolTimeout, psycopg.Error):
        app.add_exception_handler(database_error, _on_database_error)
    app.add_middleware(UnexpectedErrors)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "No usable API key (missing, malformed, unknown or revoked); checked "
        "before the body is read.",
    },
    403: {"model": ErrorResponse, "description": "The API key lacks the scope."},
    422: {"model": ErrorResponse, "description": "Invalid input; every field at fault named."},
    503: {
        "model": ErrorResponse,
        "description": "The database cannot be reached, or its schema is older than this "
        "version; try again after Retry-After seconds.",
    },
}
"""The error answers every authenticated route may give, for the OpenAPI document."""

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "The body is nested too deeply to parse, or Content-Length is not a number.",
    },
    413: {"model": ErrorResponse, "description": "The body is larger than the limit."},
}
"""The further error answers of an authenticated route that reads a JSON body (added by
``auth.AuthenticatedRoute``)."""
