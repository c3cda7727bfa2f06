"""Prometheus metrics at ``/metrics``: what the database holds, and how the API is doing.

At each scrape the database is counted (events by status, actions by status, contacts by
stage), so every API process reports the same truth, whoever did the work. Two backlog
signals say whether workers keep up (or run at all): how long the oldest pending event has
waited, and how many actions are due but not done, since when. Both read the pending range
of a ``(status, lease_until)`` index: their cost follows the backlog, not the tables. The
broker is asked too, in one round trip with a timeout: whether it answers, and how many
messages Dramatiq dead-lettered in each queue (jobs out of retries). Its answer is kept
for ``BROKER_PROBE_MAX_AGE_SECONDS`` and asked by one scrape at a time (the others report
the last answer, with its age): ``/metrics`` needs no key, and a flood of scrapes while
the broker is slow must not tie up the threads the track API shares. Request counts
and latencies are this process's own. Each app has its own registry: two apps in one
process (tests) never collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from dramatiq import Broker
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.types import ASGIApp

from engine.api.health import DATABASE_TIMEOUT_SECONDS
from engine.api.observed import ObservedRequests
from engine.broker import BROKER_TIMEOUT_SECONDS, probe_broker, queues_of
from engine.clock import Clock, SystemClock
from engine.models import Action, ActionStatus, Contact, Event, EventStatus
from engine.one_at_a_time import OneAtATime
from engine.single_flight import SingleFlight

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


# Built once (a scrape every 15 s or so).
_OLDEST_PENDING_EVENT = select(func.min(col(Event.received_at))).where(
    col(Event.status) == EventStatus.PENDING
)
_DUE_ACTIONS = select(func.count(), func.min(col(Action.next_attempt_at))).where(
    col(Action.status) == ActionStatus.PENDING,
    col(Action.next_attempt_at) <= bindparam("now"),
)


TALLY_MAX_AGE_SECONDS = 60.0
"""How long one count of the tables by status and stage serves the scrapes that follow."""


class DatabaseCollector(Collector):
    """Measures the backlog and counts rows by status or stage when scraped.

    The backlog (the oldest pending event, the due actions) is asked at every scrape, on
    indexes, and says whether the database is up: waited for ``timeout_seconds`` at most,
    one at a time (``OneAtATime``), so a database that never answers is reported down within
    the timeout and later scrapes wait for the same queries rather than pile up threads and
    connections. The counts by status and stage read whole tables, which takes seconds at
    tens of millions of events: they are made at most once a ``TALLY_MAX_AGE_SECONDS``, and
    one that outlives the timeout finishes in the background for a later scrape (meanwhile
    the last counts are shown, or none): slow counting is not a database down. Registering
    it asks nothing."""

    def __init__(
        self,
        db: Engine,
        *,
        clock: Clock | None = None,
        timeout_seconds: float = DATABASE_TIMEOUT_SECONDS,
        stages: Sequence[str] = (),
        tally_max_age_seconds: float = TALLY_MAX_AGE_SECONDS,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.stages = list(stages)  # reported at 0 when no contact is in them
        self.timeout_seconds = timeout_seconds
        self.tally_max_age_seconds = tally_max_age_seconds
        self._asking: OneAtATime[_Backlog] = OneAtATime("journeyline-metrics-database")
        self._counting: OneAtATime[None] = OneAtATime("journeyline-metrics-counts")
        self._tallies: tuple[float, tuple[list[Any], ...]] | None = None  # (monotonic, rows)

    def describe(self) -> Iterator[Metric]:
        """The families, without asking the database (the registry asks at registration,
        when ``journeyline serve`` starts: a database that does not answer must not stop
        it from starting)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        up, events, actions, contacts, oldest_event, due, oldest_due = self._families()
        now = self.clock.now()
        try:
            backlog = self._asking.run(
                partial(self._ask_backlog, now), timeout_seconds=self.timeout_seconds
            )
        except TimeoutError:
            log.warning("metrics: the database did not answer within %g s", self.timeout_seconds)
            up.add_metric([], 0)
            yield up
            return
        except Exception as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        oldest_event.add_metric([], _age_seconds(backlog.oldest_pending, now))
        due.add_metric([], backlog.due)
        oldest_due.add_metric([], _age_seconds(backlog.first_due, now))
        yield from (up, oldest_event, due, oldest_due)
        tallies = self._recent_tallies()
        if tallies is None:
            return
        known: tuple[list[str], ...] = ([*EventStatus], [*ActionStatus], self.stages)
        for family, counted, zeros in zip((events, actions, contacts), tallies, known, strict=True):
            # Every status is reported, 0 included: a series that vanishes when its last
            # row leaves (the last failed action retried) reads as "no data" on a dashboard
            # and breaks an alert comparing it with an hour ago.
            found = {str(label): count for label, count in counted}
            labels = [str(status) for status in zeros]
            for label in labels + [label for label in found if label not in labels]:
                family.add_metric([label], found.get(label, 0))
        yield from (events, actions, contacts)

    def _recent_tallies(self) -> tuple[list[Any], ...] | None:
        """The counts by status and stage: the last ones if recent enough, else counted
        anew (waited for the timeout at most; the last ones, or None, if that is too short)."""
        last = self._tallies
        if last is not None and time.monotonic() - last[0] < self.tally_max_age_seconds:
            return last[1]
        try:
            self._counting.run(self._count_tallies, timeout_seconds=self.timeout_seconds)
        except TimeoutError:
            log.warning(
                "metrics: counting rows by status takes over %g s; %s",
                self.timeout_seconds,
                "the last counts are shown until it is done"
                if last is not None
                else "no counts are shown until it is done",
            )
        except Exception as exc:
            log.warning("metrics: counting rows by status failed: %s", exc)
        latest = self._tallies
        return None if latest is None else latest[1]

    def _ask_backlog(self, now: datetime) -> _Backlog:
        with Session(self.db) as session:
            received = session.exec(_OLDEST_PENDING_EVENT).one()
            count, first_due = session.exec(_DUE_ACTIONS, params={"now": now}).one()
        return _Backlog(received, count, first_due)

    def _count_tallies(self) -> None:
        """Kept here when done, even after the scrape that asked stopped waiting."""
        with Session(self.db) as session:
            tallies = tuple(
                list(session.exec(select(column, func.count()).group_by(column)).all())
                for column in (Event.status, Action.status, Contact.stage)
            )
        self._tallies = (time.monotonic(), tallies)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        up = GaugeMetricFamily(
            "journeyline_database_up", "1 if the database answered this scrape's counts."
        )
        events = GaugeMetricFamily(
            "journeyline_events", "Events in the database, by status.", labels=["status"]
        )
        actions = GaugeMetricFamily(
            "journeyline_actions", "Actions in the database, by status.", labels=["status"]
        )
        contacts = GaugeMetricFamily(
            "journeyline_contacts", "Contacts in the database, by stage.", labels=["stage"]
        )
        oldest_event = GaugeMetricFamily(
            "journeyline_oldest_pending_event_age_seconds",
            "Seconds since the oldest event still pending was received (0 if none): it grows "
            "while no worker processes events.",
        )
        due = GaugeMetricFamily(
            "journeyline_actions_due",
            "Actions pending whose time has come (next_attempt_at reached), not yet done.",
        )
        oldest_due = GaugeMetricFamily(
            "journeyline_oldest_due_action_age_seconds",
            "Seconds since the earliest of the due actions fell due (0 if none).",
        )
        return up, events, actions, contacts, oldest_event, due, oldest_due


