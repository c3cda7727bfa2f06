"""Engines as ``make_engine`` makes them: a PostgreSQL connection gives up after a while when
the host does not answer, and errors leave out the statements' values."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from engine.db import CONNECT_TIMEOUT_SECONDS, DEAD_PEER_SETTINGS, make_engine


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a host dropping replies)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_silent_host_fails_within_the_urls_connect_timeout(silent_port: int) -> None:
    engine = make_engine(f"postgresql+psycopg://u@127.0.0.1:{silent_port}/x?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(OperationalError, match="timeout"), engine.connect() as conn:
        conn.execute(text("select 1"))
    assert time.monotonic() - started < 8


def test_without_one_in_the_url_the_default_timeout_goes_to_the_driver(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    import psycopg

    real = psycopg.connect

    def connect(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(*args, **{**kwargs, "connect_timeout": 1})  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg, "connect", connect)
    engine = make_engine(f"postgresql+psycopg://u@127.0.0.1:{silent_port}/x")
    with pytest.raises(OperationalError, match="timeout"), engine.connect():
        pass
    assert seen.get("connect_timeout") == CONNECT_TIMEOUT_SECONDS


def _settings_given_to_the_driver(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    seen: dict[str, object] = {}
    import psycopg

    def connect(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        raise psycopg.OperationalError("not connecting in this test")

    monkeypatch.setattr(psycopg, "connect", connect)
    with pytest.raises(OperationalError), make_engine(url).connect():
        pass
    return seen


def test_a_vanished_host_is_noticed_by_tcp_keepalives_and_a_user_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _settings_given_to_the_driver("postgresql+psycopg://u@127.0.0.1:1/x", monkeypatch)
    for name, value in DEAD_PEER_SETTINGS.items():
        assert seen.get(name) == value, name
    assert seen["keepalives_idle"] < 7200  # the kernel's default: two hours of silence


def test_the_urls_own_tcp_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://u@127.0.0.1:1/x?keepalives_idle=5&tcp_user_timeout=0"
    seen = _settings_given_to_the_driver(url, monkeypatch)
    assert seen["keepalives_idle"] == "5"
    assert seen["tcp_user_timeout"] == "0"
    assert seen["keepalives_count"] == DEAD_PEER_SETTINGS["keepalives_count"]


def test_a_real_connection_has_them_on_its_socket(postgres_url: str) -> None:
    """libpq took every one (a misspelt name fails the connection) and set them on the
    socket the connection uses."""
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
            driver = conn.connection.driver_connection
            assert driver is not None
            fd = socket.socket(fileno=os.dup(driver.pgconn.socket))
            try:
                assert fd.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert fd.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
                assert fd.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
                assert fd.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000
            finally:
                fd.close()
    finally:
        engine.dispose()


def test_a_database_error_never_carries_the_statements_values(tmp_path: Path) -> None:
    """Errors reach logs, schedule slots and the broker's retried messages: an address in
    a statement's parameters must not ride along."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.begin() as conn:
            conn.execute(text("create table t (email text unique)"))
            conn.execute(text("insert into t values (:e)"), {"e": "zelda@example.com"})
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(text("insert into t values (:e)"), {"e": "zelda@example.com"})
        assert "zelda" not in str(caught.value)
        assert "hidden due to hide_parameters" in str(caught.value)
    finally:
        engine.dispose()


def test_a_kept_sqlite_database_overwrites_what_it_deletes(tmp_path: Path) -> None:
    kept = make_engine(f"sqlite:///{tmp_path}/kept.db")
    scratch = make_engine(f"sqlite:///{tmp_path}/scratch.db", durable=False)
    try:
        with kept.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 2  # FAST
        with scratch.connect() as conn:  # a simulation's shard: nothing kept, nothing to do
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() in (0, 1)
    finally:
        kept.dispose()
        scratch.dispose()


def test_a_wait_for_a_free_pool_connection_gives_up_with_the_connect_timeout() -> None:
    # SQLAlchemy's own default is 30 s: with the database hung, a request waiting behind
    # the pool's connections answered after 40 s (30 s of waiting, then 10 s of connecting)
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        assert engine.pool.timeout() == CONNECT_TIMEOUT_SECONDS
    finally:
        engine.dispose()
    chosen = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_timeout=2)
    try:
        assert chosen.pool.timeout() == 2  # a caller's own choice wins
    finally:
        chosen.dispose()
