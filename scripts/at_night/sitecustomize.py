"""Run Journeyline at 22:30 UTC: ``PYTHONPATH=scripts/at_night make test``.

Python imports ``sitecustomize`` at start-up from the path, so every process of the run (the
test session, and the API, worker and scheduler processes it starts, which inherit the
environment) sees ``SystemClock`` start at 22:30 UTC today and run on from there. That is
inside the default playbook's quiet hours for contacts in UTC and in Europe: a test on the
wall clock that forgot them (see ``engine.testing.midday_zone``) fails here by day, as it
would in a CI run at night. Only ``SystemClock`` moves (``time.time`` does not), so a test
must take "now" from the same clock as the code it checks.
"""

import builtins
import sys
from datetime import UTC, datetime
from typing import Any

_STARTED = datetime.now(UTC)
_NIGHT = _STARTED.replace(hour=22, minute=30, second=0, microsecond=0)
_import = builtins.__import__


def _night_now(_clock: object) -> datetime:
    return _NIGHT + (datetime.now(UTC) - _STARTED)


def _import_then_move_the_clock(name: str, *args: Any, **kwargs: Any) -> Any:
    """``__import__`` until ``engine.clock`` has been loaded, then patch it once. (An import
    hook on ``sys.meta_path`` is not enough: pytest's assertion rewriter loads the ``engine``
    package itself, since the package registers a pytest plugin.)"""
    module = _import(name, *args, **kwargs)
    clock = sys.modules.get("engine.clock")
    if clock is not None and hasattr(clock, "SystemClock"):
        builtins.__import__ = _import
        clock.SystemClock.now = _night_now
    return module


builtins.__import__ = _import_then_move_the_clock
