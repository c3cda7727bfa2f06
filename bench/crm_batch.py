"""HubSpot requests and time for N contacts reaching an ``update_crm`` step at once: batched
(``perform_crm_batch``, 100 contacts a job) vs one ``perform_action`` per contact.

``python -m bench.crm_batch [--contacts 1000] [--smoke]``.

In one process: a SQLite database in a temporary folder, the inline broker, ``FakeHubSpot``
on 127.0.0.1, and a workflow whose only step is ``update_crm`` (plus the mirrored score and
workflow properties), broadcast to N contacts in ``consideration``. Two scenarios: contacts
new to HubSpot, and contacts HubSpot already has at ``lead`` (so their lifecycle stage moves
forward). Baseline in the same run: the same scenario with ``JOURNEYLINE_HUBSPOT_BATCH_SIZE=1``
(per contact: upsert, look up, PATCH the stage).

Measured: requests the fake received, and wall time from the broadcast to the last action
recorded, with the client-side limiter opened wide so that the time is the engine's and
HTTP's. Real HubSpot allows 100 requests per 10 s to a Free/Starter private app: the third
figure is the least time that limit imposes on those requests (requests / 10 per second).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlmodel import Session, col, func, select

from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from bench.services import contact_row
from connectors.fakes import FakeHubSpot
from engine import (
    Segment,
    Settings,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_segment_joined,
    stage_in,
    update_crm,
)
from engine.db import make_engine
from engine.models import Action, Contact, metadata
from engine.runtime import Runtime

TOKEN = "pat-bench"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HUBSPOT_REQUESTS_PER_S = 100 / 10  # a Free/Starter private app
WORKFLOW = Workflow(
    "crm_handoff",
    trigger=on_segment_joined(Segment("considering", stage_in("consideration"))),
    steps=[update_crm(lead_source="journeyline", id="mirror")],
)


def run_once(contacts: int, *, batch_size: int, existing: bool, work: Path) -> tuple[int, float]:
    """(requests HubSpot received, seconds from broadcast to the last action recorded)."""
    url = f"sqlite:///{work}/bench-{batch_size}-{existing}.db"
    db = make_engine(url)
    metadata.create_all(db)
    emails = [f"c{i}@example.com" for i in range(contacts)]
    with Session(db) as session:
        session.execute(
            insert(Contact), [contact_row(e, now=START, stage="consideration") for e in emails]
        )
        session.commit()
    templates = work / "templates"
    templates.mkdir(exist_ok=True)
    registry = build_registry(
        journey=lifecycle_journey(), workflows=[WORKFLOW], templates_dir=templates
    )
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as fake:
        if existing:
            for email in emails:
                fake.add_contact(email, lifecyclestage="lead")
        settings = Settings(
            database_url=url,
            broker_url="inline://",
            outbox_dir=work / "outbox",
            crm_connector="hubspot",
            hubspot_token=TOKEN,
            hubspot_base_url=fake.url,
            hubspot_max_per_interval=1_000_000,  # time the work, not HubSpot's pacing
            hubspot_batch_size=batch_size,
        )
        runtime = Runtime(settings, clock=VirtualClock(START), registry=registry, db=db)
        try:
            started = time.perf_counter()
            runtime.broadcast(WORKFLOW.name)
            runtime.run_until_idle()
            elapsed = time.perf_counter() - started
            with Session(db) as session:
                sent = session.exec(
                    select(func.count()).where(
                        col(Action.kind) == "crm.update", col(Action.status) == "sent"
                    )
                ).one()
        finally:
            runtime.close()
        if sent != contacts:
            raise RuntimeError(f"{sent} of {contacts} crm.update actions sent")
        return len(fake.requests), elapsed


def run(contacts: int, work: Path) -> tuple[list[Result], dict[str, int]]:
    rows: list[Result] = []
    counts: dict[str, int] = {}
    for existing, label in ((False, "new contacts"), (True, "existing contacts")):
        batched, batched_s = run_once(contacts, batch_size=100, existing=existing, work=work)
        single, single_s = run_once(contacts, batch_size=1, existing=existing, work=work)
        counts[f"{label}: batched"], counts[f"{label}: one per action"] = batched, single
        rows += [
            Result.of(f"HubSpot requests, {label}", batched, "requests", single),
            Result.of(f"wall time, {label}", batched_s, "s", single_s),
            Result.of(
                f"least time at 100 req/10 s, {label}",
                batched / HUBSPOT_REQUESTS_PER_S,
                "s",
                single / HUBSPOT_REQUESTS_PER_S,
            ),
        ]
    return rows, counts


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.crm_batch", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1000, help="contacts at the step")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    contacts = 30 if args.smoke else args.contacts
    with tempfile.TemporaryDirectory(prefix="jl-bench-crm-") as tmp:
        rows, counts = run(contacts, Path(tmp))
    title = f"bench.crm_batch ({contacts:,} contacts at an update_crm step; baseline: one by one)"
    print_results(title, rows)
    path = write_json("crm_batch", rows, contacts=contacts, requests=counts, smoke=args.smoke)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.crm_batch")
