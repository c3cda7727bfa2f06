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
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec

import dramatiq
from dramatiq import Broker, Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.engine import Engine
from sqlmodel import select

from connectors.crm import CRMConnector, HubSpotConnector, HubSpotRateLimiter
from connectors.email import EmailConnector, build_email_connector
from connectors.webhooks.outgoing import WebhookSender
from engine import pipeline, pipeline_jobs, recording
from engine.actions import Outcome, RetryPolicy, perform_action, perform_actions
from engine.batch_send import (
    BatchOutcome,
    batch_size_of,
    group_for_batches,
    perform_email_batch,
)
from engine.broadcast import BroadcastResult
from engine.broadcast import broadcast as run_broadcast
from engine.broker import broker_errors, build_broker, describe_broker_error
from engine.clock import Clock, SystemClock
from engine.contacts import (
    find_or_create_contact,
    normalize_email,
    validate_properties,
    validate_stage,
    validate_timezone,
)
from engine.crm_batch import batching_performer, crm_batches, perform_crm_batch
from engine.date_attributes import refuse_bad_dates
from engine.db import make_engine, transaction
from engine.durations import describe_duration
from engine.errors import ConfigurationError, ValidationError
from engine.executor import Effects
from engine.inline_broker import InlineBroker
from engine.machine import Move
from engine.models import Contact, StageTransition
from engine.performers import (
    CRMOutboxPerformer,
    CRMPerformer,
    EmailPerformer,
    Performer,
    Unconfigured,
    WebhookPerformer,
)
from engine.periodic import (
    PROBE,
    START,
    ChainWatch,
    Trouble,
    chain_lost,
    describe_failure,
    take_turn,
)
from engine.registry import Registry, load_registry
from engine.scheduler import Due, claim_due
from engine.schedules import Fired, SchedulePlanner, fire_slot, plan_and_claim
from engine.settings import Settings
from engine.unsubscribe import unsubscribe_links

log = logging.getLogger(__name__)
_P = ParamSpec("_P")

QUEUE = "journeyline"
TRANSACTIONAL_QUEUE = "journeyline_transactional"
WAKES_PER_JOB = 20
"""Due enrollments per ``wake_enrollments`` job when a scheduler pass finds several."""
SINGLES_PER_JOB = 10
"""At most this many actions performed one by one (CRM tasks and notes, webhooks, CRM
updates without HubSpot's batch calls) per ``perform_actions`` job, and fewer with a short
lease: their calls, each up to a connector's timeout (10 s by default) and a retry, must
end within the lease the claim took (300 s by default): 30 s of lease per call."""
LEASE_PER_CALL = timedelta(seconds=30)
# The periodic scheduler job lives apart: drain() never waits for a chain that never ends.
SCHEDULER_QUEUE = "journeyline_scheduler"
SCHEDULER_TICK = "scheduler_tick"


