"""API keys for the HTTP service: created once, stored only as a hash, scoped, revocable.

A key reads ``jl_<prefix>_<secret>``. The 8-character ``prefix`` is stored in clear and
indexed: it finds the row and names the key to operators (``journeyline keys list``). Only
the SHA-256 of the ``secret`` is stored, and it is compared in constant time, so the
database never holds a usable key and a lookup by prefix leaks nothing about the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import JSON
from sqlmodel import Field, Session, SQLModel, col, select

from engine.db import UTCDateTime
from engine.errors import JourneylineError, ValidationError

SCOPES = ("events:write", "contacts:read", "contacts:write", "reports:read")
"""Every scope a key may hold."""

KEY_PREFIX = "jl"
PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: not a database write per request."""


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    prefix: str = Field(max_length=PREFIX_LENGTH, unique=True, index=True)
    hash: str = Field(max_length=64, description="SHA-256 of the secret, hex.")
    scopes: list[str] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class InvalidApiKey(JourneylineError):
    """No usable key was presented (missing, malformed, unknown or revoked): HTTP 401.

    ``prefix`` is the presented key's prefix when it had the shape of a key: it names the
    key to its owner and to operators (``journeyline keys list``) without revealing it."""

    def __init__(self, message: str, *, prefix: str | None = None) -> None:
        super().__init__(message)
        self.prefix = prefix


class MissingScope(JourneylineError):
    """The key is valid but may not do this: HTTP 403."""

    def __init__(self, prefix: str, scope: str) -> None:
        super().__init__(f"API key {prefix} lacks the scope {scope!r}")
        self.prefix = prefix
        self.scope = scope


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(scopes))
    if not chosen:
        raise ValidationError(
            f"a key needs at least one scope; choose from: {', '.join(SCOPES)}", field="scopes"
        )
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise ValidationError(
            f"unknown scope(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(SCOPES)}",
            field="scopes",
        )
    return chosen


def create_key(
    session: Session, name: str, scopes: Iterable[str], now: datetime
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is never shown again."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationError("a key needs a name of 1 to 128 characters", field="name")
    chosen = validate_scopes(scopes)
    while True:
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        taken = session.exec(select(ApiKey.id).where(ApiKey.prefix == prefix)).first()
        if taken is None:
            break
    secret = secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=prefix, hash=hash_secret(secret), scopes=chosen, created_at=now)
    session.add(row)
    session.flush()
    return row, f"{KEY_PREFIX}_{prefix}_{secret}"


def split_key(presented: str) -> tuple[str, str]:
    """``(prefix, secret)`` of a presented key, or ``InvalidApiKey`` if it has no such shape."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != PREFIX_LENGTH or not parts[2]:
        raise InvalidApiKey("API key is malformed: expected jl_<prefix>_<secret>")
    return parts[1], parts[2]


def verify(session: Session, presented: str, scope: str, now: datetime) -> ApiKey:
    """The key ``presented``, if it exists, is not revoked and holds ``scope``.

    Raises ``InvalidApiKey`` (unknown, malformed, revoked) or ``MissingScope``. Notes when the
    key was last used, at most once per ``LAST_USED_RESOLUTION``, in the caller's session.
    """
    prefix, secret = split_key(presented)
    row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    digest = hash_secret(secret)
    # Compare even when no row matched, so an unknown prefix costs the same as a bad secret.
    expected = row.hash if row is not None else hash_secret("")
    if not hmac.compare_digest(digest, expected) or row is None:
        raise InvalidApiKey(f"API key {prefix} is unknown", prefix=prefix)
    if row.revoked:
        raise InvalidApiKey(f"API key {prefix} was revoked", prefix=prefix)
    if scope not in row.scopes:
        raise MissingScope(prefix, scope)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
    return row


def revoke(session: Session, prefix: str, now: datetime) -> ApiKey:
    """Revoke the key with ``prefix`` (revoking twice keeps the first time)."""
    row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None:
        raise ValidationError(f"no API key with prefix {prefix!r}", field="prefix")
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))).all())
