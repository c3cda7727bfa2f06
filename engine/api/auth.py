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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from engine.api_keys import ApiKey, InvalidApiKey, MissingScope, hash_secret, verify
from engine.db import transaction
from engine.runtime import Runtime

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


VERIFIED_KEY = "journeyline.api_key"
"""The request scope's entry for the key ``AuthenticatedRoute`` verified."""


async def authenticate(request: Request, scopes: Sequence[str]) -> ApiKey:
    """The request's key, if it is usable and holds every one of ``scopes``; else raises
    ``InvalidApiKey`` (401) or ``MissingScope`` (403). Reads the database, in a worker thread,
    only when this process has not verified the key lately."""
    credentials = await bearer(request)
    if credentials is None:
        raise InvalidApiKey("missing API key: send the header Authorization: Bearer <key>")
    presented = credentials.credentials
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


class AuthenticatedRoute(APIRoute):
    """An ``APIRoute`` that checks the key its ``require`` dependencies ask for before the
    body is read: an unauthenticated request is answered 401 (or 403) without its body being
    received, parsed or validated. Routes without a ``require`` are served unchanged."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = required_scopes(self.dependant)
        if not scopes:
            return handler

        async def authenticated(request: Request) -> Response:
            request.scope[VERIFIED_KEY] = await authenticate(request, scopes)
            return await handler(request)

        return authenticated
