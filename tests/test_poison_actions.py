"""An action that cannot be built (its template's own code raises) ends ``failed`` with its
error, where ``journeyline actions --failed`` shows it and ``actions retry`` reaches it; it
was left ``pending`` for the broker to retry for ever (on-call probe)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from connectors import SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import (
    Settings,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    send_email,
)
from engine.db import make_engine
from engine.models import Action, ActionStatus, metadata
from engine.runtime import Runtime
from tests.test_broadcast import KEY
from workflows.rules import RULES

BOOM = (
    "{% block subject %}Hello {{ 1 // (contact.score * 0) }}{% endblock %}"
    "{% block text %}Hello{% endblock %}"
)
WORKFLOW = Workflow(
    "poisoned", trigger=on_event("demo.requested"), steps=[send_email("boom", id="boom")]
)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "batched"])
def test_a_template_that_raises_fails_its_action_visibly(
    tmp_path: Path, fake: FakeSendGrid, batched: bool
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "boom.j2").write_text(BOOM)
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[WORKFLOW], templates_dir=templates
    )
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    metadata.create_all(db)
    email = SendGridEmailConnector(api_key=KEY, host=fake.url, timeout_s=30.0)
    if not batched:
        email.batch_size = 1  # type: ignore[misc]  # one request per email: the single path
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://", outbox_dir=tmp_path / "outbox"),
        clock=VirtualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
        registry=registry,
        email=email,
        db=db,
    )
    try:
        runtime.track("ana@example.com", "demo.requested")
        runtime.run_until_idle()
        with Session(runtime.db) as session:
            (action,) = session.exec(select(Action)).all()
        assert action.status == ActionStatus.FAILED
        assert "ZeroDivisionError" in (action.error or "")
        assert "boom" in (action.error or "")
        assert fake.requests == []
    finally:
        runtime.close()
