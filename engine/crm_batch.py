"""Batched CRM updates: many ``crm.update`` actions in a few HubSpot batch calls.

A ``crm.update`` performed alone costs three requests (upsert, look up, set the lifecycle
stage). When a schedule slot, a broadcast or a sweep brings many of them at once and the CRM
connector is HubSpot, ``perform_crm_batch`` does up to 100 contacts in:

1. **claim** (one transaction): lock the action rows; skip what is done, leased by a live
   worker or not yet due; a row a dead worker left ``sending`` is taken again (the writes
   are idempotent, and step 2 reads before writing); mark every claimed row ``sending`` with
   a lease and count the attempt. An action whose contact already has one in this batch is
   performed alone afterwards (HubSpot refuses a batch naming a contact twice).
2. **send**, outside any transaction:
   ``batch/read`` by email (the properties to write and ``lifecyclestage``), then
   ``batch/upsert`` for the contacts that are new or hold other values (a new contact gets
   its lifecycle stage in the same call), then ``batch/update`` of ``lifecyclestage`` for
   the existing contacts moving forward. A backward move is skipped, as on the single path,
   and noted in the action's ``reason["skipped"]``, unless the performer allows it: then one
   ``batch/update`` clears the value and the next sets it. Reading first is what keeps a
   retried or re-claimed batch from writing twice: a contact that already holds every value
   is not written again. A contact new at the read that another writer created with a later
   stage before our upsert makes HubSpot refuse that upsert: such contacts are read again
   and treated as existing ones (their move skipped and noted, or cleared and set).
3. **record** (one transaction): each action gets its own outcome: ``sent`` with the
   HubSpot contact id (and the note, if any), or the single path's failure rule applied to
   its own error (a contact HubSpot refused fails alone: the connector splits a batch
   refused whole; a 429 or 5xx of a whole call leaves its actions pending for the sweeper,
   which batches them again).

CRM tasks and notes are not batched: HubSpot's engagement batch endpoints would save little
(workflows create few of them) and, with no idempotency key, a timed-out batch would leave
up to 100 of them ``unknown`` instead of one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.crm import CRMBatchResult, HubSpotConnector
from connectors.crm.hubspot import LIFECYCLE_PROPERTY
from engine.actions import CLAIM_COLUMNS, Outcome, RetryPolicy, _finish, record_failure_on
from engine.batch_send import BatchOutcome
from engine.db import transaction
from engine.errors import ConnectorError, PermanentConnectorError
from engine.models import Action, ActionStatus, Contact
from engine.performers import CRMPerformer, Performer, lifecycle_skipped_note

log = logging.getLogger(__name__)

KIND = "crm.update"
CRM_BATCH_SIZE = 100  # HubSpot's batch limit: one job, one call per step
_DONE = (ActionStatus.SENT, ActionStatus.SKIPPED, ActionStatus.FAILED, ActionStatus.UNKNOWN)
_IN_CHUNKS_OF = 1000  # ids per IN (...) list


def batching_performer(performers: Mapping[str, Performer]) -> CRMPerformer | None:
    """The ``crm.update`` performer if it can batch (HubSpot), else None."""
    performer = performers.get(KIND)
    if isinstance(performer, CRMPerformer) and isinstance(performer.connector, HubSpotConnector):
        return performer
    return None


def crm_batches(
    db: Engine, action_ids: Sequence[int], *, size: int = CRM_BATCH_SIZE
) -> tuple[list[list[int]], list[int]]:
    """Split due actions into batches of ``crm.update`` actions (at most ``size`` each) and
    the rest; fewer than two ``crm.update`` actions are not worth a batch, and ``size`` 1
    turns batching off."""
    if len(action_ids) < 2 or size <= 1:
        return [], list(action_ids)
    ids = list(action_ids)
    crm: list[int] = []
    with Session(db) as session:
        for start in range(0, len(ids), _IN_CHUNKS_OF):
            crm += session.exec(
                select(Action.id).where(
                    col(Action.id).in_(ids[start : start + _IN_CHUNKS_OF]), Action.kind == KIND
                )
            ).all()  # type: ignore[arg-type]
    if len(crm) < 2:
        return [], ids
    batched = set(crm)
    crm.sort()
    batches = [crm[start : start + size] for start in range(0, len(crm), size)]
    return batches, [i for i in ids if i not in batched]


@dataclass
class _Item:
    action_id: int
    email: str
    stage: str
    properties: dict[str, Any]
    reason: dict[str, Any]  # the row's, for a note to be added to
    contact_id: str = ""  # HubSpot's, once known
    error: Exception | None = None
    note: dict[str, str] = field(default_factory=dict)  # for reason: a skipped lifecycle move


@dataclass
class _Claim:
    items: list[_Item] = field(default_factory=list)
    alone: list[int] = field(default_factory=list)  # performed one by one after the batch
    statuses: Counter[str] = field(default_factory=Counter)


def perform_crm_batch(
    db: Engine,
    performer: CRMPerformer,
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    policy: RetryPolicy,
    perform_one: Callable[[int], Outcome],
) -> BatchOutcome:
    """Perform ``crm.update`` actions together through HubSpot's batch endpoints; see the
    module docstring. ``perform_one`` is the single path, for what cannot share the batch."""
    connector = performer.connector
    assert isinstance(connector, HubSpotConnector), "batching needs the HubSpot connector"
    outcome = BatchOutcome()
    with transaction(db) as session:
        claim = _claim(session, performer, action_ids, now=now, lease=lease)
    outcome.statuses.update(claim.statuses)
    if claim.items:
        outcome.requests += _send(connector, claim.items, allow_backward=performer.allow_backward)
        outcome.statuses.update(_record(db, claim.items, now=now, policy=policy))
    for action_id in claim.alone:
        outcome.statuses[perform_one(action_id).status] += 1
    return outcome


# --- 1. claim ---------------------------------------------------------------------------


def _claim(
    session: Session,
    performer: CRMPerformer,
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
) -> _Claim:
    claim = _Claim()
    rows = session.execute(
        select(*CLAIM_COLUMNS)  # type: ignore[call-overload]
        .where(col(Action.id).in_(list(action_ids)))
        .order_by(col(Action.id))
        .with_for_update()
    ).all()
    if len(rows) < len(set(action_ids)):
        claim.statuses["missing"] += len(set(action_ids)) - len(rows)
    contacts = {
        c.id: c
        for c in session.execute(
            select(col(Contact.id), col(Contact.email), col(Contact.stage)).where(
                col(Contact.id).in_({r.contact_id for r in rows})
            )
        ).all()
    }
    seen: set[int] = set()
    for row in rows:
        if row.kind != KIND:  # grouping only batches crm.update: the single path decides
            claim.alone.append(row.id)
            continue
        if row.status in _DONE:
            claim.statuses[row.status] += 1
            continue
        if row.status == ActionStatus.SENDING:
            if row.lease_until and row.lease_until > now:
                claim.statuses[ActionStatus.SENDING] += 1  # another worker is on it
                continue
            # crm.update dedupes: writing the same values again is harmless, and the read
            # before writing skips contacts that already hold them.
            log.warning("action %s: lease expired mid-send; taking it again", row.id)
        elif row.next_attempt_at > now:
            claim.statuses[ActionStatus.PENDING] += 1
            continue
        contact = contacts.get(row.contact_id)
        if contact is None:
            action = session.get(Action, row.id)
            assert action is not None  # locked above
            _finish(session, action, ActionStatus.SKIPPED, now=now, error="contact erased")
            claim.statuses[ActionStatus.SKIPPED] += 1
            continue
        if contact.id in seen:
            claim.alone.append(row.id)
            continue
        seen.add(contact.id)
        stage, properties = performer.update_of(row.payload or {}, contact.stage)
        claim.items.append(
            _Item(row.id, contact.email.lower(), stage, properties, dict(row.reason or {}))
        )
    if claim.items:
        session.flush()  # the rare ORM changes above first
        session.execute(
            update(Action)  # type: ignore[arg-type]
            .where(col(Action.id).in_([i.action_id for i in claim.items]))
            .values(
                status=ActionStatus.SENDING,
                attempts=col(Action.attempts) + 1,
                lease_until=now + lease,
                updated_at=now,
            )
        )
    return claim


# --- 2. send ----------------------------------------------------------------------------


def _send(connector: HubSpotConnector, items: list[_Item], *, allow_backward: bool) -> int:
    """Mirror every item into HubSpot; each item ends with its contact id or its error.
    Returns the number of requests made."""
    plan = _Plan(connector, allow_backward=allow_backward)
    for item in items:
        try:
            plan.wanted[item.email] = connector.property_strings(item.properties)
            plan.values[item.email] = connector.lifecycle_value(item.stage)
        except ConnectorError as exc:  # a naive datetime, a stage HubSpot has no value for
            item.error = exc
    live = [i for i in items if i.error is None]
    plan.names = sorted({name for i in live for name in plan.wanted[i.email]})
    read = connector.batch_read_contacts([i.email for i in live], plan.names)
    plan.requests += read.requests
    _fail(live, read, key=lambda i: i.email)

    new: list[_Item] = []
    for item in (i for i in live if i.error is None):
        current = read.records.get(item.email)
        if current is None:  # new to HubSpot: its stage goes in the upsert
            value = plan.values[item.email]
            plan.upserts.append((item.email, {**plan.wanted[item.email], **_stage(value)}))
            new.append(item)
        else:
            plan.existing(item, current.id, current.properties)
    plan.upsert(live)
    # Refused although new at the read: maybe another writer created it since, with a later
    # stage HubSpot will not move back from. Read those again and treat them as existing.
    raced = [
        i for i in new if isinstance(i.error, PermanentConnectorError) and plan.values[i.email]
    ]
    if raced:
        plan.retry_raced(raced)

    backward = [i for i in plan.backward if i.error is None]
    if backward:  # HubSpot only moves forward: empty the value first
        cleared = connector.batch_update_contacts(
            [(i.contact_id, {LIFECYCLE_PROPERTY: ""}) for i in backward]
        )
        plan.requests += cleared.requests
        _fail(backward, cleared, key=lambda i: i.contact_id)
    setting = [i for i in plan.forward + backward if i.error is None]
    if setting:
        moved = connector.batch_update_contacts(
            [(i.contact_id, {LIFECYCLE_PROPERTY: plan.values[i.email]}) for i in setting]
        )
        plan.requests += moved.requests
        _fail(setting, moved, key=lambda i: i.contact_id)
    return plan.requests


@dataclass
class _Plan:
    """What the send writes: the upserts due and the lifecycle moves, with what it read."""

    connector: HubSpotConnector
    allow_backward: bool
    wanted: dict[str, dict[str, str]] = field(default_factory=dict)  # email -> properties
    values: dict[str, str] = field(default_factory=dict)  # email -> lifecyclestage
    names: list[str] = field(default_factory=list)  # the properties to read
    upserts: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    forward: list[_Item] = field(default_factory=list)
    backward: list[_Item] = field(default_factory=list)
    requests: int = 0

    def existing(self, item: _Item, contact_id: str, properties: Mapping[str, Any]) -> None:
        """Plan an item whose contact HubSpot holds: upsert what differs, move the stage."""
        item.contact_id = contact_id
        held = {k: str(v or "") for k, v in properties.items()}
        if any(held.get(k, "") != v for k, v in self.wanted[item.email].items()):
            self.upserts.append((item.email, self.wanted[item.email]))
        previous, value = held.get(LIFECYCLE_PROPERTY, ""), self.values[item.email]
        if not value or previous == value:
            return
        reason = self.connector.backward_reason(previous, value)
        if not reason:
            self.forward.append(item)
        elif self.allow_backward:
            self.backward.append(item)
        else:  # skipped, as set_lifecycle_stage skips it on the single path
            item.note = lifecycle_skipped_note(reason)

    def upsert(self, items: Sequence[_Item]) -> None:
        """Send the upserts planned so far; each item gets its contact id or its error."""
        if not self.upserts:
            return
        upserted = self.connector.batch_upsert_contacts_each(self.upserts)
        self.upserts = []
        self.requests += upserted.requests
        _fail(items, upserted, key=lambda i: i.email)
        for item in items:
            record = upserted.records.get(item.email)
            if record is not None:
                item.contact_id = record.id

    def retry_raced(self, raced: Sequence[_Item]) -> None:
        again = self.connector.batch_read_contacts([i.email for i in raced], self.names)
        self.requests += again.requests
        retried: list[_Item] = []
        for item in raced:
            if item.email in again.errors:  # e.g. a 5xx: the read's error is the one to retry
                item.error = again.errors[item.email]
                continue
            current = again.records.get(item.email)
            previous = str((current.properties if current else {}).get(LIFECYCLE_PROPERTY) or "")
            if current is None or not self.connector.backward_reason(
                previous, self.values[item.email]
            ):
                continue  # not that race: the upsert's own error stands
            item.error = None
            retried.append(item)
            self.existing(item, current.id, current.properties)
        self.upsert(retried)


def _stage(value: str) -> dict[str, str]:
    return {LIFECYCLE_PROPERTY: value} if value else {}


def _fail(items: Sequence[_Item], result: CRMBatchResult, *, key: Callable[[_Item], str]) -> None:
    """Give each item the error its input got, if any (the first error an item gets stays)."""
    for item in items:
        error = result.errors.get(key(item))
        if error is not None and item.error is None:
            item.error = error


# --- 3. record --------------------------------------------------------------------------


def _record(
    db: Engine, items: Sequence[_Item], *, now: datetime, policy: RetryPolicy
) -> Counter[str]:
    statuses: Counter[str] = Counter()
    done = [i for i in items if i.error is None]
    failed = {i.action_id: i.error for i in items if i.error is not None}
    with transaction(db) as session:
        if done:
            table = Action.__table__  # type: ignore[attr-defined]
            # One statement for every row (executemany): each has its own HubSpot id.
            session.connection().execute(
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.status == ActionStatus.SENDING)
                .values(
                    status=ActionStatus.SENT,
                    provider_id=bindparam("b_provider_id"),
                    error=None,
                    lease_until=None,
                    completed_at=now,
                    updated_at=now,
                ),
                [{"b_id": i.action_id, "b_provider_id": i.contact_id} for i in done],
            )
            noted = [i for i in done if i.note]
            if noted:  # rare (a skipped lifecycle move): one more statement for those
                session.connection().execute(
                    update(table)
                    .where(table.c.id == bindparam("b_id"))
                    .values(reason=bindparam("b_reason")),
                    [{"b_id": i.action_id, "b_reason": {**i.reason, **i.note}} for i in noted],
                )
            statuses[ActionStatus.SENT] += len(done)
        if failed:
            actions = session.exec(select(Action).where(col(Action.id).in_(list(failed))))
            for action in actions:
                error = failed[action.id]  # type: ignore[index]
                assert error is not None
                recorded = record_failure_on(session, action, error, now=now, policy=policy)
                statuses[recorded.status] += 1
    return statuses
