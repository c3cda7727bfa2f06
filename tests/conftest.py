"""Fixtures for real services: PostgreSQL, Redis, RabbitMQ, and a SQLite file.

A service that does not answer skips its tests with the reason locally, and fails them when
``CI=true``: CI must never go green by skipping (the rule dramatiq's ``check_redis`` follows).
Override where each service lives with ``JOURNEYLINE_TEST_POSTGRES_URL``,
``JOURNEYLINE_TEST_REDIS_URL`` and ``JOURNEYLINE_TEST_AMQP_URL``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, make_url, pool, text

from engine.db import make_engine
from engine.models import metadata
from tests.support import reset_postgres

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONNECT_TIMEOUT_SECONDS = 3


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _unavailable(service: str, url: str, exc: BaseException) -> NoReturn:
    detail = str(exc).strip() or repr(exc)
    reason = detail.splitlines()[0]
    message = f"{service} not reachable at {_redacted(url)}: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: services must be up)", pytrace=False)
    pytest.skip(message)


# --- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this test session, dropped at the end."""
    admin_url = os.environ.get("JOURNEYLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    admin = create_engine(
        admin_url,
        isolation_level="AUTOCOMMIT",
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        _unavailable("PostgreSQL", admin_url, getattr(exc, "orig", None) or exc)

    name = f"jl_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_db_url(postgres_url: str) -> Iterator[str]:
    """The session's PostgreSQL database with every table dropped and created anew."""
    reset_postgres(postgres_url, create_tables=True)
    yield postgres_url


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A reachable Redis database, flushed before the session uses it."""
    import redis

    url = os.environ.get("JOURNEYLINE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
        client.flushdb()
    except Exception as exc:
        client.close()
        _unavailable("Redis", url, exc)
    client.close()
    yield url


# --- RabbitMQ ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A reachable RabbitMQ broker."""
    import pika

    url = os.environ.get("JOURNEYLINE_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    try:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = CONNECT_TIMEOUT_SECONDS
        params.blocked_connection_timeout = CONNECT_TIMEOUT_SECONDS
        connection = pika.BlockingConnection(params)
    except Exception as exc:
        _unavailable("RabbitMQ", url, exc)
    connection.close()
    yield url


# --- SQLite -----------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite file in the test's temporary folder, with every table created."""
    url = f"sqlite:///{tmp_path}/journeyline.db"
    db = make_engine(url)
    try:
        metadata.create_all(db)
    finally:
        db.dispose()
    yield url
