"""Performing an action through its connector, exactly once per intent (DESIGN.md section 4).

``perform_action`` runs in three steps:

1. **claim** (one transaction): re-read the row; give up if it is done, held by a live lease or
   not yet due; re-check suppression and consent *now*, not when the step was scheduled; defer
   it if a guard rail holds it (and pause the wait its workflow parked at after it, see
   pauses.py); else mark it ``sending`` with a lease and count the attempt.
2. **send**, outside any transaction, through the connector.
3. **record** the outcome (one transaction): ``sent`` with the provider id, ``pending`` with a
   backoff for a transient error, ``failed`` for a permanent one or after the last attempt.

A worker that dies during 2 leaves ``sending`` with an expired lease: the next claim re-sends
only if the connector dedupes on the idempotency key, and otherwise marks the row ``unknown``
for an operator rather than risk a second email.

``perform_actions`` does the same for a few actions in one job: one claim transaction for
all of them, their calls one by one, one transaction recording what the calls returned.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from engine.db import keep, transaction
from engine.errors import (
    ConnectorError,
    DeliveryUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
    unexpected_failure,
)
from engine.guardrails import defer_until
from engine.inbound import reconcile_from_recorded
from engine.models import Action, ActionStatus, Contact, SubscriptionStatus, Suppression
from engine.pauses import Held, pause_workflows
from engine.performers import Call, Performed, Performer, Unconfigured
from engine.registry import Registry
from engine.withdrawals import withdrawal_of, withdrawn_marks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, hint: timedelta | None = None) -> timedelta:
        """Exponential backoff with full jitter; a provider's hint is a floor."""
        ceiling = min(self.backoff * (2 ** max(attempt - 1, 0)), self.max_backoff)
        chosen = timedelta(
            seconds=random.uniform(ceiling.total_seconds() / 2, ceiling.total_seconds())
        )
        return max(chosen, hint) if hint else chosen


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_at: datetime | None = None  # set when the action should be tried again


@dataclass(frozen=True)
class _Claim:
    call: Call
    performer: str
    reason: Mapping[str, Any]  # the row's, for notes the call adds (the lease keeps it ours)
    dedupes: bool  # repeating the call is harmless (see ``unexpected_failure``)


def perform_action(
    db: Engine,
    registry: Registry,
    performers: Mapping[str, Performer],
    action_id: int,
    *,
    now: datetime,
    lease: timedelta,
    policy: RetryPolicy,
) -> Outcome:
    with transaction(db) as session:
        claimed = _claim(session, registry, performers, action_id, now=now, lease=lease)
        if not isinstance(claimed, _Claim):
            return claimed
    done = _call(db, action_id, claimed, now=now, policy=policy)
    if isinstance(done, Outcome):
        return done
    params, notes = done
    statement = _SENT_WITH_NOTES if notes else _SENT
    with transaction(db) as session:
        # One UPDATE, no read: the lease taken in the claim makes this worker the only one
        # finishing the row.
        session.connection().execute(statement, params)
    return Outcome(ActionStatus.SENT)


