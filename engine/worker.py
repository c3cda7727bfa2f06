"""The module ``dramatiq`` worker processes import: ``dramatiq engine.worker``.

Importing it builds one ``Runtime`` from the environment (``JOURNEYLINE_*``) and makes its
broker the global one, so the worker consumes the jobs the runtime declared on it.
``journeyline worker`` runs exactly that command.
"""

from __future__ import annotations

import logging

import dramatiq

from engine.runtime import Runtime
from engine.settings import Settings

# httpx logs every request at INFO; a worker sending thousands of emails drowns in it.
logging.getLogger("httpx").setLevel(logging.WARNING)
# transitions logs every state change at INFO: one line per event per contact.
logging.getLogger("transitions").setLevel(logging.WARNING)

runtime = Runtime(Settings())
broker = runtime.broker
dramatiq.set_broker(broker)
if runtime.settings.scheduler_in_workers:
    # Start (or rejoin) the periodic scheduler chain; every process sends one, the copies
    # beyond the first stop themselves at their first turn (engine/periodic.py).
    runtime.jobs.scheduler_tick.send()

__all__ = ["broker", "runtime"]
