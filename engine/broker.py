"""Dramatiq brokers from a URL: ``stub://`` (in-process worker threads), ``inline://``
(jobs run in the caller's thread, for virtual-time runs), ``redis://``, ``amqp://``; and
the cheap questions operators ask of them (``probe_broker``: does it answer, how many
messages has Dramatiq dead-lettered)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker

from engine.errors import ConfigurationError
from engine.urls import redact_url


def broker_errors() -> tuple[type[BaseException], ...]:
    """The errors of a broker that cannot take a message (down, refusing, out of memory):
    Dramatiq's for RabbitMQ; its Redis broker lets redis-py's through."""
    from dramatiq.errors import ConnectionClosed, ConnectionFailed
    from redis.exceptions import RedisError

    return (ConnectionClosed, ConnectionFailed, RedisError)


def describe_broker_error(exc: BaseException) -> str:
    """A broker's refusal on one line, for an operator: ``ConnectionError: Error 111 ...``."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split()).rstrip('.')}"


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def build_broker(url: str) -> Broker:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "stub":
        return StubBroker()
    if scheme == "inline":
        from engine.inline_broker import InlineBroker

        return InlineBroker()
    if scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    # Named only if it looks like one: a URL missing its "://" is all "scheme" to split().
    problem = f"unknown scheme {scheme!r}" if _SCHEME.fullmatch(scheme) else "no scheme"
    raise ConfigurationError(
        f"broker URL {redact_url(url)!r}: {problem}; use stub://, redis:// or amqp://"
    )


BROKER_TIMEOUT_SECONDS = 3.0
"""How long a probe waits for the broker to connect, and then to answer."""


def queues_of(broker: Broker) -> list[str]:
    """The queues declared on ``broker`` (the actors' own, not their delay queues)."""
    return sorted(q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))


def ping_broker(broker: Broker, *, timeout_seconds: float = BROKER_TIMEOUT_SECONDS) -> None:
    """Return if the broker answers a round trip within ``timeout_seconds``; raise what its
    client raised otherwise. The in-process brokers always answer."""
    probe_broker(broker, queues=(), timeout_seconds=timeout_seconds)


def probe_broker(
    broker: Broker, *, queues: Iterable[str], timeout_seconds: float = BROKER_TIMEOUT_SECONDS
) -> dict[str, int]:
    """One round trip to the broker: the messages Dramatiq dead-lettered (a job out of
    retries) in each of ``queues``, which it keeps apart from the queue: Redis in the sorted
    set ``<namespace>:<queue>.XQ``, RabbitMQ in the queue ``<queue>.XQ``, the stub broker in
    memory. Asked on a connection of its own, opened and closed here, never the broker's
    (shared with the jobs, and without a timeout): waits ``timeout_seconds`` at most to
    connect and as long for the answer, so a scrape or a readiness check never hangs.
    Raises what the broker's client raises when it does not answer."""
    queues = list(queues)
    if isinstance(broker, StubBroker):
        dead: dict[str, list[Any]] = getattr(broker, "dead_letters_by_queue", {})
        return {queue: len(dead.get(queue, ())) for queue in queues}
    client = getattr(broker, "client", None)
    if client is not None:  # RedisBroker
        return _probe_redis(broker, client, queues, timeout_seconds)
    parameters = getattr(broker, "parameters", None)
    if parameters is not None:  # RabbitmqBroker
        return _probe_rabbitmq(parameters, queues, timeout_seconds)
    raise RuntimeError(f"no probe for {type(broker).__name__}")


def _probe_redis(
    broker: Broker, client: Any, queues: list[str], timeout_seconds: float
) -> dict[str, int]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)  # the broker's server
    connection.socket_connect_timeout = timeout_seconds
    connection.socket_timeout = timeout_seconds
    connection.retry = Retry(NoBackoff(), 0)  # one try: the caller asks again next time
    namespace = getattr(broker, "namespace", "dramatiq")
    commands: list[tuple[str, ...]] = [("PING",)]
    commands += [("ZCARD", f"{namespace}:{queue}.XQ") for queue in queues]
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        replies = [connection.read_response() for _ in commands]
    finally:
        connection.disconnect()
    return {queue: int(count) for queue, count in zip(queues, replies[1:], strict=True)}


def _probe_rabbitmq(parameters: Any, queues: list[str], timeout_seconds: float) -> dict[str, int]:
    import pika
    from dramatiq.common import xq_name
    from pika.exceptions import ChannelClosedByBroker

    chosen = copy.copy(parameters[0] if isinstance(parameters, list) else parameters)
    chosen.connection_attempts = 1
    chosen.socket_timeout = timeout_seconds
    chosen.stack_timeout = timeout_seconds
    chosen.blocked_connection_timeout = timeout_seconds
    connection = pika.BlockingConnection(chosen)
    try:
        counts: dict[str, int] = {}
        channel = connection.channel()
        for queue in queues:
            try:
                declared = channel.queue_declare(xq_name(queue), passive=True)
            except ChannelClosedByBroker:  # no such queue yet, so nothing dead-lettered
                counts[queue] = 0
                channel = connection.channel()  # the broker closed the last one
                continue
            counts[queue] = int(declared.method.message_count)
        return counts
    finally:
        connection.close()