def perform_actions(
    db: Engine,
    registry: Registry,
    performers: Mapping[str, Performer],
    action_ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    policy: RetryPolicy,
) -> Counter[str]:
    """Several actions performed one by one, as ``perform_action`` does each, but claimed in
    one transaction (in id order) and recorded in another: two commits for the run instead
    of two per action. What each call returns is recorded at the end, also when a later call
    fails; until then the performed actions stay ``sending`` under their lease, so a worker
    that dies here leaves them to the rule for a stopped send, as a single send would. If a
    claim raises, nothing of the run is claimed and each action goes alone instead (the
    first error is raised after the others are done, so the job is retried). Returns the
    count of each outcome."""
    outcome: Counter[str] = Counter()
    ids = sorted(set(action_ids))
    claims: list[tuple[int, _Claim]] = []
    try:
        with transaction(db) as session:
            for action_id in ids:
                claimed = _claim(session, registry, performers, action_id, now=now, lease=lease)
                # Written before the next claim, whose guard rails read a contact's other
                # emails with plain statements: as if each claim had committed on its own
                # (the next claim's ORM read would flush it too; this does not rely on that).
                session.flush()
                if isinstance(claimed, _Claim):
                    claims.append((action_id, claimed))
                else:
                    outcome[claimed.status] += 1
    except Exception as exc:
        log.warning(
            "actions %s: claiming together failed (%s: %s); one by one",
            ids,
            type(exc).__name__,
            exc,
        )
        return _one_by_one(db, registry, performers, ids, now=now, lease=lease, policy=policy)
    done: list[dict[str, Any]] = []
    with_notes: list[dict[str, Any]] = []
    try:
        for action_id, claimed in claims:
            result = _call(db, action_id, claimed, now=now, policy=policy)
            if isinstance(result, Outcome):
                outcome[result.status] += 1
                continue
            params, notes = result
            (with_notes if notes else done).append(params)
    finally:
        if done or with_notes:
            with transaction(db) as session:
                connection = session.connection()
                for statement, rows in ((_SENT, done), (_SENT_WITH_NOTES, with_notes)):
                    if rows:
                        connection.execute(statement, rows)
            outcome[ActionStatus.SENT] += len(done) + len(with_notes)
    return outcome


def _one_by_one(
    db: Engine,
    registry: Registry,
    performers: Mapping[str, Performer],
    ids: Sequence[int],
    *,
    now: datetime,
    lease: timedelta,
    policy: RetryPolicy,
) -> Counter[str]:
    outcome: Counter[str] = Counter()
    failure: Exception | None = None
    for action_id in ids:
        try:
            done = perform_action(
                db, registry, performers, action_id, now=now, lease=lease, policy=policy
            )
        except Exception as exc:
            log.exception("action %s failed on its own too", action_id)
            failure = failure or exc
            continue
        outcome[done.status] += 1
    if failure is not None:
        raise failure
    return outcome


def _call(
    db: Engine, action_id: int, claimed: _Claim, *, now: datetime, policy: RetryPolicy
) -> tuple[dict[str, Any], bool] | Outcome:
    """Perform a claimed action: on success the parameters that record it sent (and whether
    they carry the call's notes); on failure the failure recorded, and its outcome."""
    try:
        result = claimed.call()
    except ConnectorError as exc:
        return _record_failure(db, action_id, exc, now=now, policy=policy)
    except Exception as exc:  # a connector bug: said loudly; retried only if harmless
        log.exception("%s raised unexpectedly for action %s", claimed.performer, action_id)
        failure = unexpected_failure(exc, dedupes=claimed.dedupes)
        return _record_failure(db, action_id, failure, now=now, policy=policy)
    return _sent_params(action_id, result, claimed, now=now)


def _sent_params(
    action_id: int, result: Any, claimed: _Claim, *, now: datetime
) -> tuple[dict[str, Any], bool]:
    """The parameters of ``_SENT`` (or, with the call's notes, ``_SENT_WITH_NOTES``)."""
    params: dict[str, Any] = {"done_id": action_id, "done_at": now, "done_provider_id": result}
    if isinstance(result, Performed):
        params["done_provider_id"] = result.provider_id
        if result.notes:
            params["done_reason"] = {**claimed.reason, **result.notes}
            return params, True
    return params, False


_TABLE = Action.__table__  # type: ignore[attr-defined]
_SENT = (
    _TABLE.update()
    .where(_TABLE.c.id == bindparam("done_id"))
    .values(
        status=ActionStatus.SENT,
        error=None,
        lease_until=None,
        completed_at=bindparam("done_at"),
        updated_at=bindparam("done_at"),
        provider_id=bindparam("done_provider_id"),
    )
)
_SENT_WITH_NOTES = _SENT.values(reason=bindparam("done_reason"))
"""A performed action: built once (``perform_action`` runs per action)."""


