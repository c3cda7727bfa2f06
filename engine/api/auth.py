"""API keys on requests: ``Authorization: Bearer jl_<prefix>_<secret>``, checked per scope.

A route declares the scope it needs with ``Depends(require("events:write"))``. No key, a
malformed, unknown or revoked one answers 401 saying which; a valid key without the scope
answers 403.

A key verified by this process is trusted again for ``KEY_CACHE_SECONDS`` without reading
the database (a busy ingest client sends many requests a second with one key): a revocation
takes effect within that time, and a key without the scope is refused at once either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engine.api.deps import RuntimeDep
from engine.api_keys import ApiKey, InvalidApiKey, MissingScope, hash_secret, verify
from engine.db import transaction

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


def require(scope: str) -> Callable[..., ApiKey]:
    """A dependency that admits requests whose key holds ``scope``, and returns that key."""

    def check_key(
        request: Request,
        runtime: RuntimeDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiKey:
        if credentials is None:
            raise InvalidApiKey("missing API key: send the header Authorization: Bearer <key>")
        presented = credentials.credentials
        cache: VerifiedKeys | None = getattr(request.app.state, "verified_keys", None)
        known = cache.get(presented) if cache is not None else None
        if known is not None:
            if scope not in known.scopes:
                raise MissingScope(known.prefix, scope)
            return known
        with transaction(runtime.db) as session:
            key = verify(session, presented, scope, runtime.clock.now())
        if cache is not None:
            cache.put(presented, key)
        return key

    check_key.__name__ = f"require_{scope.replace(':', '_')}"
    return check_key
