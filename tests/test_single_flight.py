"""SingleFlight: one caller asks at a time; the others share the last answer."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from engine.single_flight import SingleFlight


class SlowAsk:
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> int:
        self.calls += 1
        self.release.wait(5)
        return self.calls


def test_concurrent_first_callers_wait_for_one_answer() -> None:
    ask = SlowAsk()
    flight = SingleFlight(ask)
    answers: list[int | None] = []
    threads = [threading.Thread(target=lambda: answers.append(flight.get(10))) for _ in range(8)]
    for t in threads:
        t.start()
    ask.release.set()
    for t in threads:
        t.join()
    assert ask.calls == 1
    assert answers == [1] * 8


def test_a_caller_that_does_not_wait_gets_nothing_before_the_first_answer() -> None:
    ask = SlowAsk()
    flight = SingleFlight(ask, wait_for_first=False)
    first = threading.Thread(target=flight.get, args=(10,))
    first.start()
    while ask.calls == 0:
        pass
    assert flight.get(10) is None  # the first is still asking
    ask.release.set()
    first.join()
    assert flight.get(10) == 1


def test_a_stale_answer_or_a_clock_set_back_is_asked_again() -> None:
    now = [100.0]
    calls = iter(range(1, 10))
    flight = SingleFlight(lambda: next(calls), now=lambda: now[0])
    assert flight.get(5) == 1
    now[0] = 104.0
    assert flight.get(5) == 1  # fresh
    now[0] = 105.0
    assert flight.get(5) == 2  # five seconds old: asked again
    now[0] = 90.0
    assert flight.get(5) == 3  # the clock went back


def test_readiness_keeps_no_runtime_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.api import health

    monkeypatch.setattr(health, "check_database", lambda db: "ok")
    monkeypatch.setattr(health, "check_broker", lambda broker: "ok")

    class FakeRuntime:
        db = broker = None

    runtime = FakeRuntime()
    assert health._recent_checks(runtime) == {"database": "ok", "broker": "ok"}  # type: ignore[arg-type]
    assert len(health._CHECKS) >= 1
    gone = weakref.ref(runtime)
    del runtime
    gc.collect()
    assert gone() is None  # its checks did not hold it
