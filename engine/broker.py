"""Dramatiq brokers from a URL: ``stub://`` (in-process worker threads), ``inline://``
(jobs run in the caller's thread, for virtual-time runs), ``redis://``, ``amqp://``."""

from __future__ import annotations

from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker

from engine.errors import ConfigurationError


def broker_errors() -> tuple[type[BaseException], ...]:
    """The errors of a broker that cannot take a message (down, refusing, out of memory):
    Dramatiq's for RabbitMQ; its Redis broker lets redis-py's through."""
    from dramatiq.errors import ConnectionClosed, ConnectionFailed
    from redis.exceptions import RedisError

    return (ConnectionClosed, ConnectionFailed, RedisError)


def describe_broker_error(exc: BaseException) -> str:
    """A broker's refusal on one line, for an operator: ``ConnectionError: Error 111 ...``."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split()).rstrip('.')}"


def build_broker(url: str) -> Broker:
    scheme = url.split("://", 1)[0].lower()
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
    raise ConfigurationError(
        f"broker URL {url!r}: unknown scheme {scheme!r}; use stub://, redis:// or amqp://"
    )
