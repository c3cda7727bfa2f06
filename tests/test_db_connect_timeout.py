"""A PostgreSQL connection gives up after a while when the host does not answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from engine.db import CONNECT_TIMEOUT_SECONDS, make_engine


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
