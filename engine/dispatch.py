"""Sending committed work to the workers: a runtime's jobs enqueued for contacts and actions.

Email actions of one step go in batches when the connector can send them together;
``crm.update`` actions in HubSpot's batches; everything else a few per job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from engine import recording
from engine.batch_send import batch_size_of, group_for_batches
from engine.broker import broker_errors, describe_broker_error
from engine.crm_batch import batching_performer, crm_batches
from engine.durations import describe_duration
from engine.executor import Effects

if TYPE_CHECKING:
    from engine.runtime import Runtime

# These lines keep the runtime's logger, which operators (and tests) filter on.
log = logging.getLogger("engine.runtime")

SINGLES_PER_JOB = 10
"""At most this many actions performed one by one (CRM tasks and notes, webhooks, CRM
updates without HubSpot's batch calls) per ``perform_actions`` job, and fewer with a short
lease: their calls, each up to a connector's timeout (10 s by default) and a retry, must
end within the lease the claim took (300 s by default): 30 s of lease per call."""
LEASE_PER_CALL = timedelta(seconds=30)


def enqueue_contacts(runtime: Runtime, contact_ids: Iterable[int]) -> None:
    """The body of ``Runtime.enqueue_contacts`` (which says what it does)."""
    ids = list(dict.fromkeys(contact_ids))
    for start in range(0, len(ids), runtime.contacts_per_job):
        chunk = ids[start : start + runtime.contacts_per_job]
        if len(chunk) == 1:
            runtime.jobs.process_contact.send(chunk[0])
        else:
            runtime.jobs.process_contacts.send(chunk)


def enqueue_or_leave(runtime: Runtime, contact_ids: Iterable[int], *, what: str) -> bool:
    """The body of ``Runtime.enqueue_or_leave`` (which says what it does)."""
    ids = list(contact_ids)
    try:
        runtime.enqueue_contacts(ids)
    except broker_errors() as exc:
        log.error(
            "%s: stored for %d contact(s), but the broker refused their jobs (%s); "
            "a scheduler pass hands them to the workers within %s once it answers",
            what,
            len(ids),
            describe_broker_error(exc),
            describe_duration(recording.EVENT_LEASE),
        )
        return False
    return True


def dispatch(runtime: Runtime, effects: Effects) -> None:
    """The body of ``Runtime.dispatch`` (which says what it does)."""
    jobs = runtime.jobs
    actions, size = effects.actions, batch_size_of(runtime.email)
    if len(actions) > 1 and size > 1:  # many contacts at one step (a schedule's batch)
        batches, actions = group_for_batches(
            runtime.db, actions, size=size, described=effects.described()
        )
        for batch in batches:
            jobs.perform_email_batch.send(batch)
    send_singles(runtime, actions, transactional=False)
    # Transactional email of many contacts (receipts of one job) shares requests too,
    # on its own queue; CRM actions are not marketing either: many contacts at one
    # update_crm step land here.
    transactional = effects.transactional
    if len(transactional) > 1 and size > 1:
        batches, transactional = group_for_batches(
            runtime.db, transactional, size=size, described=effects.described(),
            transactional=True,
        )  # fmt: skip
        for batch in batches:
            jobs.perform_transactional_batch.send(batch)
    send_singles(runtime, batch_crm(runtime, transactional), transactional=True)
    for contact_id in effects.contacts:
        jobs.process_contact.send(contact_id)


def send_singles(runtime: Runtime, action_ids: Sequence[int], *, transactional: bool) -> None:
    """Enqueue actions that go one by one: a ``perform_actions`` job per few of them
    (``SINGLES_PER_JOB``), the single job for one."""
    jobs = runtime.jobs
    single = jobs.perform_transactional if transactional else jobs.perform_action
    many = jobs.perform_transactional_actions if transactional else jobs.perform_actions
    per_job = max(1, min(SINGLES_PER_JOB, runtime.lease // LEASE_PER_CALL))
    for start in range(0, len(action_ids), per_job):
        chunk = list(action_ids[start : start + per_job])
        if len(chunk) == 1:
            single.send(chunk[0])
        else:
            many.send(chunk)


def batch_crm(runtime: Runtime, action_ids: list[int]) -> list[int]:
    """Enqueue due ``crm.update`` actions in batches when HubSpot takes them; return the
    others. CRM tasks and notes stay single (no idempotency key: see crm_batch.py)."""
    if batching_performer(runtime.extra_performers) is None:
        return action_ids
    size = runtime.settings.hubspot_batch_size
    batches, rest = crm_batches(runtime.db, action_ids, size=size)
    for batch in batches:
        runtime.jobs.perform_crm_batch.send(batch)
    return rest


def dispatch_emails(runtime: Runtime, action_ids: list[int], marketing: bool) -> None:
    """Enqueue email actions of one step: batched when the connector can, else singly."""
    action_ids = batch_crm(runtime, action_ids)  # a page whose first step is update_crm
    size = batch_size_of(runtime.email)
    if marketing and size > 1 and len(action_ids) > 1:
        for start in range(0, len(action_ids), size):
            runtime.jobs.perform_email_batch.send(action_ids[start : start + size])
        return
    send_singles(runtime, action_ids, transactional=not marketing)