# Built once (``perform_action`` runs per email).
CLAIM_COLUMNS = (
    col(Action.id),
    col(Action.contact_id),
    col(Action.kind),
    col(Action.status),
    col(Action.lease_until),
    col(Action.next_attempt_at),
    col(Action.payload),
    col(Action.reason),
    col(Action.idempotency_key),
)
"""What a batch claim (emails, CRM updates) reads of each action: rows, not ORM objects."""

_ACTION = select(Action).where(col(Action.id) == bindparam("action_id")).with_for_update()
_CLAIM = (
    select(Action, Contact, Suppression.reason)
    .join(Contact, col(Contact.id) == col(Action.contact_id))
    .outerjoin(Suppression, col(Suppression.email) == col(Contact.email))
    .where(col(Action.id) == bindparam("action_id"))
    .with_for_update(of=[Action, Contact], key_share=True)
)


def _claim(
    session: Session,
    registry: Registry,
    performers: Mapping[str, Performer],
    action_id: int,
    *,
    now: datetime,
    lease: timedelta,
) -> _Claim | Outcome:
    # The action, its contact and the contact's suppression (if any) in one statement, both
    # rows locked: the contact's lock serialises the cap check below with other sends to
    # them, and the suppression is read now, not when the step was scheduled.
    found = session.exec(_CLAIM, params={"action_id": action_id}).first()
    contact: Contact | None
    if found is None:  # no such action, or its contact was erased
        action = session.exec(_ACTION, params={"action_id": action_id}).first()
        contact, suppression = None, None
    else:
        action, contact, suppression = found
    if action is None:
        return Outcome("missing")
    if action.status in (
        ActionStatus.SENT,
        ActionStatus.SKIPPED,
        ActionStatus.FAILED,
        ActionStatus.UNKNOWN,
    ):
        return Outcome(action.status)
    performer = performers.get(action.kind) or Unconfigured(action.kind, "a connector")
    if action.status == ActionStatus.SENDING:
        if action.lease_until and action.lease_until > now:
            return Outcome(ActionStatus.SENDING)  # another worker is on it
        if not performer.dedupes:
            return mark_unknown(
                session,
                action,
                now=now,
                error=f"a worker stopped during the call and {performer.name} cannot dedupe: "
                f"{_check_before_repeating(action.kind)}",
            )
        log.warning("action %s: lease expired mid-send; re-sending (connector dedupes)", action_id)
    elif action.next_attempt_at > now:
        return Outcome(ActionStatus.PENDING, retry_at=action.next_attempt_at)

    if contact is None:
        _finish(session, action, ActionStatus.SKIPPED, now=now, error="contact erased")
        return Outcome(ActionStatus.SKIPPED)
    held = hold_reason(action, contact, suppression) or withdrawal_of(
        action, withdrawn_marks(session, [action])
    )
    if held:
        action.reason = {**action.reason, "skipped": held}
        _finish(session, action, ActionStatus.SKIPPED, now=now)
        return Outcome(ActionStatus.SKIPPED)

    deferral = defer_until(session, registry, action, contact, now=now)
    if deferral is not None:
        deferred = hold_until(session, action, *deferral, now=now)
        # Its workflow waits for it: the wait after it counts from when it goes (pauses.py).
        pause_workflows(session, registry, [Held(action, contact.timezone, *deferral)], now=now)
        return deferred

    try:
        call = performer.prepare(action, contact, now=now)
    except Exception as exc:  # cannot even be built (a broken template, no connector, a
        # performer's bug): it would fail the same way on every attempt, so it ends failed,
        # visible to ``journeyline actions --failed``, not retried by the broker for ever
        if not isinstance(exc, ConnectorError):
            log.exception("action %s could not be built", action.id)
        _finish(
            session,
            action,
            ActionStatus.FAILED,
            now=now,
            error=f"permanent error: {type(exc).__name__}: {exc}",
        )
        return Outcome(ActionStatus.FAILED)
    action.status = ActionStatus.SENDING
    action.attempts += 1
    action.lease_until = now + lease
    action.updated_at = now
    keep(session, action)
    return _Claim(call, performer.name, dict(action.reason), performer.dedupes)


