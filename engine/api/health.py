"""Liveness and readiness: ``/healthz`` (the process answers), ``/readyz`` (it can work).

Readiness asks the database for its Alembic revision (one query, which also proves it
answers) and the broker for a cheap round trip (Redis ``PING``, a RabbitMQ connection), each
on a connection with a timeout; the in-process stub broker is always ready. A failing part
answers 503 naming it: a database whose schema is older than the code (or never migrated)
says so and to run ``journeyline db upgrade``; other failures name only the error's type,
their details go to the log, not to the unauthenticated caller. One answer serves the
requests of the next second (``READINESS_MAX_AGE_SECONDS``), checked by one request at a
time.
"""

from __future__ import annotations

import logging
import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING, Literal

from dramatiq import Broker
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from engine import migrations
from engine.api.deps import RuntimeDep
from engine.broker import BROKER_TIMEOUT_SECONDS, ping_broker
from engine.db_errors import schema_behind
from engine.errors import ConfigurationError
from engine.single_flight import SingleFlight

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


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
    checks = _recent_checks(runtime)
    ready = all(result == "ok" for result in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


READINESS_MAX_AGE_SECONDS = 1.0
"""How long one readiness answer serves other requests. The endpoint needs no key: without
this, a flood of requests while the broker is slow would each open a broker connection and
a database connection (up to 3 s each), tying up the threads the track API shares."""


# Each runtime's checks, for as long as the runtime lives (a test makes many runtimes).
_CHECKS: weakref.WeakKeyDictionary[Runtime, SingleFlight[dict[str, str]]] = (
    weakref.WeakKeyDictionary()
)
_GUARD = threading.Lock()


def _recent_checks(runtime: Runtime) -> dict[str, str]:
    """The parts' checks, at most ``READINESS_MAX_AGE_SECONDS`` old, made by one request
    at a time: requests meanwhile get the last answer (the first ones wait for it)."""
    with _GUARD:
        checks = _CHECKS.get(runtime)
        if checks is None:
            checks = _CHECKS[runtime] = SingleFlight(partial(_check_parts, weakref.ref(runtime)))
    answer = checks.get(READINESS_MAX_AGE_SECONDS)
    assert answer is not None  # the first callers wait for the first answer
    return answer


def _check_parts(runtime_ref: weakref.ref[Runtime]) -> dict[str, str]:
    runtime = runtime_ref()
    assert runtime is not None  # only asked while a request holds it
    return {"database": check_database(runtime.db), "broker": check_broker(runtime.broker)}


def check_database(db: Engine) -> str:
    """'ok' when the database answers at the schema this code needs; else what is wrong."""
    try:
        with db.connect() as connection:
            found = list(connection.execute(migrations.REVISION_QUERY).scalars())
    except Exception as exc:
        if schema_behind(exc):  # no alembic_version table
            return "the database was never migrated: run journeyline db upgrade"
        log.warning("readiness: database check failed: %s", exc)
        return f"failed: {type(exc).__name__}"
    try:
        problem = migrations.schema_problem(found)
    except ConfigurationError as exc:  # no migration scripts beside the code: cannot tell
        log.warning("readiness: the schema's revision was not checked: %s", exc)
        return "ok"
    if problem is not None:
        log.warning("readiness: %s", problem)
        return problem
    return "ok"


def check_broker(broker: Broker) -> str:
    try:
        ping_broker(broker, timeout_seconds=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness: broker check failed: %s", exc)
        return f"failed: {type(exc).__name__}"
    return "ok"