@dataclass(frozen=True)
class _Backlog:
    """What one scrape's backlog queries found."""

    oldest_pending: datetime | None
    due: int
    first_due: datetime | None


BROKER_PROBE_MAX_AGE_SECONDS = 10.0
"""How long the broker's answer is reported before a scrape asks it again (Prometheus
scrapes every 15 s or so: each normal scrape still asks)."""

BrokerProbe = Callable[..., dict[str, int]]
"""``engine.broker.probe_broker``'s shape: ``(broker, *, queues, timeout_seconds)`` to the
dead letters per queue, raising when the broker does not answer."""


@dataclass(frozen=True)
class BrokerAnswer:
    """What the broker said, and when: ``dead_letters`` per queue, None if it did not
    answer."""

    at: datetime
    dead_letters: dict[str, int] | None


class BrokerCollector(Collector):
    """Reports whether the broker answers and how many messages Dramatiq dead-lettered per
    queue. The broker is asked (never longer than ``timeout_seconds`` to connect and as long
    to answer, ``engine.broker.probe_broker``) when its last answer is older than
    ``max_age_seconds``, by one scrape at a time: scrapes meanwhile report the last answer
    and its age (``journeyline_broker_probe_age_seconds``), and nothing of the broker before
    the first answer. So however often ``/metrics`` is asked, at most one probe runs."""

    def __init__(
        self,
        broker: Broker,
        *,
        timeout_seconds: float = BROKER_TIMEOUT_SECONDS,
        max_age_seconds: float = BROKER_PROBE_MAX_AGE_SECONDS,
        clock: Clock | None = None,
        probe: BrokerProbe = probe_broker,
    ) -> None:
        self.broker = broker
        self.timeout_seconds = timeout_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock or SystemClock()
        self.probe = probe
        self._answers = SingleFlight(
            self._ask, now=lambda: self.clock.now().timestamp(), wait_for_first=False
        )

    def describe(self) -> Iterator[Metric]:
        """The families, without asking the broker (the registry asks at registration)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        up, dead, age = self._families()
        answer = self.answer()
        if answer is None:
            return  # the first probe is still out (another scrape's): nothing known yet
        age.add_metric([], _age_seconds(answer.at, self.clock.now()))
        if answer.dead_letters is None:
            up.add_metric([], 0)
            yield from (up, age)
            return
        up.add_metric([], 1)
        for queue, count in answer.dead_letters.items():
            dead.add_metric([queue], count)
        yield from (up, dead, age)

    def answer(self) -> BrokerAnswer | None:
        """The broker's last answer, asked again first if it is too old and no other scrape
        is asking; None until the first probe has finished."""
        return self._answers.get(self.max_age_seconds)

    def _ask(self) -> BrokerAnswer:
        try:
            dead_letters = self.probe(
                self.broker, queues=queues_of(self.broker), timeout_seconds=self.timeout_seconds
            )
        except Exception as exc:
            log.warning("metrics: the broker did not answer: %s", exc)
            return BrokerAnswer(self.clock.now(), None)
        return BrokerAnswer(self.clock.now(), dict(dead_letters))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        up = GaugeMetricFamily("journeyline_broker_up", "1 if the broker answered when last asked.")
        dead = GaugeMetricFamily(
            "journeyline_dead_letter_messages",
            "Messages Dramatiq dead-lettered (jobs out of retries), by queue: Redis keeps "
            "them a week in <namespace>:<queue>.XQ, RabbitMQ in the queue <queue>.XQ; the "
            "rows they pointed at stay in the database, which the scheduler sweeps.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "journeyline_broker_probe_age_seconds",
            "Seconds since the broker was last asked: journeyline_broker_up and the dead "
            "letters are its answer, that old (one scrape at a time asks again once it is "
            "too old; the others report the last answer).",
        )
        return up, dead, age


def _age_seconds(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max((now - since).total_seconds(), 0.0)


HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)
"""The methods a request is counted under by name; any other is ``other``. The server
accepts any token as a method (``FOO1``, ``FOO2``...), and ``/healthz`` needs no key: named
as sent, each would add a counter and a histogram to every scrape, for ever."""


class RequestMetrics(ObservedRequests):
    """Counts requests and times them, labelled by route template (never by raw path, which
    holds email addresses) and by method (``other`` for one not in ``HTTP_METHODS``): every
    label has a bounded set of values, whatever unauthenticated callers send."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        super().__init__(app)
        self.requests = Counter(
            "journeyline_http_requests",
            "HTTP requests answered, by method, route and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "journeyline_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route.",
            ["method", "route"],
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
