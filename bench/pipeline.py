"""Events/s through the real per-event pipeline, inline, on SQLite and on PostgreSQL.

``python -m bench.pipeline [--contacts 2000] [--database sqlite|postgresql|both]
[--database-url URL] [--profile FILE] [--smoke]``.

The scenario is fixed: each contact sends three events, one round at a time, and after each
round the inline broker runs every job it caused (``Runtime.track`` -> ``process_contact`` ->
workflow step -> ``perform_action`` through the recording email connector):

1. ``bench.signup`` creates the contact (its ``contact.created`` event is processed too) and
   starts the ``bench_welcome`` workflow: one email, then a three-day wait;
2. ``bench.trial`` scores and fires ``evaluate`` (awareness -> decision), which starts the
   ``bench_decision`` workflow: one email;
3. ``bench.visit`` only scores.

So 3 events and 2 emails per contact; the run fails loudly if any email is missing. Three
figures per database: events/s; this process's CPU time per event (steadier than wall time
on a shared machine); SQL statements and commits per event (exact, counted with
SQLAlchemy's cursor events: PostgreSQL's implicit BEGIN and pool pings are not included).

Baseline, in the same run on the same kind of database (run before and after the engine,
the mean of the two taken): a minimal hand-written pipeline with
SQLAlchemy Core on the same tables, one transaction per event (insert the event, read or
insert the contact, update stage and score, insert the action) and one per email (mark it
sent after the same connector call). The ratio engine / baseline is what to compare across
runs on a noisy machine. ``--profile FILE`` writes a cProfile of each engine run to
``FILE.<database>.prof``.
"""

from __future__ import annotations

import argparse
import cProfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from bench.scheduler import DEFAULT_ADMIN_URL, throwaway_database
from bench.services import contact_row
from connectors.email import RecordingEmailConnector
from connectors.email.base import EmailMessage
from engine.clock import VirtualClock
from engine.db import make_engine
from engine.models import Action, Contact, Event
from engine.registry import Registry, build_registry
from engine.rules import EventRule
from engine.runtime import Runtime
from engine.settings import Settings
from engine.steps import send_email, wait
from engine.workflow import Workflow, on_event, on_stage_entered

TEMPLATES = Path(__file__).resolve().parent.parent / "workflows" / "templates"
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday noon: no window holds anything
ROUNDS = ("bench.signup", "bench.trial", "bench.visit")
EMAILS_PER_CONTACT = 2


def bench_registry() -> Registry:
    return build_registry(
        rules=[
            EventRule("bench.signup", score=1),
            EventRule("bench.trial", score=10, triggers=("evaluate",)),
            EventRule("bench.visit", score=1),
        ],
        workflows=[
            Workflow(
                "bench_welcome",
                trigger=on_event("bench.signup"),
                steps=[send_email("guide", id="welcome"), wait(days=3), send_email("guide")],
            ),
            Workflow(
                "bench_decision",
                trigger=on_stage_entered("decision"),
                steps=[send_email("guide", id="decision")],
            ),
        ],
        templates_dir=TEMPLATES,
    )


@dataclass
class Measured:
    events_per_s: float
    cpu_ms_per_event: float  # this process's CPU time: less sensitive to a busy machine
    statements_per_event: float  # SQL statements + commits: deterministic


class _Counter:
    """Counts SQL statements and commits sent through ``db`` while ``on``."""

    def __init__(self, db: Engine) -> None:
        self.on = False
        self.count = 0
        event.listen(db, "before_cursor_execute", self._hit)
        event.listen(db, "commit", self._hit)

    def _hit(self, *_args: Any) -> None:
        if self.on:
            self.count += 1


@contextmanager
def _timed(counter: _Counter, events: int, out: list[Measured]) -> Iterator[None]:
    counter.on = True
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    counter.on = False
    out.append(Measured(events / wall, cpu * 1000 / events, counter.count / events))


def _email(i: int) -> str:
    return f"contact{i}@bench.example.com"


# --- the engine ---------------------------------------------------------------------------


def run_engine(url: str, contacts: int, *, profile: Path | None = None) -> Measured:
    """The whole pipeline for ``contacts`` x 3 events (schema made fresh)."""
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    counter = _Counter(db)
    measured: list[Measured] = []
    email = RecordingEmailConnector()
    runtime = Runtime(
        Settings(database_url=url, broker_url="inline://"),
        clock=VirtualClock(START),
        registry=bench_registry(),
        email=email,
        db=db,
    )
    profiler = cProfile.Profile() if profile else None
    try:
        # Warm up outside the timing: connections, statement caches, template compilation.
        runtime.track("warmup@bench.example.com", "bench.signup")
        runtime.drain()
        sent_before = len(email.sent)
        if profiler:
            profiler.enable()
        with _timed(counter, contacts * len(ROUNDS), measured):
            for event_type in ROUNDS:
                for i in range(contacts):
                    runtime.track(_email(i), event_type)
                runtime.drain()
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
        sent = len(email.sent) - sent_before
    finally:
        runtime.close()
    if sent != contacts * EMAILS_PER_CONTACT:
        raise RuntimeError(f"engine sent {sent} emails, expected {contacts * EMAILS_PER_CONTACT}")
    return measured[0]


# --- the baseline: a minimal hand-written pipeline -----------------------------------------


