"""A runtime on a workflow set of the test's own, on SQLite, in virtual time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from connectors import RecordingEmailConnector
from engine import VirtualClock, Workflow, build_registry, lifecycle_journey
from engine.runtime import Runtime
from engine.workflow import Guardrails
from tests.support import make_runtime
from workflows.rules import RULES

TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


@contextmanager
def running(
    tmp_path: Path,
    workflows: Sequence[Workflow],
    *,
    guardrails: Guardrails | None = None,
    events: Sequence[str] = (),
    start: datetime | None = None,
) -> Iterator[tuple[Runtime, VirtualClock, RecordingEmailConnector]]:
    registry = build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=workflows,
        templates_dir=TEMPLATES,
        events=events,
        guardrails=guardrails,
    )
    clock = VirtualClock(start or datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # a Monday
    runtime, clock, email = make_runtime(
        f"sqlite:///{tmp_path}/jl.db",
        broker_url="inline://",
        clock=clock,
        outbox_dir=tmp_path / "outbox",
    )
    runtime.registry = registry
    runtime.start()
    try:
        yield runtime, clock, email
    finally:
        runtime.close()


def sent(email: RecordingEmailConnector, to: str | None = None) -> list[str]:
    """The ``workflow:step`` of every email sent (to one address), in order."""
    return [m.categories[1] for m in email.sent if to is None or m.to == to]
