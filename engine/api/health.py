"""Liveness and readiness: ``/healthz`` (the process answers), ``/readyz`` (it can work).

Readiness asks the database for its Alembic revision (one query, which also proves it
answers) and the broker for a cheap round trip (Redis ``PING``, a RabbitMQ connection), both
at once, each waited for ``DATABASE_TIMEOUT_SECONDS`` / ``BROKER_TIMEOUT_SECONDS`` at most;
the in-process stub broker is always ready. ``/healthz`` asks nothing and is answered on the
event loop, never queued behind requests that wait for the database.

The database's drivers have no timeout of their own for an answer that never comes (a
paused network, a server stuck on a lock), so its query runs in a thread of its own, one at
a time per database (``OneAtATime``): a check that outlives its timeout fails with
``TimeoutError``, and the next checks wait for that same query rather than start more
beside it. A failing part answers 503 naming it: a database whose schema is older than the
code (or never migrated) says so and to run ``journeyline db upgrade``; other failures name
only the error's type, their details go to the log, not to the unauthenticated caller. One
answer serves the requests of the next second (``READINESS_MAX_AGE_SECONDS``), checked by
one request at a time.
"""

from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
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
from engine.one_at_a_time import OneAtATime
from engine.single_flight import SingleFlight

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

DATABASE_TIMEOUT_SECONDS = 3.0
"""How long a readiness check or a scrape waits for the database to answer."""


# One database probe at a time per engine, for as long as the engine lives.
_DATABASE_PROBES: weakref.WeakKeyDictionary[Engine, OneAtATime[list[str]]] = (
    weakref.WeakKeyDictionary()
)


def _revisions(db: Engine) -> list[str]:
    with db.connect() as connection:
        return list(connection.execute(migrations.REVISION_QUERY).scalars())


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(
        description="Each part and 'ok', or why it failed.",
        examples=[{"database": "ok", "broker": "ok"}],
    )


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    """Answered on the event loop itself, never in the thread pool: while the database hangs,
    requests waiting for it fill the pool, and a liveness probe queued behind them would
    time out and get every API process restarted for an outage that is not theirs."""
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


# Load balancers and uptime monitors often probe with HEAD: the same answer without its body
# (FastAPI serves HEAD only where asked; kept out of the OpenAPI document, as usual).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


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
    """Both parts at once: a hung database and a hung broker answer within one timeout,
    not the sum of theirs."""
    runtime = runtime_ref()
    assert runtime is not None  # only asked while a request holds it
    with ThreadPoolExecutor(1, thread_name_prefix="journeyline-readiness-broker") as pool:
        broker = pool.submit(check_broker, runtime.broker)
        database = check_database(runtime.db)
        return {"database": database, "broker": broker.result()}


def check_database(db: Engine, *, timeout_seconds: float = DATABASE_TIMEOUT_SECONDS) -> str:
    """'ok' when the database answers at the schema this code needs, within
    ``timeout_seconds``; else what is wrong."""
    with _GUARD:
        probe = _DATABASE_PROBES.get(db)
        if probe is None:
            probe = _DATABASE_PROBES[db] = OneAtATime("journeyline-readiness-database")
    try:
        found = probe.run(partial(_revisions, db), timeout_seconds=timeout_seconds)
    except TimeoutError:
        log.warning("readiness: the database did not answer within %g s", timeout_seconds)
        return "failed: TimeoutError"
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