def hold_until(
    session: Session, action: Action, until: datetime, rule: str, *, now: datetime
) -> Outcome:
    """Defer a marketing email held by a guard rail; its reason keeps the rule and until when."""
    action.reason = held_reason(action.reason, until, rule, now=now)
    action.next_attempt_at = until
    action.lease_until = until  # the sweeper hands it out again when it is due
    action.updated_at = now
    keep(session, action)
    return Outcome(ActionStatus.PENDING, retry_at=until)


def held_reason(
    reason: Mapping[str, Any], until: datetime, rule: str, *, now: datetime
) -> dict[str, Any]:
    """``reason`` with this hold noted last in its ``held`` list (the last twenty kept)."""
    held = [
        *reason.get("held", []),
        {"rule": rule, "at": now.isoformat(), "until": until.isoformat()},
    ]
    return {**reason, "held": held[-20:]}


def hold_reason(action: Action, contact: Contact, suppression: str | None) -> str | None:
    """Why this email must not go out at all, or None, given the contact's suppression
    reason (if any). Checked at send time, every time; callers look the suppression up with
    the contact (``_claim``) or for many contacts at once (batch_send.py)."""
    if action.kind != "email":
        return None
    if suppression is not None:
        return f"suppressed ({suppression})"
    marketing = bool(action.payload.get("marketing", True))
    if marketing and contact.subscription_status != SubscriptionStatus.SUBSCRIBED:
        return f"contact is {contact.subscription_status}"
    return None


def _record_failure(
    db: Engine, action_id: int, exc: Exception, *, now: datetime, policy: RetryPolicy
) -> Outcome:
    with transaction(db) as session:
        action = session.get(Action, action_id)
        if action is None:  # its contact was erased while it was being sent
            log.info(
                "action %s: gone (its contact erased) before its failure was recorded", action_id
            )
            return Outcome("missing")
        return record_failure_on(session, action, exc, now=now, policy=policy)


def mark_unknown(session: Session, action: Action, *, now: datetime, error: str) -> Outcome:
    """Mark an action ``unknown`` (the provider may have acted: never repeated), then settle
    it at once from the provider's events already recorded about it: SendGrid's events for
    an email it accepted can come while the action was still ``sending`` (a worker died
    after the call; a gateway timed out), and were passed over then."""
    _finish(session, action, ActionStatus.UNKNOWN, now=now, error=error)
    if action.kind == "email" and reconcile_from_recorded(session, action, now=now):
        log.info("action %s: settled as %s by events already recorded", action.id, action.status)
        return Outcome(action.status)
    return Outcome(ActionStatus.UNKNOWN)


def record_failure_on(
    session: Session, action: Action, exc: Exception, *, now: datetime, policy: RetryPolicy
) -> Outcome:
    """Record a failed attempt on a claimed action: unknown, failed, or pending a retry."""
    action_id = action.id
    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DeliveryUnknownError):
        log.error("action %s: delivery unknown, not re-sent: %s", action_id, error)
        return mark_unknown(session, action, now=now, error=error)
    permanent = isinstance(exc, PermanentConnectorError)
    if permanent or action.attempts >= policy.max_attempts:
        why = "permanent error" if permanent else f"gave up after {action.attempts} attempts"
        log.error("action %s failed (%s): %s", action_id, why, error)
        _finish(session, action, ActionStatus.FAILED, now=now, error=f"{why}: {error}")
        return Outcome(ActionStatus.FAILED)
    hint = exc.retry_after if isinstance(exc, TransientConnectorError) else None
    retry_at = now + policy.delay(action.attempts, hint)
    log.warning(
        "action %s attempt %s failed, retrying at %s: %s",
        action_id,
        action.attempts,
        retry_at.isoformat(),
        error,
    )
    action.status = ActionStatus.PENDING
    action.error = error
    action.next_attempt_at = retry_at
    action.lease_until = retry_at  # no delayed message: the sweeper dispatches it when due
    action.updated_at = now
    keep(session, action)
    return Outcome(ActionStatus.PENDING, retry_at=retry_at)


