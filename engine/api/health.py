"""Liveness and readiness: ``/healthz`` (the process answers), ``/readyz`` (it can work).

Readiness asks the database for ``SELECT 1`` and the broker for a cheap round trip (Redis
``PING``, a RabbitMQ connection); the in-process stub broker is always ready. A failing part
answers 503 naming it; the details go to the log, not to the unauthenticated caller.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.engine import Engine

from engine.api.deps import RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_SECONDS = 3.0


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(
        description="Each part and 'ok', or why it failed.",
        examples=[{"database": "ok", "broker": "ok"}],
    )


@router.get("/healthz", summary="The process is alive")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="The database and the broker answer",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A part failed; `checks` says which."}},
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = {"database": check_database(runtime.db), "broker": check_broker(runtime.broker)}
    ready = all(result == "ok" for result in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def check_database(db: Engine) -> str:
    try:
        with db.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        return f"failed: {type(exc).__name__}"
    return "ok"


def check_broker(broker: Broker) -> str:
    if isinstance(broker, StubBroker):
        return "ok"
    try:
        _ping(broker)
    except Exception as exc:
        log.warning("readiness: broker check failed: %s", exc)
        return f"failed: {type(exc).__name__}"
    return "ok"


def _ping(broker: Broker) -> None:
    client = getattr(broker, "client", None)
    if client is not None:  # RedisBroker
        client.ping()
        return
    parameters = getattr(broker, "parameters", None)
    if parameters is not None:  # RabbitmqBroker: one short-lived connection of our own
        import pika

        chosen = copy.copy(parameters[0] if isinstance(parameters, list) else parameters)
        chosen.connection_attempts = 1
        chosen.socket_timeout = BROKER_TIMEOUT_SECONDS
        chosen.blocked_connection_timeout = BROKER_TIMEOUT_SECONDS
        pika.BlockingConnection(chosen).close()
        return
    raise RuntimeError(f"no readiness check for {type(broker).__name__}")
