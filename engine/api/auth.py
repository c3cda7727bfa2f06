"""API keys on requests: ``Authorization: Bearer jl_<prefix>_<secret>``, checked per scope.

A route declares the scope it needs with ``Depends(require("events:write"))`` and is built by
``AuthenticatedRoute`` (its router's ``route_class``). No key, a malformed, unknown or revoked
one answers 401 saying which; a valid key without the scope answers 403.

The key is checked before the body is read. FastAPI reads and decodes a route's body before it
solves any dependency, so a dependency alone would let an unauthenticated caller learn the
schema from a 422 and make the server read and parse what it sends. ``AuthenticatedRoute``
therefore checks the scopes its ``require`` dependencies name first, and stores the key on the
request, where the dependency (kept for the OpenAPI document's ``security``) finds it.

A key verified by this process is trusted again for ``KEY_CACHE_SECONDS`` without reading
the database (a busy ingest client sends many requests a second with one key): a revocation
takes effect within that time, and a key without the scope is refused at once either way.

Every refusal is logged (logger ``engine.api.auth``, WARNING) with what an operator needs to
find its sender: the route template, the client's address (as uvicorn sees it: behind a
trusted proxy, the forwarded one), why, and the key by its prefix, the part
``journeyline keys list`` shows, never more of it (a malformed one by its length alone).
``401 POST /v1/events from 203.0.113.9: API key 787773f1 was revoked``. One client failing
the same way again and again is logged once a minute, with the count held back in between.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from engine.api.errors import BODY_RESPONSES, NotJson, declares_json
from engine.api_keys import (
    KEY_PREFIX,
    PREFIX_LENGTH,
    ApiKey,
    InvalidApiKey,
    MissingScope,
    hash_secret,
    verify,
)
from engine.db import transaction
from engine.runtime import Runtime

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `journeyline keys create`, as `Bearer jl_<prefix>_<secret>`.",
)


KEY_CACHE_SECONDS = 5.0
"""How long a key verified by this process is trusted without a database read."""


class VerifiedKeys:
    """Keys this process verified lately, by the SHA-256 of the whole presented key; each is
    forgotten ``ttl_s`` seconds (of ``clock``, monotonic) after it was read from the
    database."""

    def __init__(
        self, *, ttl_s: float = KEY_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, ApiKey]] = {}

    def get(self, presented: str) -> ApiKey | None:
        digest = hash_secret(presented)
        with self._lock:
            found = self._keys.get(digest)
            if found is None:
                return None
            if self.clock() >= found[0]:
                del self._keys[digest]
                return None
            return found[1]

    def put(self, presented: str, key: ApiKey) -> None:
        digest, expires = hash_secret(presented), self.clock() + self.ttl_s
        with self._lock:
            if len(self._keys) > 1_000:  # a bound against many distinct keys: start afresh
                self._keys.clear()
            self._keys[digest] = (expires, key)


ANY_PREFIX = re.compile(rf"\b[0-9a-f]{{{PREFIX_LENGTH}}}\b")
"""A key's prefix inside a reason (``API key 0badc0de is unknown``)."""

SAFE_PREFIX = re.compile(rf"[0-9a-f]{{{PREFIX_LENGTH}}}")
"""What a key's prefix is made of (``secrets.token_hex``): anything else is not logged."""


def shown_prefix(presented: str | None) -> str:
    """How a presented key may be named in a log: ``key 787773f1`` by its prefix when it has
    the shape of one, else only ``a malformed key (23 characters)``; never the secret."""
    if presented is None:
        return "no key"
    parts = presented.strip().split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_PREFIX and SAFE_PREFIX.fullmatch(parts[1]):
        return f"key {parts[1]}"
    return f"a malformed key ({len(presented)} characters)"


class RefusalLog:
    """Logs refused keys, at most one line per ``every_s`` seconds for each client and kind
    of refusal (the reason, whichever key it names), saying how many were held back since;
    remembers at most ``max_keys`` of them."""

    def __init__(
        self,
        *,
        every_s: float = 60.0,
        max_keys: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}

    def refused(self, request: Request, status: int, reason: str, presented: str | None) -> None:
        client = request.client.host if request.client is not None else "an unknown address"
        key = shown_prefix(presented)
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        # The reason names the key by its prefix, or says it is malformed or missing: the
        # client-facing message never holds more of the key than that.
        with self._lock:
            now = self.clock()
            # Per client and kind of refusal, whatever the key: a client trying a new
            # key on every request would otherwise write a line each time.
            which = (client, str(status), ANY_PREFIX.sub("…", reason))
            last = self._last.get(which)
            if last is not None and now - last[0] < self.every_s:
                self._last[which] = (last[0], last[1] + 1)
                return
            if len(self._last) >= self.max_keys:
                self._last.clear()
            held = last[1] if last is not None else 0
            self._last[which] = (now, 0)
        more = f" ({held} more refused from this client since the last line)" if held else ""
        log.warning(
            "%s %s %s from %s: %s%s",
            status,
            request.method,
            route,
            client,
            reason,
            more,
            extra={"client": client, "status": status, "api_key": key, "route": route},
        )


