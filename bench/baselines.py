"""The end-to-end benchmark's baselines, as Dramatiq actors: ``dramatiq bench.baselines``.

(a) ``noop``: a bare actor that does nothing: the most the same worker settings can drain.

(b) ``hand_process`` then ``hand_send``: the minimal pipeline a user would write with the
same packages, one job per event: read the contact (row lock), fire the trigger on a
``transitions.Machine``, update the contact, enqueue the email job; the email job builds
the payload with the ``sendgrid`` package and POSTs it through one shared ``httpx.Client``.
No action rows, no idempotency, no workflow: that is what it leaves out.

Configured by ``BENCH_REDIS_URL``, ``BENCH_DATABASE_URL`` and ``BENCH_SENDGRID_URL``;
``create_schema`` makes its one table.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker
from sendgrid.helpers.mail import Mail
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from transitions import Machine

NOOP_QUEUE = "bench_noop"
HAND_QUEUE = "bench_hand"
API_KEY = "SG.bench-key"
STAGES = [
    "awareness",
    "consideration",
    "decision",
    "purchase",
    "onboarding",
    "engagement",
    "retention",
    "loyalty",
    "advocacy",
    "churned",
]
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "qualify", "source": "awareness", "dest": "consideration"},
    {"trigger": "evaluate", "source": ["awareness", "consideration"], "dest": "decision"},
    {
        "trigger": "purchase",
        "source": ["awareness", "consideration", "decision"],
        "dest": "purchase",
    },
]
SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_contacts (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    stage TEXT NOT NULL,
    score INTEGER NOT NULL DEFAULT 0
)
"""

logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("transitions").setLevel(logging.WARNING)

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
dramatiq.set_broker(broker)

_lock = threading.Lock()
_resources: dict[str, Any] = {}


def create_schema(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text(SCHEMA))


def _db() -> Engine:
    with _lock:
        if "db" not in _resources:
            _resources["db"] = create_engine(
                os.environ["BENCH_DATABASE_URL"], pool_size=10, max_overflow=20
            )
        return _resources["db"]  # type: ignore[no-any-return]


def _http() -> httpx.Client:
    with _lock:
        if "http" not in _resources:
            _resources["http"] = httpx.Client(timeout=10)
        return _resources["http"]  # type: ignore[no-any-return]


class Lead:
    state: str


@dramatiq.actor(queue_name=NOOP_QUEUE, max_retries=0)
def noop(i: int) -> None:
    """Nothing: the ceiling of the worker settings."""


@dramatiq.actor(queue_name=HAND_QUEUE, max_retries=0)
def hand_process(contact_id: int, trigger: str) -> None:
    with _db().begin() as conn:
        row = conn.execute(
            text("SELECT email, stage FROM bench_contacts WHERE id = :id FOR UPDATE"),
            {"id": contact_id},
        ).one()
        lead = Lead()
        Machine(
            model=lead,
            states=STAGES,
            transitions=TRANSITIONS,
            initial=row.stage,
            auto_transitions=False,
        )
        lead.trigger(trigger)  # type: ignore[attr-defined]
        conn.execute(
            text("UPDATE bench_contacts SET stage = :stage, score = score + 25 WHERE id = :id"),
            {"stage": lead.state, "id": contact_id},
        )
    hand_send.send(row.email, lead.state)


@dramatiq.actor(queue_name=HAND_QUEUE, max_retries=0)
def hand_send(email: str, stage: str) -> None:
    payload = Mail(
        from_email="hello@journeyline.example",
        to_emails=email,
        subject=f"Welcome to the {stage} stage",
        plain_text_content=f"Hello {email}, here is your offer.",
    ).get()
    url = f"{os.environ['BENCH_SENDGRID_URL']}/v3/mail/send"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        response = _http().post(url, json=payload, headers=headers)
    except httpx.TransportError:
        # A pooled keep-alive connection the server had just closed ("connection reset by
        # peer"): what any careful hand-written sender does, try once more on a fresh one.
        response = _http().post(url, json=payload, headers=headers)
    response.raise_for_status()
