"""The runtime: settings, database, clock, broker, connectors and workflows, wired together.

``Runtime`` is what the CLI, the HTTP service, the demo, the worker processes and the tests
all use, so there is one behaviour to trust. Its jobs are declared on its own broker:

    process_contact(contact_id)    apply the contact's pending events
    perform_action(action_id)      send one action through its connector
    wake_enrollment(enrollment_id) continue an enrollment whose wait is over
    wake_enrollments(ids)          continue several, in one transaction (a scheduler pass)
    perform_email_batch(action_ids) send marketing email actions together (batch_send.py)
    perform_transactional_batch(action_ids)  transactional email one job wrote for several
                                   contacts, together, on the transactional queue
    perform_crm_batch(action_ids)  crm.update actions through HubSpot's batch calls (crm_batch.py)
    fire_schedule(slot_id)         offer a schedule slot's workflow to its time zone's contacts
    scheduler_tick()               one scheduler pass, then itself again after the interval

With ``stub://`` the runtime runs a Dramatiq worker in threads of this process (``start``,
``drain``); with Redis or RabbitMQ, ``journeyline worker`` processes consume the same jobs.

Its parts live beside it: the jobs' declaration (``jobs.py``), the ``scheduler_tick`` chain and
its watch (``scheduler_chain.py``), the CRM and webhook performers chosen by settings
(``performer_setup.py``), the recording of inputs (``inputs.py``) and the enqueueing of
committed work (``dispatch.py``). ``Runtime``'s methods delegate to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from dramatiq import Broker, Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.engine import Engine

from connectors.email import EmailConnector, build_email_connector
from engine import dispatch as dispatching
from engine import inputs, pipeline, pipeline_jobs
from engine.actions import Outcome, RetryPolicy, perform_action, perform_actions
from engine.batch_send import (
    BatchOutcome,
    batch_size_of,
    group_for_batches,
    perform_email_batch,
)
from engine.broadcast import BroadcastResult
from engine.broadcast import broadcast as run_broadcast
from engine.broker import build_broker
from engine.clock import Clock, SystemClock
from engine.connector_plugins import is_plugin, plugin_email_connector
from engine.crm_batch import batching_performer, perform_crm_batch
from engine.db import make_engine, transaction
from engine.dispatch import LEASE_PER_CALL, SINGLES_PER_JOB
from engine.executor import Effects
from engine.inline_broker import InlineBroker
from engine.jobs import QUEUE, TRANSACTIONAL_QUEUE, Jobs, declare_jobs
from engine.performer_setup import configured_performers
from engine.performers import EmailPerformer, Performer
from engine.periodic import START
from engine.registry import Registry, load_registry
from engine.scheduler import Due, claim_due
from engine.scheduler_chain import SCHEDULER_QUEUE, SCHEDULER_TICK, SchedulerChain
from engine.schedules import Fired, SchedulePlanner, fire_slot, plan_and_claim
from engine.settings import Settings
from engine.unsubscribe import unsubscribe_links

__all__ = [
    "LEASE_PER_CALL",
    "QUEUE",
    "SCHEDULER_QUEUE",
    "SCHEDULER_TICK",
    "SINGLES_PER_JOB",
    "TRANSACTIONAL_QUEUE",
    "WAKES_PER_JOB",
    "Jobs",
    "Runtime",
    "Tick",
]

WAKES_PER_JOB = 20
"""Due enrollments per ``wake_enrollments`` job when a scheduler pass finds several."""


@dataclass
class Tick(Due):
    """What one scheduler pass found: ``Due`` plus the schedule slots it claimed."""

    schedule_slots: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return super().__len__() + len(self.schedule_slots)


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        registry: Registry | None = None,
        email: EmailConnector | None = None,
        db: Engine | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.registry = registry or load_registry(
            self.settings.workflows, templates_dir=self.settings.templates_dir
        )
        self.email = email or email_connector_for(self.settings)
        # Signed one-click unsubscribe links in marketing email, when configured.
        self.unsubscribe_links = unsubscribe_links(self.settings)
        self.db = db or make_engine(self.settings.database_url)
        self.broker = broker or build_broker(self.settings.broker_url)
        # Job sizes: small for latency in a service; the simulator, which only wants
        # throughput, makes them larger.
        self.contacts_per_job = self.settings.contacts_per_job
        self.wakes_per_job = WAKES_PER_JOB
        self.policy = RetryPolicy(
            max_attempts=self.settings.max_attempts,
            backoff=timedelta(seconds=self.settings.retry_backoff_seconds),
        )
        self.lease = timedelta(seconds=self.settings.action_lease_seconds)
        self._chain = SchedulerChain(self)
        self.jobs = declare_jobs(self, self._chain)
        # Connectors for actions other than email (CRM, outgoing webhooks), by action kind.
        setup = configured_performers(self.settings, self.registry)
        self._crm, self._webhooks = setup.crm, setup.webhooks
        self.extra_performers: dict[str, Performer] = setup.performers
        self._worker: Worker | None = None
        self._versions_synced = False
        self.schedules = SchedulePlanner()

    # --- inputs -------------------------------------------------------------------------

    # Recording inputs; each is a function of ``engine.inputs`` taking the runtime first,
    # which says what it does.
    track = inputs.track
    upsert_contact = inputs.upsert_contact
    fire = inputs.fire

    # --- job bodies ---------------------------------------------------------------------

    def sync_versions(self) -> None:
        """Store the spec of every current workflow version (once per process), so that an
        enrollment can always finish on the version it started with."""
        if self._versions_synced:
            return
        from engine.executor import remember_version

        with transaction(self.db) as session:
            for workflow in self.registry.workflows.values():
                remember_version(session, self.registry, workflow, self.clock.now())
        self._versions_synced = True

    def enqueue_contacts(self, contact_ids: Iterable[int]) -> None:
        """Enqueue the processing of these contacts' pending events: one job per
        ``contacts_per_job`` contacts, which saves a broker round trip per contact on a batch
        (a few contacts per job keep the latency of the last one low)."""
        dispatching.enqueue_contacts(self, contact_ids)

    def enqueue_or_leave(self, contact_ids: Iterable[int], *, what: str) -> bool:
        """``enqueue_contacts`` after their events were committed, for callers that answer
        someone who must not be told the events were lost (an HTTP client, a provider's
        webhook): if the broker refuses the jobs, log it and return False. Nothing is lost:
        the events are stored as pending, and a scheduler pass hands them to the workers
        once their lease (``recording.EVENT_LEASE``) runs out and the broker answers."""
        return dispatching.enqueue_or_leave(self, contact_ids, what=what)

    def process_contacts(self, contact_ids: list[int]) -> Effects:
        """Several contacts in one transaction (``pipeline_jobs.process_contacts_job``). If one
        fails, the others are still done and dispatched, and the job raises so it is retried
        (contacts already done are no-ops then)."""
        return self._run_batch(pipeline_jobs.process_contacts_job, contact_ids)

    def _run_batch(self, job: Callable[..., Effects], ids: list[int]) -> Effects:
        """Run a batch job of ``pipeline_jobs`` and dispatch what it committed, also when part
        of it failed (then the first error is raised, so the message is retried)."""
        self.sync_versions()
        try:
            effects = job(self.db, self.registry, ids, now=self.clock.now())
        except pipeline_jobs.PartlyFailed as failed:
            self.dispatch(failed.effects)
            raise failed.cause from failed
        self.dispatch(effects)
        return effects

    def process_contact(self, contact_id: int) -> Effects:
        self.sync_versions()
        effects = pipeline_jobs.process_contact_job(
            self.db, self.registry, contact_id, now=self.clock.now()
        )
        self.dispatch(effects)
        return effects

    def performers(self) -> dict[str, Performer]:
        """Who performs each kind of action (built on demand: connectors may be swapped)."""
        found: dict[str, Performer] = {
            "email": EmailPerformer(
                self.email,
                self.registry,
                sender=self.settings.from_email,
                links=self.unsubscribe_links,
            ),
        }
        found.update(self.extra_performers)
        return found

    def perform(self, action_id: int) -> Outcome:
        return perform_action(
            self.db,
            self.registry,
            self.performers(),
            action_id,
            now=self.clock.now(),
            lease=self.lease,
            policy=self.policy,
        )

    def perform_many(self, action_ids: list[int]) -> Counter[str]:
        """Several actions one by one in one job: claimed together, recorded together
        (``actions.perform_actions``)."""
        return perform_actions(
            self.db,
            self.registry,
            self.performers(),
            action_ids,
            now=self.clock.now(),
            lease=self.lease,
            policy=self.policy,
        )

    def _send_singles(self, action_ids: Sequence[int], *, transactional: bool) -> None:
        """Enqueue actions that go one by one: a ``perform_actions`` job per few of them
        (``SINGLES_PER_JOB``), the single job for one."""
        dispatching.send_singles(self, action_ids, transactional=transactional)

    def perform_batch(self, action_ids: list[int]) -> BatchOutcome:
        """Send email actions together (one request per identical rendering); a connector
        that cannot batch sends them one by one through ``perform``."""
        if batch_size_of(self.email) <= 1:
            outcome = BatchOutcome()
            for action_id in action_ids:
                outcome.statuses[self.perform(action_id).status] += 1
            return outcome
        return perform_email_batch(
            self.db,
            self.registry,
            self.email,  # type: ignore[arg-type]
            action_ids,
            now=self.clock.now(),
            lease=self.lease,
            policy=self.policy,
            sender=self.settings.from_email,
            links=self.unsubscribe_links,
        )

    def perform_crm_batch(self, action_ids: list[int]) -> BatchOutcome:
        """``crm.update`` actions together through HubSpot's batch calls (crm_batch.py);
        with another CRM connector, one by one through ``perform``."""
        performer = batching_performer(self.extra_performers)
        if performer is None:
            outcome = BatchOutcome()
            for action_id in action_ids:
                outcome.statuses[self.perform(action_id).status] += 1
            return outcome
        return perform_crm_batch(
            self.db,
            performer,
            action_ids,
            now=self.clock.now(),
            lease=self.lease,
            policy=self.policy,
            perform_one=self.perform,
        )

    def _batch_crm(self, action_ids: list[int]) -> list[int]:
        """Enqueue due ``crm.update`` actions in batches when HubSpot takes them; return the
        others. CRM tasks and notes stay single (no idempotency key: see crm_batch.py)."""
        return dispatching.batch_crm(self, action_ids)

    def broadcast(self, workflow: str) -> BroadcastResult:
        """Start ``workflow`` now for every contact in its audience (broadcast.py); its
        first-step emails go out in batches of ``sendgrid_batch_size``."""
        self.sync_versions()
        return run_broadcast(
            self.db,
            self.registry,
            workflow,
            now=self.clock.now(),
            dispatch=self._dispatch_emails,
            page_size=max(batch_size_of(self.email), 100),
        )

    def _dispatch_emails(self, action_ids: list[int], marketing: bool) -> None:
        """Enqueue email actions of one step: batched when the connector can, else singly."""
        dispatching.dispatch_emails(self, action_ids, marketing)

    def wake(self, enrollment_id: int) -> Effects:
        self.sync_versions()
        with transaction(self.db) as session:
            effects = pipeline.wake_enrollment(
                session, self.registry, enrollment_id, now=self.clock.now()
            )
        self.dispatch(effects)
        return effects

    def wake_many(self, enrollment_ids: list[int]) -> Effects:
        """Several due enrollments in one transaction (``pipeline_jobs.wake_enrollments_job``);
        their actions are dispatched together, so emails of one step can share a request."""
        return self._run_batch(pipeline_jobs.wake_enrollments_job, enrollment_ids)

    def tick(self) -> Tick:
        """One scheduler pass: claim what is due or stuck and enqueue it, and fire the
        schedule slots that have come due."""
        due = claim_due(
            self.db,
            now=self.clock.now(),
            lease=self.lease,
            batch_size=self.settings.scheduler_batch_size,
        )
        for start in range(0, len(due.enrollments), self.wakes_per_job):
            chunk = due.enrollments[start : start + self.wakes_per_job]
            if len(chunk) == 1:
                self.jobs.wake_enrollment.send(chunk[0])
            else:
                self.jobs.wake_enrollments.send(chunk)
        self.enqueue_contacts(due.contacts)
        # Due email actions of one step (a broadcast whose message was lost, a retry after a
        # 429) go out batched again; everything else one by one.
        batches, singles = group_for_batches(self.db, due.actions, size=batch_size_of(self.email))
        for batch in batches:
            self.jobs.perform_email_batch.send(batch)
        self._send_singles(self._batch_crm(singles), transactional=False)
        slots = plan_and_claim(
            self.db,
            self.registry,
            self.schedules,
            now=self.clock.now(),
            lease=self.lease,
            batch_size=self.settings.scheduler_batch_size,
        )
        for slot_id in slots:
            self.jobs.fire_schedule.send(slot_id)
        return Tick(**vars(due), schedule_slots=slots)

    def fire_schedule(self, slot_id: int) -> Fired:
        """Offer a schedule slot's workflow to the next batch of its time zone's contacts;
        continue in a new job while contacts remain."""
        self.sync_versions()
        with transaction(self.db) as session:
            fired = fire_slot(
                session, self.registry, slot_id, now=self.clock.now(), lease=self.lease
            )
        self.dispatch(fired.effects)
        if fired.more:
            self.jobs.fire_schedule.send(slot_id)
        return fired

    def periodic_tick(self, token: str = START) -> bool:
        """The ``scheduler_tick`` job: one pass, then itself again after the interval.
        Returns True when this copy took its turn (the pass ran, or failed), False when it
        did not: another chain owns the schedule (engine/periodic.py; a starter that finds
        one looks again two intervals later), or the database could not say.

        Nothing raised here ends the chain, whose job has no retries: a turn the database
        could not take is tried again an interval later by the same message, and a failed
        pass still sends the next. Failures are logged once, and once more when passes work
        again. A next message the broker refuses is logged; ``ChainWatch`` restarts it."""
        return self._chain.run_turn(token)

    def watch_scheduler_chain(self) -> bool:
        """Send a probe that takes the ``scheduler_tick`` chain over when its booked run is
        overdue (its message lost, or refused by a broker that was down); True if sent.
        Each worker process runs this every two intervals (``ChainWatch``)."""
        return self._chain.watch()

    def dispatch(self, effects: Effects) -> None:
        """Enqueue what a committed transaction asked for. A lost message is found again by
        the sweeper once its lease runs out."""
        dispatching.dispatch(self, effects)

    # --- the in-process worker (stub://) ------------------------------------------------

    @property
    def in_process(self) -> bool:
        return isinstance(self.broker, StubBroker)

    def start(self) -> None:
        """Start worker threads in this process (only for the stub broker)."""
        if isinstance(self.broker, InlineBroker):
            return  # jobs run in the caller's thread, in drain()
        if self._worker is None and self.in_process:
            self._worker = Worker(
                self.broker, worker_threads=self.settings.worker_threads, worker_timeout=100
            )
            self._worker.start()

    def drain(self, *, timeout_ms: int = 60_000) -> None:
        """Wait until every queued job, and every job those jobs queued, has finished."""
        if isinstance(self.broker, InlineBroker):
            self.broker.run_all()
            return
        if not isinstance(self.broker, StubBroker):
            raise RuntimeError("drain() waits for the in-process stub broker only")
        if self._worker is None:
            self.start()
        assert self._worker is not None
        while True:
            for queue_name in (QUEUE, TRANSACTIONAL_QUEUE):
                self.broker.join(queue_name, timeout=timeout_ms, fail_fast=True)
            self._worker.join()
            if all(
                self.broker.queues[name].unfinished_tasks == 0
                for name in (QUEUE, TRANSACTIONAL_QUEUE)
                if name in self.broker.queues
            ):
                return

    def run_until_idle(self, *, max_rounds: int = 1000) -> None:
        """Drain, tick, and drain again until a tick finds nothing due (virtual-time runs)."""
        for _ in range(max_rounds):
            self.drain()
            if not len(self.tick()):
                self.drain()
                return
        raise RuntimeError(f"still finding due work after {max_rounds} rounds")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.email.close()
        if self._webhooks is not None:
            self._webhooks.close()
        if self._crm is not None:
            self._crm.close()
        self.broker.close()
        self.db.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def email_connector_for(settings: Settings) -> EmailConnector:
    """The email connector ``JOURNEYLINE_EMAIL_CONNECTOR`` names: a built-in, or a factory of
    the user's own (``module:factory``, engine/connector_plugins.py)."""
    if is_plugin(settings.email_connector):
        return plugin_email_connector(settings)
    return build_email_connector(
        settings.email_connector,
        outbox_dir=settings.outbox_dir,
        sendgrid_api_key=settings.sendgrid_api_key,
        sendgrid_host=settings.sendgrid_host,
        sendgrid_timeout_s=settings.sendgrid_timeout_seconds,
        sendgrid_sandbox=settings.sendgrid_sandbox,
        sendgrid_batch_size=settings.sendgrid_batch_size,
        sendgrid_substitutions=settings.sendgrid_substitutions,
        sendgrid_unsubscribe_group=settings.sendgrid_unsubscribe_group,
    )
