"""Virtual time tells the truth: a scenario run by the harness and the same scenario run on
PostgreSQL + Redis with a real ``dramatiq`` worker process and the scheduler send the same
emails, step for step, to every contact.

The scenario's waits are seconds long so the real run takes seconds of wall time. What
decides each contact's path (a download before the demo request, a purchase right after it,
the A/B draw keyed by contact id) is settled in the order events arrive, never by a race
with the clock, so both runs are deterministic: contacts are created in the same order in
both, and the order that converts a contact is tracked long before its wait ends.

The branch here asks ``did_event(..., within=timedelta(hours=1)``, a window on when events
occurred, which means the same in both runs. (``did_event(type)`` without ``within``, "since
entering", counts the events that came in after the one that started the enrollment, by id,
so it too is the same in both.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from engine import Settings, SystemClock
from engine.db import make_engine
from engine.models import Action, Contact, Enrollment
from engine.runtime import Runtime
from engine.testing import Simulation
from tests.support import stop_processes

REPO = Path(__file__).parent.parent
TEMPLATES = REPO / "workflows" / "templates"
MODULE = "eq_flows"

FLOWS = """
from datetime import timedelta
from engine import Workflow, branch, did_event, on_event, send_email, split, wait
from workflows.rules import RULES
from workflows.stages import JOURNEY

WORKFLOWS = [
    Workflow(
        "eq_demo",
        trigger=on_event("demo.requested"),
        goals=[on_event("order.completed")],
        steps=[
            send_email("welcome", id="hello"),
            branch(
                did_event("content.downloaded", within=timedelta(hours=1)),
                then=[send_email("guide", id="guide")],
                otherwise=[send_email("demo_invitation", id="invite")],
            ),
            split(
                A=[send_email("trial_offer", id="offer_a")],
                B=[send_email("trial_offer", id="offer_b", data={"discount": 30})],
                weights={"A": 50, "B": 50},
                id="offer",
            ),
            wait(timedelta(seconds=3)),
            send_email("trial_reminder", id="reminder"),
        ],
    ),
]
"""

# (email, event type), in the order both runs track them.
SCENARIO: list[tuple[str, str]] = [
    ("ann@example.com", "demo.requested"),
    ("ben@example.com", "content.downloaded"),
    ("ben@example.com", "demo.requested"),
    ("cat@example.com", "demo.requested"),
    ("cat@example.com", "order.completed"),  # buys before the wait ends: converted
    ("dan@example.com", "content.downloaded"),
    ("dan@example.com", "demo.requested"),
    ("dan@example.com", "order.completed"),
    ("eve@example.com", "page.viewed"),  # never asks for a demo: no email from eq_demo
    *((f"lead{i}@example.com", "demo.requested") for i in range(6)),
]


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "flows"
    (folder / MODULE).mkdir(parents=True)
    (folder / MODULE / "__init__.py").write_text(FLOWS)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)


def emails_by_contact(db: Engine) -> dict[str, list[str]]:
    """Each contact's sent emails as ``workflow:step``, in the order they were written."""
    with Session(db) as session:
        rows = session.exec(
            select(Contact.email, Action.reason)
            .join(Contact, col(Contact.id) == col(Action.contact_id))
            .where(Action.kind == "email", Action.status == "sent")
            .order_by(col(Action.id))
        ).all()
    found: dict[str, list[str]] = {}
    for email, reason in rows:
        found.setdefault(email, []).append(f"{reason['workflow']}:{reason['step']}")
    return found


def virtual_run() -> dict[str, list[str]]:
    with Simulation(MODULE, templates_dir=TEMPLATES) as sim:
        for email, event_type in SCENARIO:
            sim.track(email, event_type)
        sim.advance(seconds=30)
        return emails_by_contact(sim.runtime.db)


