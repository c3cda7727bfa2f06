"""Dramatiq brokers from a URL: ``stub://`` (in-process worker threads), ``inline://``
(jobs run in the caller's thread, for virtual-time runs), ``redis://``, ``amqp://``."""

from __future__ import annotations

import re

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
