"""The module ``dramatiq`` worker processes import: ``dramatiq engine.worker``.

Importing it builds one ``Runtime`` from the environment (``JOURNEYLINE_*``) and makes its
broker the global one, so the worker consumes the jobs the runtime declared on it.
``journeyline worker`` runs exactly that command.
"""

from __future__ import annotations

import logging
import sys

import dramatiq
import pydantic
from pydantic_settings import SettingsError

from engine.broker import broker_errors, describe_broker_error
from engine.errors import ConfigurationError
from engine.runtime import Runtime
from engine.settings import Settings, describe_settings_error, environment_problems

# httpx logs every request at INFO; a worker sending thousands of emails drowns in it.
logging.getLogger("httpx").setLevel(logging.WARNING)
# transitions logs every state change at INFO: one line per event per contact.
logging.getLogger("transitions").setLevel(logging.WARNING)


def _settings() -> Settings:
    """The settings from the environment; a bad variable stops the worker with one line per
    variable, named as the operator set it (``dramatiq engine.worker`` may be run directly,
    not only through ``journeyline worker``, which checks them first)."""
    lines = environment_problems()
    try:
        loaded = Settings()
    except (pydantic.ValidationError, SettingsError) as exc:
        lines += describe_settings_error(exc)
    if lines:
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    return loaded


settings = _settings()
# Dramatiq sets up the handlers; JOURNEYLINE_LOG_LEVEL says how much of ours reaches them.
for name in ("engine", "connectors"):
    logging.getLogger(name).setLevel(settings.log_level)
try:
    runtime = Runtime(settings)
except ConfigurationError as exc:  # a setting that reads well but cannot work (a database
    # URL of no database we run on, HubSpot without its token): one line, not a traceback
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
broker = runtime.broker
dramatiq.set_broker(broker)
if runtime.settings.scheduler_in_workers:
    # Start (or rejoin) the periodic scheduler chain; every process sends one, the copies
    # beyond the first stop themselves at their first turn (engine/periodic.py).
    try:
        runtime.jobs.scheduler_tick.send()
    except broker_errors() as exc:  # the worker still starts: its consumers wait for the
        # broker, and the runtime's chain watch sends a probe once the chain is overdue
        logging.getLogger(__name__).warning(
            "the broker did not take the scheduler's first tick (%s); the chain watch "
            "starts it once the broker answers",
            describe_broker_error(exc),
        )

__all__ = ["broker", "runtime"]
