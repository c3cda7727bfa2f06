"""``/metrics`` asks the broker at most once at a time, and not again before its answer is
``max_age_seconds`` old, however many scrapes come: the endpoint needs no key, and each
probe may hold a thread of the pool the track API shares for seconds when the broker is
slow. Scrapes meanwhile report the last answer, with its age. Given / When / Then."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
from dramatiq.brokers.stub import StubBroker
from prometheus_client.core import Metric

from engine.api.metrics import BrokerCollector
from engine.clock import VirtualClock
from tests.support import make_runtime
from tests.test_ops_resilience_api import served

SCRAPES = 40


class SlowBroker:
    """A probe that answers only when let go, and counts how often it is asked."""

    def __init__(self, dead_letters: dict[str, int] | None = None) -> None:
        self.dead_letters = dead_letters or {"journeyline": 0}
        self.asked = 0
        self.called = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self._lock = threading.Lock()

    def probe(self, broker: Any, *, queues: Any, timeout_seconds: float) -> dict[str, int]:
        with self._lock:
            self.asked += 1
        self.called.set()
        assert self.go.wait(timeout=30), "the test never let the probe answer"
        return dict(self.dead_letters)


class DownBroker:
    def __init__(self) -> None:
        self.asked = 0

    def probe(self, broker: Any, *, queues: Any, timeout_seconds: float) -> dict[str, int]:
        self.asked += 1
        raise ConnectionError("connection refused")


def samples(families: list[Metric]) -> dict[str, Any]:
    """Family name -> its one value, or {label: value} for the dead letters."""
    found: dict[str, Any] = {}
    for family in families:
        if family.name == "journeyline_dead_letter_messages":
            found[family.name] = {s.labels["queue"]: s.value for s in family.samples}
        else:
            (sample,) = family.samples
            found[family.name] = sample.value
    return found


def collector(probe: Any, clock: VirtualClock) -> BrokerCollector:
    return BrokerCollector(StubBroker(), max_age_seconds=10, clock=clock, probe=probe)


def test_many_scrapes_while_the_broker_is_slow_start_one_probe_and_wait_for_none() -> None:
    clock = VirtualClock()
    broker = SlowBroker({"journeyline": 2})
    broker.go.clear()
    metrics = collector(broker.probe, clock)
    with ThreadPoolExecutor(max_workers=SCRAPES) as pool:
        # Given a first scrape asking a broker that is slow to answer
        first = pool.submit(lambda: list(metrics.collect()))
        assert broker.called.wait(timeout=10)
        # When many more scrapes come meanwhile
        others = [pool.submit(lambda: list(metrics.collect())) for _ in range(SCRAPES - 1)]
        # Then they all return without waiting for it, saying nothing of the broker yet
        assert [o.result(timeout=10) for o in others] == [[]] * (SCRAPES - 1)
        assert broker.asked == 1
        # and the first reports its answer once the broker gives it
        broker.go.set()
        assert samples(first.result(timeout=10)) == {
            "journeyline_broker_up": 1.0,
            "journeyline_dead_letter_messages": {"journeyline": 2.0},
            "journeyline_broker_probe_age_seconds": 0.0,
        }
    assert broker.asked == 1


def test_the_answer_is_reused_with_its_age_until_it_is_too_old() -> None:
    clock = VirtualClock()
    broker = SlowBroker({"journeyline": 1})
    metrics = collector(broker.probe, clock)
    list(metrics.collect())
    # When scrapes come within the answer's max age
    clock.advance(seconds=9)
    scraped = samples(list(metrics.collect()))
    # Then the broker is not asked again, and the answer is reported with its age
    assert broker.asked == 1
    assert scraped["journeyline_broker_probe_age_seconds"] == 9.0
    assert scraped["journeyline_dead_letter_messages"] == {"journeyline": 1.0}
    # And once it is that old, the next scrape asks again
    broker.dead_letters = {"journeyline": 3}
    clock.advance(seconds=1)
    scraped = samples(list(metrics.collect()))
    assert broker.asked == 2
    assert scraped["journeyline_dead_letter_messages"] == {"journeyline": 3.0}
    assert scraped["journeyline_broker_probe_age_seconds"] == 0.0


def test_scrapes_during_a_later_probe_report_the_last_answer_and_its_age() -> None:
    clock = VirtualClock()
    broker = SlowBroker({"journeyline": 1})
    metrics = collector(broker.probe, clock)
    list(metrics.collect())
    clock.advance(seconds=30)
    broker.go.clear()
    broker.called.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Given a scrape asking the broker again, which is slow to answer
        asking = pool.submit(lambda: list(metrics.collect()))
        assert broker.called.wait(timeout=10)
        # When another scrape comes meanwhile
        scraped = samples(list(metrics.collect()))
        # Then it reports the last answer, 30 s old, without asking
        assert scraped == {
            "journeyline_broker_up": 1.0,
            "journeyline_dead_letter_messages": {"journeyline": 1.0},
            "journeyline_broker_probe_age_seconds": 30.0,
        }
        assert broker.asked == 2
        broker.go.set()
        asking.result(timeout=10)


def test_a_broker_that_did_not_answer_is_reported_down_and_not_asked_again_at_once() -> None:
    clock = VirtualClock()
    broker = DownBroker()
    metrics = collector(broker.probe, clock)
    first = samples(list(metrics.collect()))
    clock.advance(seconds=5)
    second = samples(list(metrics.collect()))
    assert first == {"journeyline_broker_up": 0.0, "journeyline_broker_probe_age_seconds": 0.0}
    assert second == {"journeyline_broker_up": 0.0, "journeyline_broker_probe_age_seconds": 5.0}
    assert broker.asked == 1


@contextmanager
def hung_broker() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that accepts connections and never answers, and the connections it took."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.05)
    taken: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                taken.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1], taken
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for connection in taken:
            connection.close()
        listener.close()


def test_a_flood_of_scrapes_of_a_hung_broker_opens_one_connection_to_it(sqlite_url: str) -> None:
    with hung_broker() as (port, connections):
        # Given the API, its broker (Redis) accepting connections and never answering
        runtime, _, _ = make_runtime(sqlite_url, broker_url=f"redis://127.0.0.1:{port}/13")
        with served(runtime) as api:
            # When many scrapes come at once
            def scrape(_: int) -> httpx.Response:
                return api.http.get("/metrics")

            with ThreadPoolExecutor(max_workers=SCRAPES) as pool:
                answers = list(pool.map(scrape, range(SCRAPES)))
        # Then each is answered, and the broker was asked once, on one connection
        assert {a.status_code for a in answers} == {200}
        assert len(connections) == 1
        assert any("journeyline_broker_up 0.0" in a.text for a in answers)
