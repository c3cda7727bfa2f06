"""A database that accepts connections but never answers (a paused proxy, a network that
drops packets, a server stuck on a lock) must not hang ``/readyz``, ``/metrics`` or the
start of ``journeyline serve``: found by running serve against a paused TCP proxy in front
of PostgreSQL, where both endpoints hung for as long as the pause lasted."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from engine.api.health import check_database
from engine.api.metrics import DatabaseCollector


class HungDatabase:
    """An engine whose connections hang until released, counting the attempts."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.attempts = 0
        self.engine: Engine = create_engine("sqlite://", creator=self._connect, poolclass=NullPool)

    def _connect(self) -> sqlite3.Connection:
        self.attempts += 1
        self.release.wait(30)
        return sqlite3.connect(":memory:", check_same_thread=False)


@pytest.fixture
def hung() -> Iterator[HungDatabase]:
    database = HungDatabase()
    yield database
    database.release.set()  # let the probe threads left waiting finish
    database.engine.dispose()


def test_readiness_of_a_database_that_never_answers_fails_within_the_timeout(
    hung: HungDatabase,
) -> None:
    started = time.monotonic()
    assert check_database(hung.engine, timeout_seconds=0.3) == "failed: TimeoutError"
    assert time.monotonic() - started < 2


def test_checks_of_a_hung_database_do_not_pile_up_connections(hung: HungDatabase) -> None:
    for _ in range(3):
        assert check_database(hung.engine, timeout_seconds=0.2) == "failed: TimeoutError"
    assert hung.attempts == 1  # one probe waits; the others wait for it, not beside it


def test_registering_the_database_collector_does_not_query_the_database(
    hung: HungDatabase,
) -> None:
    started = time.monotonic()
    CollectorRegistry(auto_describe=True).register(
        DatabaseCollector(hung.engine, timeout_seconds=0.3)
    )
    assert time.monotonic() - started < 2
    assert hung.attempts == 0


def test_a_scrape_of_a_hung_database_says_it_is_down_within_the_timeout(
    hung: HungDatabase,
) -> None:
    collector = DatabaseCollector(hung.engine, timeout_seconds=0.3)
    started = time.monotonic()
    families = {family.name: family for family in collector.collect()}
    assert time.monotonic() - started < 2
    assert families["journeyline_database_up"].samples[0].value == 0
    list(collector.collect())
    assert hung.attempts == 1
