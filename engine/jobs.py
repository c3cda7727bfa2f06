"""The Dramatiq jobs of a runtime, declared on its own broker (see ``engine/runtime.py``).

Each job's body is a ``Runtime`` method, looked up when the job runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec

import dramatiq

from engine.periodic import START
from engine.scheduler_chain import JOBS_MODULE, SchedulerChain

if TYPE_CHECKING:
    from engine.runtime import Runtime

_P = ParamSpec("_P")

QUEUE = "journeyline"
TRANSACTIONAL_QUEUE = "journeyline_transactional"


@dataclass(frozen=True)
class Jobs:
    process_contact: dramatiq.Actor[[int], None]
    process_contacts: dramatiq.Actor[[list[int]], None]
    perform_action: dramatiq.Actor[[int], None]
    perform_transactional: dramatiq.Actor[[int], None]
    perform_actions: dramatiq.Actor[[list[int]], None]
    perform_transactional_actions: dramatiq.Actor[[list[int]], None]
    wake_enrollment: dramatiq.Actor[[int], None]
    wake_enrollments: dramatiq.Actor[[list[int]], None]
    perform_email_batch: dramatiq.Actor[[list[int]], None]
    perform_transactional_batch: dramatiq.Actor[[list[int]], None]
    perform_crm_batch: dramatiq.Actor[[list[int]], None]
    fire_schedule: dramatiq.Actor[[int], None]
    # ``(token: str = START)``: a parameter list with a default has no spelling here.
    scheduler_tick: dramatiq.Actor[..., None]


def declare_jobs(runtime: Runtime, chain: SchedulerChain) -> Jobs:
    """Declare the runtime's jobs on its broker; ``scheduler_tick`` through its ``chain``."""

    def process_contact(contact_id: int) -> None:
        runtime.process_contact(contact_id)

    def process_contacts(contact_ids: list[int]) -> None:
        runtime.process_contacts(contact_ids)

    def perform_action_job(action_id: int) -> None:
        runtime.perform(action_id)

    def perform_transactional_job(action_id: int) -> None:
        runtime.perform(action_id)

    def perform_actions_job(action_ids: list[int]) -> None:
        runtime.perform_many(action_ids)

    def perform_transactional_actions_job(action_ids: list[int]) -> None:
        runtime.perform_many(action_ids)

    def wake_enrollment(enrollment_id: int) -> None:
        runtime.wake(enrollment_id)

    def wake_enrollments(enrollment_ids: list[int]) -> None:
        runtime.wake_many(enrollment_ids)

    def perform_email_batch_job(action_ids: list[int]) -> None:
        runtime.perform_batch(action_ids)

    def perform_transactional_batch_job(action_ids: list[int]) -> None:
        runtime.perform_batch(action_ids)

    def perform_crm_batch_job(action_ids: list[int]) -> None:
        runtime.perform_crm_batch(action_ids)

    def fire_schedule(slot_id: int) -> None:
        runtime.fire_schedule(slot_id)

    def scheduler_tick(token: str = START) -> None:
        runtime.periodic_tick(token)

    options: dict[str, Any] = {
        "max_retries": 10,
        "min_backoff": 1_000,
        "max_backoff": 300_000,
        "time_limit": 600_000,
    }

    def declare(fn: Callable[_P, None], name: str, queue: str = QUEUE) -> dramatiq.Actor[_P, None]:
        fn.__module__ = JOBS_MODULE
        return dramatiq.Actor(
            fn,
            broker=runtime.broker,
            actor_name=name,
            queue_name=queue,
            priority=0,
            options=dict(options),
        )

    return Jobs(
        process_contact=declare(process_contact, "process_contact"),
        process_contacts=declare(process_contacts, "process_contacts"),
        perform_action=declare(perform_action_job, "perform_action"),
        # Receipts and other transactional mail have their own queue, so they are never
        # held behind a marketing backlog.
        perform_transactional=declare(
            perform_transactional_job, "perform_transactional", TRANSACTIONAL_QUEUE
        ),
        perform_actions=declare(perform_actions_job, "perform_actions"),
        perform_transactional_actions=declare(
            perform_transactional_actions_job,
            "perform_transactional_actions",
            TRANSACTIONAL_QUEUE,
        ),
        wake_enrollment=declare(wake_enrollment, "wake_enrollment"),
        wake_enrollments=declare(wake_enrollments, "wake_enrollments"),
        perform_email_batch=declare(perform_email_batch_job, "perform_email_batch"),
        perform_transactional_batch=declare(
            perform_transactional_batch_job,
            "perform_transactional_batch",
            TRANSACTIONAL_QUEUE,
        ),
        # On the queue single CRM actions take (they are not marketing).
        perform_crm_batch=declare(perform_crm_batch_job, "perform_crm_batch", TRANSACTIONAL_QUEUE),
        fire_schedule=declare(fire_schedule, "fire_schedule"),
        scheduler_tick=chain.declare(scheduler_tick),
    )