def run_baseline(url: str, contacts: int) -> Measured:
    """One Core transaction per event and one per email, same tables."""
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    counter = _Counter(db)
    measured: list[Measured] = []
    email = RecordingEmailConnector()
    try:
        _baseline_event(db, email, "warmup@bench.example.com", "bench.signup", 0)
        seq = 1
        with _timed(counter, contacts * len(ROUNDS), measured):
            for event_type in ROUNDS:
                for i in range(contacts):
                    _baseline_event(db, email, _email(i), event_type, seq)
                    seq += 1
    finally:
        db.dispose()
    if len(email.sent) - 1 != contacts * EMAILS_PER_CONTACT:
        raise RuntimeError(f"baseline sent {len(email.sent) - 1} emails")
    return measured[0]


def _baseline_event(
    db: Engine, email: RecordingEmailConnector, address: str, event_type: str, seq: int
) -> None:
    contacts: Any = Contact.__table__  # type: ignore[attr-defined]
    events: Any = Event.__table__  # type: ignore[attr-defined]
    actions: Any = Action.__table__  # type: ignore[attr-defined]
    now = START
    action_id = None
    with db.begin() as conn:
        row = conn.execute(
            select(contacts.c.id, contacts.c.stage, contacts.c.score).where(
                contacts.c.email == address
            )
        ).first()
        if row is None:
            contact_id = conn.execute(
                insert(contacts).values(**contact_row(address, now=now)).returning(contacts.c.id)
            ).scalar_one()
            stage, score = "awareness", 0
        else:
            contact_id, stage, score = row
        conn.execute(
            insert(events).values(
                contact_id=contact_id,
                type=event_type,
                properties={},
                source="api",
                idempotency_key=f"api:bench:{seq}",
                status="processed",
                occurred_at=now,
                received_at=now,
                processed_at=now,
            )
        )
        sends = event_type == "bench.signup" or (
            event_type == "bench.trial" and stage == "awareness"
        )
        if event_type == "bench.trial" and stage == "awareness":
            stage = "decision"
        conn.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values(stage=stage, score=score + 1, updated_at=now)
        )
        if sends:
            action_id = conn.execute(
                insert(actions)
                .values(
                    contact_id=contact_id,
                    kind="email",
                    payload={"template": "guide"},
                    idempotency_key=f"bench:{seq}",
                    status="pending",
                    reason={},
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(actions.c.id)
            ).scalar_one()
    if action_id is None:
        return
    with db.begin() as conn:
        result = email.send(
            EmailMessage(
                to=address,
                sender="bench@example.com",
                subject="Your guide",
                text="Hello",
                html="<p>Hello</p>",
                idempotency_key=f"action:{action_id}",
                sent_at=now,
            )
        )
        conn.execute(
            update(actions)
            .where(actions.c.id == action_id)
            .values(status="sent", provider_id=result.provider_id, completed_at=now)
        )


# --- running ------------------------------------------------------------------------------


@contextmanager
def _database(kind: str, url: str | None, work_dir: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        with throwaway_database(f"sqlite:///{work_dir / name}.db") as db_url:
            yield db_url
    else:
        with throwaway_database(url) as db_url:
            yield db_url


def run(
    kind: str, contacts: int, *, url: str | None, work_dir: Path, profile: Path | None
) -> list[Result]:
    # The baseline runs before and after the engine and its mean is used, so a change in
    # the machine's load during the run shifts both sides alike.
    baselines = []
    for turn in ("before", "after"):
        if turn == "after":
            with _database(kind, url, work_dir, "bench_pipeline_engine") as db_url:
                engine = run_engine(
                    db_url,
                    contacts,
                    profile=profile.with_suffix(f".{kind}.prof") if profile else None,
                )
        with _database(kind, url, work_dir, f"bench_pipeline_baseline_{turn}") as db_url:
            baselines.append(run_baseline(db_url, contacts))
    label = f"{kind}, {contacts:,} contacts x {len(ROUNDS)} events"

    def mean(pick: Callable[[Measured], float]) -> float:
        return sum(pick(b) for b in baselines) / len(baselines)

    return [
        Result.of(
            f"{label}: events/s (baseline: hand-written Core pipeline)",
            engine.events_per_s,
            "events/s",
            mean(lambda m: m.events_per_s),
        ),
        Result.of(
            f"{label}: CPU of this process per event (baseline: the same)",
            engine.cpu_ms_per_event,
            "ms",
            mean(lambda m: m.cpu_ms_per_event),
        ),
        Result.of(
            f"{label}: SQL statements + commits per event (baseline: the same)",
            engine.statements_per_event,
            "statements",
            mean(lambda m: m.statements_per_event),
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--database-url", default=None, help=f"PostgreSQL admin URL (default {DEFAULT_ADMIN_URL})"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where SQLite files go (default: a temp dir)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="cProfile stats: FILE.<db>.prof")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    contacts = 30 if args.smoke else args.contacts
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    rows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="jl-bench-") as scratch:
        for kind in kinds:
            rows += run(
                kind,
                contacts,
                url=args.database_url,
                work_dir=args.work_dir or Path(scratch),
                profile=args.profile,
            )
    print_results(f"bench.pipeline (inline broker, {contacts:,} contacts)", rows)
    path = write_json("pipeline", rows, contacts=contacts, databases=list(kinds), smoke=args.smoke)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.pipeline")