@dataclass
class Tick(Due):
    """What one scheduler pass found: ``Due`` plus the schedule slots it claimed."""

    schedule_slots: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return super().__len__() + len(self.schedule_slots)


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
        self.email = email or build_email_connector(
            self.settings.email_connector,
            outbox_dir=self.settings.outbox_dir,
            sendgrid_api_key=self.settings.sendgrid_api_key,
            sendgrid_host=self.settings.sendgrid_host,
            sendgrid_timeout_s=self.settings.sendgrid_timeout_seconds,
            sendgrid_sandbox=self.settings.sendgrid_sandbox,
            sendgrid_batch_size=self.settings.sendgrid_batch_size,
            sendgrid_substitutions=self.settings.sendgrid_substitutions,
            sendgrid_unsubscribe_group=self.settings.sendgrid_unsubscribe_group,
        )
        # Signed one-click unsubscribe links in marketing email, when configured.
        self.unsubscribe_links = unsubscribe_links(self.settings)
        self.db = db or make_engine(self.settings.database_url)
        self.broker = broker or build_broker(self.settings.broker_url)
        # Job sizes: small for latency in a service; the simulator, which only wants
        # throughput, makes them larger.
        self.contacts_per_job = self.settings.contacts_per_job
        self.wakes_per_job = WAKES_PER_JOB
        self._webhooks: WebhookSender | None = None
        self._crm: CRMConnector | None = None
        self.policy = RetryPolicy(
            max_attempts=self.settings.max_attempts,
            backoff=timedelta(seconds=self.settings.retry_backoff_seconds),
        )
        self.lease = timedelta(seconds=self.settings.action_lease_seconds)
        self._tick_trouble = Trouble(log, SCHEDULER_TICK)
        self.jobs = self._declare_jobs()
        # Connectors for actions other than email (CRM, outgoing webhooks), by action kind.
        self.extra_performers: dict[str, Performer] = self._configured_performers()
        self._worker: Worker | None = None
        self._versions_synced = False
        self.schedules = SchedulePlanner()

    # --- inputs -------------------------------------------------------------------------

    def track(
        self,
        email: str,
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        source: str = "api",
        idempotency_key: str | None = None,
        occurred_at: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        timezone: str | None = None,
    ) -> recording.Recorded:
        """Record one event (idempotently) and enqueue its processing after commit. An
        attribute a ``wait_until_date`` step counts from must be given a date."""
        refuse_bad_dates(self.registry, attributes)
        with transaction(self.db) as session:
            recorded = recording.record_event(
                session,
                self.registry,
                now=self.clock.now(),
                email=email,
                event_type=event_type,
                properties=properties,
                source=source,
                idempotency_key=idempotency_key,
                occurred_at=occurred_at,
                attributes=attributes,
                timezone=timezone,
            )
        if not recorded.duplicate:
            self.jobs.process_contact.send(recorded.contact_id)
        return recorded

    def upsert_contact(
        self,
        email: str,
        *,
        stage: str | None = None,
        timezone: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Contact:
        """Create or update a contact without an event (an import, a CRM sync).

        ``stage`` only applies to a new contact (existing ones move through the stage
        machine); it is recorded as an ``imported`` transition and starts no workflow, so an
        import never sends a burst of emails. Changing an existing contact's attributes
        records a ``contact.updated`` event and processes it, so conditions on them
        (segments joined, goals, exits) are evaluated as for a tracked event; a change of
        nothing records nothing.
        """
        email = normalize_email(email)
        if stage is not None:
            validate_stage(self.registry.journey, stage)
        if timezone is not None:
            validate_timezone(timezone)
        attributes = validate_properties(attributes, field="attributes")
        refuse_bad_dates(self.registry, attributes)
        now = self.clock.now()
        with transaction(self.db) as session:
            contact, created, attributes_before = find_or_create_contact(
                session,
                email=email,
                journey=self.registry.journey,
                now=now,
                timezone=timezone,
                attributes=attributes,
                stage=stage,
            )
            if attributes_before is not None:
                assert contact.id is not None
                recording.record_contact_updated(
                    session,
                    now=now,
                    contact_id=contact.id,
                    attributes=contact.attributes,
                    attributes_before=attributes_before,
                )
            if created:
                session.flush()
                assert contact.id is not None  # given by the flush
                session.add(
                    StageTransition(
                        contact_id=contact.id,
                        from_stage="",  # type: ignore[arg-type]
                        to_stage=contact.stage,
                        trigger="imported",
                        at=now,
                    )
                )
        if attributes_before is not None:
            self.enqueue_or_leave([contact.id], what="contact update")  # type: ignore[list-item]
        return contact

    def fire(self, email: str, trigger: str) -> Move:
        """Move a contact by an explicit trigger (an operator's or an API's decision).

        Raises ``InvalidTransition`` and changes nothing when the stage does not allow it.
        """
        email = normalize_email(email)
        self.sync_versions()
        with transaction(self.db) as session:
            contact = session.exec(select(Contact).where(Contact.email == email)).first()
            if contact is None:
                raise ValidationError(f"no contact with email {email!r}", field="email")
            contact = pipeline.lock_contact(session, contact.id)  # type: ignore[arg-type]
            assert contact is not None
            move = self.registry.machine.fire(
                email=contact.email,
                stage=contact.stage,
                trigger=trigger,
                score=contact.score,
                attributes=contact.attributes,
            )
            effects = Effects()
            if move.moved:
                now = self.clock.now()
                effects = pipeline.change_stage(
                    session,
                    self.registry,
                    contact,
                    move.dest,
                    trigger=trigger,
                    now=now,
                    event_id=None,
                )
                contact.updated_at = now
                contact.version += 1
                session.add(contact)
        self.dispatch(effects)
        return move

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
        ids = list(dict.fromkeys(contact_ids))
        for start in range(0, len(ids), self.contacts_per_job):
            chunk = ids[start : start + self.contacts_per_job]
            if len(chunk) == 1:
                self.jobs.process_contact.send(chunk[0])
            else:
                self.jobs.process_contacts.send(chunk)

    def enqueue_or_leave(self, contact_ids: Iterable[int], *, what: str) -> bool:
        """``enqueue_contacts`` after their events were committed, for callers that answer
        someone who must not be told the events were lost (an HTTP client, a provider's
        webhook): if the broker refuses the jobs, log it and return False. Nothing is lost:
        the events are stored as pending, and a scheduler pass hands them to the workers
        once their lease (``recording.EVENT_LEASE``) runs out and the broker answers."""
        ids = list(contact_ids)
        try:
            self.enqueue_contacts(ids)
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

    def _configured_performers(self) -> dict[str, Performer]:
        settings = self.settings
        found: dict[str, Performer] = {}
        if settings.crm_connector == "outbox":
            crm: Performer = CRMOutboxPerformer(
                settings.crm_outbox_dir or settings.outbox_dir / "crm"
            )
        elif settings.crm_connector == "hubspot":
            if not settings.hubspot_token:
                raise ConfigurationError(
                    "JOURNEYLINE_CRM_CONNECTOR=hubspot needs JOURNEYLINE_HUBSPOT_TOKEN"
                )
            stages = self.registry.journey.stage_names
            unknown = [s for s in settings.hubspot_lifecycle_map if s not in stages]
            if unknown:  # the override would silently never apply
                raise ConfigurationError(
                    f"JOURNEYLINE_HUBSPOT_LIFECYCLE_MAP: {', '.join(map(repr, unknown))} "
                    f"{'is not a stage' if len(unknown) == 1 else 'are not stages'} of the "
                    f"journey; its stages: {', '.join(stages)}"
                )
            self._crm = HubSpotConnector(
                token=settings.hubspot_token,
                base_url=settings.hubspot_base_url,
                timeout_s=settings.hubspot_timeout_seconds,
                lifecycle_map=settings.hubspot_lifecycle_map or None,
                limiter=HubSpotRateLimiter(max_per_interval=settings.hubspot_max_per_interval),
                max_retries=settings.hubspot_max_retries,
            )
            mirrored = {
                "score": settings.hubspot_score_property,
                "workflow": settings.hubspot_workflow_property,
            }
            for kind in ("crm.update", "crm.task", "crm.note"):
                found[kind] = CRMPerformer(
                    self._crm,
                    kind,
                    mirrored=mirrored,
                    allow_backward=settings.hubspot_allow_backward,
                )
            crm = found["crm.update"]
        elif settings.crm_connector == "none":
            crm = Unconfigured("CRM", "JOURNEYLINE_CRM_CONNECTOR")
        else:
            raise ConfigurationError(
                f"unknown CRM connector {settings.crm_connector!r}; "
                "choose one of: outbox, hubspot, none"
            )
        found.setdefault("crm.update", crm)
        found.setdefault("crm.task", crm)
        found.setdefault("crm.note", crm)
        if settings.webhook_secret:
            self._webhooks = WebhookSender(
                secret=settings.webhook_secret, timeout_s=settings.webhook_timeout_seconds
            )
            found["webhook"] = WebhookPerformer(self._webhooks)
        else:
            found["webhook"] = Unconfigured("webhook", "JOURNEYLINE_WEBHOOK_SECRET")
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
        single = self.jobs.perform_transactional if transactional else self.jobs.perform_action
        many = (
            self.jobs.perform_transactional_actions if transactional else self.jobs.perform_actions
        )
        per_job = max(1, min(SINGLES_PER_JOB, self.lease // LEASE_PER_CALL))
        for start in range(0, len(action_ids), per_job):
            chunk = list(action_ids[start : start + per_job])
            if len(chunk) == 1:
                single.send(chunk[0])
            else:
                many.send(chunk)

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
        if batching_performer(self.extra_performers) is None:
            return action_ids
        size = self.settings.hubspot_batch_size
        batches, rest = crm_batches(self.db, action_ids, size=size)
        for batch in batches:
            self.jobs.perform_crm_batch.send(batch)
        return rest

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
        action_ids = self._batch_crm(action_ids)  # a page whose first step is update_crm
        size = batch_size_of(self.email)
        if marketing and size > 1 and len(action_ids) > 1:
            for start in range(0, len(action_ids), size):
                self.jobs.perform_email_batch.send(action_ids[start : start + size])
            return
        self._send_singles(action_ids, transactional=not marketing)

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
        interval = timedelta(seconds=self.settings.scheduler_interval_seconds)
        delay_ms = int(interval.total_seconds() * 1000)
        again = f"the chain goes on, trying every {describe_duration(interval)}"
        try:
            turn = take_turn(
                self.db, name=SCHEDULER_TICK, now=self.clock.now(), interval=interval, token=token
            )
        except Exception as exc:  # nothing was booked: this message's token stays good
            self._tick_trouble.failed(exc, again)
            self._send_tick(token, delay_ms)
            return False
        if turn is None:
            if token == START:
                self._send_tick(PROBE, 2 * delay_ms)
            return False
        try:
            self.tick()
        except Exception as exc:  # what the pass claimed is leased: a later pass has it
            self._tick_trouble.failed(exc, again)
        else:
            self._tick_trouble.ok()
        finally:  # even a pass stopped by its time limit sends the next
            self._send_tick(turn, delay_ms)
        return True

    def _send_tick(self, token: str, delay_ms: int) -> None:
        try:
            self.jobs.scheduler_tick.send_with_options(args=(token,), delay=delay_ms)
        except Exception as exc:
            restart = (
                "a worker process finds its booked run overdue (each looks every "
                f"{describe_duration(self._watch_every)})"
                if self._watching
                else "`journeyline scheduler --periodic` is run again (with "
                "JOURNEYLINE_SCHEDULER_IN_WORKERS=true the workers restart it themselves)"
            )
            log.error(
                "%s: the broker did not take the next run (%s): the chain stops until %s",
                SCHEDULER_TICK,
                describe_failure(exc),
                restart,
            )

    def watch_scheduler_chain(self) -> bool:
        """Send a probe that takes the ``scheduler_tick`` chain over when its booked run is
        overdue (its message lost, or refused by a broker that was down); True if sent.
        Each worker process runs this every two intervals (``ChainWatch``)."""
        interval = timedelta(seconds=self.settings.scheduler_interval_seconds)
        if not chain_lost(self.db, name=SCHEDULER_TICK, now=self.clock.now(), interval=interval):
            return False
        self.jobs.scheduler_tick.send(PROBE)
        log.warning(
            "%s: its booked run is overdue, its message lost: restarting it", SCHEDULER_TICK
        )
        return True

    def dispatch(self, effects: Effects) -> None:
        """Enqueue what a committed transaction asked for. A lost message is found again by
        the sweeper once its lease runs out."""
        actions, size = effects.actions, batch_size_of(self.email)
        if len(actions) > 1 and size > 1:  # many contacts at one step (a schedule's batch)
            batches, actions = group_for_batches(
                self.db, actions, size=size, described=effects.described()
            )
            for batch in batches:
                self.jobs.perform_email_batch.send(batch)
        self._send_singles(actions, transactional=False)
        # Transactional email of many contacts (receipts of one job) shares requests too,
        # on its own queue; CRM actions are not marketing either: many contacts at one
        # update_crm step land here.
        transactional = effects.transactional
        if len(transactional) > 1 and size > 1:
            batches, transactional = group_for_batches(
                self.db, transactional, size=size, described=effects.described(),
                transactional=True,
            )  # fmt: skip
            for batch in batches:
                self.jobs.perform_transactional_batch.send(batch)
        self._send_singles(self._batch_crm(transactional), transactional=True)
        for contact_id in effects.contacts:
            self.jobs.process_contact.send(contact_id)

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

    # --- wiring -------------------------------------------------------------------------

    def _declare_jobs(self) -> Jobs:
        def process_contact(contact_id: int) -> None:
            self.process_contact(contact_id)

        def process_contacts(contact_ids: list[int]) -> None:
            self.process_contacts(contact_ids)

        def perform_action_job(action_id: int) -> None:
            self.perform(action_id)

        def perform_transactional_job(action_id: int) -> None:
            self.perform(action_id)

        def perform_actions_job(action_ids: list[int]) -> None:
            self.perform_many(action_ids)

        def perform_transactional_actions_job(action_ids: list[int]) -> None:
            self.perform_many(action_ids)

        def wake_enrollment(enrollment_id: int) -> None:
            self.wake(enrollment_id)

        def wake_enrollments(enrollment_ids: list[int]) -> None:
            self.wake_many(enrollment_ids)

        def perform_email_batch_job(action_ids: list[int]) -> None:
            self.perform_batch(action_ids)

        def perform_transactional_batch_job(action_ids: list[int]) -> None:
            self.perform_batch(action_ids)

        def perform_crm_batch_job(action_ids: list[int]) -> None:
            self.perform_crm_batch(action_ids)

        def fire_schedule(slot_id: int) -> None:
            self.fire_schedule(slot_id)

        def scheduler_tick(token: str = START) -> None:
            self.periodic_tick(token)

        options: dict[str, Any] = {
            "max_retries": 10,
            "min_backoff": 1_000,
            "max_backoff": 300_000,
            "time_limit": 600_000,
        }

        def declare(
            fn: Callable[_P, None], name: str, queue: str = QUEUE
        ) -> dramatiq.Actor[_P, None]:
            fn.__module__ = __name__
            return dramatiq.Actor(
                fn,
                broker=self.broker,
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
            perform_crm_batch=declare(
                perform_crm_batch_job, "perform_crm_batch", TRANSACTIONAL_QUEUE
            ),
            fire_schedule=declare(fire_schedule, "fire_schedule"),
            scheduler_tick=self._declare_scheduler_tick(scheduler_tick),
        )

    def _declare_scheduler_tick(self, fn: Any) -> dramatiq.Actor[..., None]:
        fn.__module__ = __name__
        interval = timedelta(seconds=self.settings.scheduler_interval_seconds)
        self._watch_every = 2 * interval
        # Worker processes that start the chain also restart it should its message be lost
        # (the in-process broker loses nothing: serve on stub:// ticks in a thread).
        self._watching = self.settings.scheduler_in_workers and not isinstance(
            self.broker, StubBroker
        )
        if self._watching:
            self.broker.add_middleware(
                ChainWatch(self.watch_scheduler_chain, every=self._watch_every, name=SCHEDULER_TICK)
            )
        return dramatiq.Actor(
            fn,
            broker=self.broker,
            actor_name=SCHEDULER_TICK,
            queue_name=SCHEDULER_QUEUE,
            priority=0,
            # No retries: the chain re-enqueues itself even when a pass fails.
            options={"max_retries": 0, "time_limit": 600_000},
        )