REFUSALS = RefusalLog()
"""The refusals of this process (the app's own, when ``create_app`` gave it one)."""


def _refusals(request: Request) -> RefusalLog:
    found = getattr(request.app.state, "refusal_log", None)
    return found if isinstance(found, RefusalLog) else REFUSALS


VERIFIED_KEY = "journeyline.api_key"
"""The request scope's entry for the key ``AuthenticatedRoute`` verified."""


async def authenticate(request: Request, scopes: Sequence[str]) -> ApiKey:
    """The request's key, if it is usable and holds every one of ``scopes``; else raises
    ``InvalidApiKey`` (401) or ``MissingScope`` (403). Reads the database, in a worker thread,
    only when this process has not verified the key lately."""
    credentials = await bearer(request)
    presented = credentials.credentials if credentials is not None else None
    try:
        if presented is None:
            raise InvalidApiKey("missing API key: send the header Authorization: Bearer <key>")
        cache: VerifiedKeys | None = getattr(request.app.state, "verified_keys", None)
        key = cache.get(presented) if cache is not None else None
        if key is None:
            runtime: Runtime = request.app.state.runtime
            key = await run_in_threadpool(_verify, runtime, presented, scopes[0])
            if cache is not None:
                cache.put(presented, key)
        for scope in scopes:
            if scope not in key.scopes:
                raise MissingScope(key.prefix, scope)
    except InvalidApiKey as exc:
        if presented is None:
            reason = "no API key"
        elif exc.prefix is None:
            reason = f"malformed API key ({len(presented)} characters)"
        elif SAFE_PREFIX.fullmatch(exc.prefix):
            reason = str(exc)  # names the key by its prefix
        else:
            reason = "unknown API key (its prefix is not one a key can have)"
        _refusals(request).refused(request, 401, reason, presented)
        raise
    except MissingScope as exc:
        _refusals(request).refused(request, 403, str(exc), presented)
        raise
    return key


def _verify(runtime: Runtime, presented: str, scope: str) -> ApiKey:
    with transaction(runtime.db) as session:
        return verify(session, presented, scope, runtime.clock.now())


class Require:
    """The dependency ``require(scope)`` makes: the request's key, which must hold ``scope``.

    Under ``AuthenticatedRoute`` the key was checked before the body was read, and is only
    picked up here; elsewhere it is checked here, after FastAPI has read the body."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        # Unused here (``authenticate`` reads the header), declared so that the OpenAPI
        # document shows the route's security scheme.
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiKey:
        key: ApiKey | None = request.scope.get(VERIFIED_KEY)
        if key is not None and self.scope in key.scopes:
            return key
        return await authenticate(request, [self.scope])

    def __repr__(self) -> str:
        return f"require({self.scope!r})"


def require(scope: str) -> Require:
    """A dependency that admits requests whose key holds ``scope``, and returns that key."""
    return Require(scope)


def required_scopes(dependant: Dependant) -> list[str]:
    """The scopes the ``require`` dependencies of ``dependant`` (at any depth) name."""
    found: list[str] = []
    pending = list(dependant.dependencies)
    while pending:
        sub = pending.pop(0)
        if isinstance(sub.call, Require) and sub.call.scope not in found:
            found.append(sub.call.scope)
        pending.extend(sub.dependencies)
    return found


def refuse_unless_json(request: Request) -> None:
    """Raise ``NotJson`` (422) when a request's body says it is something other than JSON.

    FastAPI would pass such a body to validation as bytes, and the answer would be a 422
    "Input should be a valid dictionary" (``curl -d`` without ``-H 'Content-Type:
    application/json'`` sends a form). A body without a Content-Type is read as JSON, and
    an empty one is left to validation ("body: Field required")."""
    content_type = request.headers.get("content-type")
    if content_type is None or declares_json(content_type):
        return
    if request.headers.get("content-length", "").strip() == "0":
        return
    raise NotJson(content_type)


class AuthenticatedRoute(APIRoute):
    """An ``APIRoute`` that checks the key its ``require`` dependencies ask for before the
    body is read: an unauthenticated request is answered 401 (or 403) without its body being
    received, parsed or validated. Then a route that reads a JSON body refuses one not sent
    as JSON (422). Routes without a ``require`` are served unchanged."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # A body sent without a Content-Type is read as JSON (FastAPI's strict default
        # would pass it to validation as bytes: a 422 no client could act on); a body that
        # says it is something else is refused (``refuse_unless_json``).
        kwargs["strict_content_type"] = False
        super().__init__(path, endpoint, **kwargs)
        if self.body_field is not None and required_scopes(self.dependant):
            self.responses = {**BODY_RESPONSES, **self.responses}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = required_scopes(self.dependant)
        if not scopes:
            return handler
        reads_body = self.body_field is not None

        async def authenticated(request: Request) -> Response:
            request.scope[VERIFIED_KEY] = await authenticate(request, scopes)
            if reads_body:
                refuse_unless_json(request)
            return await handler(request)

        return authenticated
