"""API keys on requests: ``Authorization: Bearer jl_<prefix>_<secret>``, checked per scope.

A route declares the scope it needs with ``Depends(require("events:write"))``. No key, a
malformed, unknown or revoked one answers 401 saying which; a valid key without the scope
answers 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engine.api.deps import RuntimeDep
from engine.api_keys import ApiKey, InvalidApiKey, verify
from engine.db import transaction

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `journeyline keys create`, as `Bearer jl_<prefix>_<secret>`.",
)


def require(scope: str) -> Callable[..., ApiKey]:
    """A dependency that admits requests whose key holds ``scope``, and returns that key."""

    def check_key(
        runtime: RuntimeDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiKey:
        if credentials is None:
            raise InvalidApiKey("missing API key: send the header Authorization: Bearer <key>")
        with transaction(runtime.db) as session:
            return verify(session, credentials.credentials, scope, runtime.clock.now())

    check_key.__name__ = f"require_{scope.replace(':', '_')}"
    return check_key