def _settled(db: Engine) -> bool:
    """Every enrollment has ended and every action reached a final status."""
    with Session(db) as session:
        running = session.exec(
            select(Enrollment.id).where(col(Enrollment.status).in_(("active", "waiting")))
        ).first()
        busy = session.exec(
            select(Action.id).where(col(Action.status).in_(("pending", "sending")))
        ).first()
        started = session.exec(select(Enrollment.id)).first()
    return started is not None and running is None and busy is None


def real_run(pg_db_url: str, redis_url: str, flows: Path, outbox: Path) -> dict[str, list[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(flows), str(REPO)]),
        "JOURNEYLINE_DATABASE_URL": pg_db_url,
        "JOURNEYLINE_BROKER_URL": redis_url,
        "JOURNEYLINE_WORKFLOWS": MODULE,
        "JOURNEYLINE_TEMPLATES_DIR": str(TEMPLATES),
        "JOURNEYLINE_EMAIL_CONNECTOR": "outbox",
        "JOURNEYLINE_OUTBOX_DIR": str(outbox),
        "JOURNEYLINE_SCHEDULER_INTERVAL_SECONDS": "0.2",
    }
    cli = [sys.executable, "-m", "engine.cli"]
    options = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    processes = [
        subprocess.Popen([*cli, "worker", "--processes", "1", "--threads", "4"], **options),  # type: ignore[call-overload]
        subprocess.Popen([*cli, "scheduler"], **options),  # type: ignore[call-overload]
    ]
    settings = Settings(
        database_url=pg_db_url,
        broker_url=redis_url,
        workflows=MODULE,
        templates_dir=TEMPLATES,
        outbox_dir=outbox,
    )
    producer = Runtime(settings, clock=SystemClock())
    db = make_engine(pg_db_url)
    try:
        for email, event_type in SCENARIO:
            producer.track(email, event_type)
        deadline = time.monotonic() + 90
        while not _settled(db):
            if time.monotonic() > deadline:
                outputs = stop_processes(processes)
                raise AssertionError(
                    f"the real run did not settle in 90 s; sent so far {emails_by_contact(db)};"
                    f" processes said:\n" + "\n---\n".join(o[-3000:] for o in outputs)
                )
            time.sleep(0.2)
        time.sleep(1.0)  # a second send, were there one, has the time to show up
        return emails_by_contact(db)
    finally:
        producer.close()
        db.dispose()
        for output in stop_processes(processes):
            assert "Traceback" not in output, output


# What the scenario must send (the split draws by contact id: the same in both runs).
def _expected_paths(sent: dict[str, list[str]]) -> None:
    def offer(email: str) -> str:
        (step,) = [s for s in sent[email] if s.startswith("eq_demo:offer_")]
        return step

    assert sent["ann@example.com"] == [
        "eq_demo:hello",
        "eq_demo:invite",
        offer("ann@example.com"),
        "eq_demo:reminder",
    ]
    assert sent["ben@example.com"][1] == "eq_demo:guide"
    assert sent["cat@example.com"] == ["eq_demo:hello", "eq_demo:invite", offer("cat@example.com")]
    assert sent["dan@example.com"] == ["eq_demo:hello", "eq_demo:guide", offer("dan@example.com")]
    assert "eve@example.com" not in sent
    offers = {offer(email) for email in sent}
    assert offers == {"eq_demo:offer_a", "eq_demo:offer_b"}, "both variants are drawn"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_virtual_time_and_a_real_worker_send_the_same_emails(
    pg_db_url: str, redis_url: str, flows: Path, tmp_path: Path
) -> None:
    # Given the scenario in virtual time (SQLite, inline broker, virtual clock)
    virtual = virtual_run()
    _expected_paths(virtual)

    # When it runs on PostgreSQL + Redis with a worker process, the scheduler and real waits
    outbox = tmp_path / "outbox"
    real = real_run(pg_db_url, redis_url, flows, outbox)

    # Then every contact got the same emails, in the same order, and each is a real file
    assert real == virtual
    assert len(list(outbox.glob("*.eml"))) == sum(len(steps) for steps in real.values())