def _finish(
    session: Session, action: Action, status: str, *, now: datetime, error: str | None = None
) -> None:
    action.status = status
    action.error = error
    action.lease_until = None
    action.completed_at = now
    action.updated_at = now
    keep(session, action)


@dataclass
class Retried:
    """What ``retry_actions`` did: the actions put back to pending (marketing ones apart,
    as the dispatcher queues them), and those it refused with the reason."""

    marketing: list[int]
    transactional: list[int]
    refused: dict[int, str]
    was_unknown: list[int]  # retried although a provider may already have accepted them

    @property
    def ids(self) -> list[int]:
        return sorted(self.marketing + self.transactional)


RETRYABLE = (ActionStatus.FAILED,)
NEVER_RETRIED = (ActionStatus.SENT, ActionStatus.SKIPPED)


def retry_actions(
    session: Session,
    *,
    ids: Sequence[int] = (),
    failed: bool = False,
    kind: str | None = None,
    since: datetime | None = None,
    unknown_ok: bool = False,
    now: datetime,
    lease: timedelta,
) -> Retried:
    """Put failed actions back to ``pending`` for a fresh run of attempts, after their cause
    was fixed (a wrong API key failed every email). ``ids`` names actions; ``failed`` adds
    every failed one (updated at or after ``since``, of ``kind``, when given).

    Each keeps its idempotency key; its attempts restart from 0, it is due now with a
    dispatch lease (the sweeper hands it out if no message does), and ``reason["retries"]``
    notes the retry and the status and error it had. ``unknown`` actions (a worker stopped
    mid-send, the provider may have accepted it) are refused unless ``unknown_ok``; sent
    and skipped ones, and those not finished, are never touched. The caller enqueues them.
    """
    retryable = [*RETRYABLE, ActionStatus.UNKNOWN] if unknown_ok else list(RETRYABLE)
    found: dict[int, Action] = {}
    if ids:
        named = select(Action).where(col(Action.id).in_(sorted(set(ids)))).with_for_update()
        found.update((a.id, a) for a in session.exec(named) if a.id is not None)
    if failed:
        query = select(Action).where(Action.status == ActionStatus.FAILED)
        if kind is not None:
            query = query.where(Action.kind == kind)
        if since is not None:
            query = query.where(col(Action.updated_at) >= since)
        found.update((a.id, a) for a in session.exec(query.with_for_update()) if a.id is not None)
    done = Retried(marketing=[], transactional=[], refused={}, was_unknown=[])
    for missing in sorted(set(ids) - found.keys()):
        done.refused[missing] = "not found"
    for action_id, action in sorted(found.items()):
        if action.status not in retryable:
            done.refused[action_id] = _not_retried(action.status)
            continue
        if action.status == ActionStatus.UNKNOWN:
            done.was_unknown.append(action_id)
        note = {
            "at": now.isoformat(),
            "status": str(action.status),
            "error": action.error,
            "attempts": action.attempts,
        }
        action.reason = {
            **action.reason,
            "retries": [*action.reason.get("retries", []), note][-20:],
        }
        action.status = ActionStatus.PENDING
        action.attempts = 0
        action.error = None
        action.next_attempt_at = now
        action.lease_until = now + lease
        action.completed_at = None
        action.updated_at = now
        keep(session, action)
        marketing = bool(action.payload.get("marketing", False))  # as the executor queues it
        (done.marketing if marketing else done.transactional).append(action_id)
    return done


def _not_retried(status: str) -> str:
    if status in NEVER_RETRIED:
        return f"{status}: never sent again"
    if status == ActionStatus.UNKNOWN:
        return (
            "unknown: a worker stopped mid-send and the connector cannot dedupe, so the "
            "provider may already have accepted it; check its delivery events, then pass "
            "--unknown-ok to send it again"
        )
    return f"{status}: not failed, already on its way"


def _check_before_repeating(kind: str) -> str:
    """What an operator checks before performing an ``unknown`` action of ``kind`` again."""
    if kind == "email":
        return "check delivery events before sending again"
    if kind.startswith("crm."):
        return "check the CRM for it before performing it again"
    return "check with the receiver before performing it again"
