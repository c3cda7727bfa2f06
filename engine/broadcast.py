"""Broadcasts: start a workflow now for every contact in its audience (``journeyline
broadcast WORKFLOW``), in pages, with memory flat in the number of contacts.

The audience is the workflow's trigger read as a segment: ``on_condition`` /
``on_segment_joined`` give their condition, ``on_stage_entered(s)`` gives "in stage s";
``entry_if`` narrows it, and a marketing workflow leaves out unsubscribed contacts. Event
triggers have no audience and are refused. Conditions on columns (``stage_in``, ``score``,
``subscribed`` and their ``all_of`` / ``any_of`` / ``not_``) are evaluated in SQL; any other
part (attributes, tags, events, engagement) is evaluated in Python over each page of
contacts the SQL part let through.

Each page of up to ``page_size`` contacts is one transaction (DESIGN.md section 3): the
re-entry rules are checked for the page in one query, then

- **fast path**, when the workflow's first step is ``send_email``: the enrollments and their
  email actions are bulk-inserted (one multi-row INSERT each) with exactly the rows and
  idempotency keys the executor would write; the enrollment is parked at its next step (a
  plain ``wait`` parks it until then; any other step is left to the scheduler, due now);
- **general path**, any other first step: ``start_enrollment`` per contact, as if the trigger
  had fired for each (correct for every workflow, and about as slow as one event each).

The action ids of a committed page go to ``dispatch`` (the runtime enqueues them as one
batched send per page when the email connector batches). Running a broadcast twice enrolls
nobody twice: live enrollments and the re-entry policy are respected, and the unique
``(contact, workflow, entry)`` key stops a concurrent second run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, and_, case, cast, false, func, insert, literal, not_, or_, true
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from engine import known_events, refusals
from engine.conditions import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Eq,
    EvalContext,
    Exists,
    Not,
    OneOf,
    Predicate,
    Score,
    StageIn,
    Subscribed,
)
from engine.db import UTCDateTime, transaction
from engine.effects import Effects
from engine.enrollments import remember_version
from engine.entry import start_enrollment, why_kept_out
from engine.errors import ValidationError
from engine.executor import DISPATCH_LEASE
from engine.models import (
    Action,
    ActionStatus,
    Contact,
    Enrollment,
    EnrollmentStatus,
    SubscriptionStatus,
)
from engine.registry import Registry
from engine.steps import SendEmail, Wait, transactional_ahead
from engine.workflow import ConditionMet, StageEntered, Trigger, Workflow

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
_PAST_THE_END = 10**6  # the executor's position for "nothing left to run"

Dispatch = Callable[[list[int], bool], None]  # (action ids, marketing) after each commit


@dataclass
class BroadcastResult:
    workflow: str
    scanned: int = 0  # contacts the SQL part of the audience let through
    matched: int = 0  # ...and that met the whole audience condition
    enrolled: int = 0
    skipped: int = 0  # matched, but already enrolled or barred by the re-entry policy
    actions: int = 0
    pages: int = 0
    fast_path: bool = False


# Each trigger kind by the name README and workflow code use; the stored spec's names
# (``event_received``, ``condition_met``) are internal and never shown to a user.
PUBLIC_TRIGGER_NAMES = {
    "stage_entered": "on_stage_entered",
    "stage_left": "on_stage_left",
    "event_received": "on_event",
    "condition_met": "on_condition",
    "schedule": "on_schedule",
}


def public_trigger(trigger: Trigger) -> str:
    """``trigger`` as a workflow author writes it, e.g. ``on_event("product.inactive")``."""
    kind = str(type(trigger).kind)  # type: ignore[union-attr]
    name = PUBLIC_TRIGGER_NAMES.get(kind, kind)
    first = getattr(trigger, fields(trigger)[0].name)  # the stage, event type or cron
    return f'{name}("{first}")' if isinstance(first, str) else f"{name}(...)"


def audience_of(workflow: Workflow) -> Condition:
    """The condition a broadcast of ``workflow`` selects contacts with."""
    trigger = workflow.trigger
    if isinstance(trigger, ConditionMet):
        audience: Condition = trigger.condition
    elif isinstance(trigger, StageEntered):
        audience = StageIn((trigger.stage,))
    else:
        raise ValidationError(
            f"workflow {workflow.name!r} is triggered by {public_trigger(trigger)} "
            "and has no audience to broadcast to: use on_condition, on_segment_joined or "
            "on_stage_entered",
            field="workflow",
        )
    parts = [audience]
    if workflow.entry_if is not None:
        parts.append(workflow.entry_if)
    if (
        workflow.exit_on_unsubscribe
        and workflow.sends_marketing
        and not transactional_ahead(workflow.program, 0)
    ):
        # The entry rule (entry.meets_entry_rules): one that also sends a transactional
        # email admits contacts who are not subscribed; its marketing emails are skipped.
        parts.append(Subscribed())
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def broadcast(
    db: Engine,
    registry: Registry,
    name: str,
    *,
    now: datetime,
    dispatch: Dispatch,
    page_size: int = PAGE_SIZE,
) -> BroadcastResult:
    workflow = registry.workflows.get(name)
    if workflow is None:
        known = ", ".join(sorted(registry.workflows)) or "none"
        raise ValidationError(f"no workflow named {name!r} (known: {known})", field="workflow")
    audience = audience_of(workflow)
    clause, exact = sql_filter(audience)
    program = workflow.program
    fast = starts_with_email(workflow)
    result = BroadcastResult(workflow=name, fast_path=fast)
    with transaction(db) as session:
        remember_version(session, registry, workflow, now)
    why = f"broadcast ({audience.describe()})"
    after_id = 0
    while True:
        to_dispatch: list[tuple[list[int], bool]] = []
        with transaction(db) as session:
            page, after_id = _next_page(
                session, audience, clause, exact, after_id, page_size, now, result
            )
            if after_id < 0:
                break
            marketing = fast and bool(program[0].step.marketing)  # type: ignore[union-attr]
            if fast and exact and workflow.reentry.policy == "never":
                # The whole page in SQL: the id range, the audience, and "never enrolled".
                first, last = int(page[0]), int(page[-1])  # type: ignore[arg-type]
                enrolled = _never_enrolled(workflow, clause, first, last)
                action_ids = _enroll_fast(
                    session,
                    workflow,
                    {1: (enrolled, _in_range(first, last))},
                    now=now,
                    why=why,
                )
                entered = len(action_ids)
                to_dispatch.append((action_ids, marketing))
            elif fast:
                entries = _entries(session, workflow, page, now)
                action_ids = _enroll_fast(session, workflow, _by_entry(entries), now=now, why=why)
                entered = len(entries)
                to_dispatch.append((action_ids, marketing))
            else:
                entries = _entries(session, workflow, page, now)
                effects = _enroll_each(session, registry, workflow, entries, now=now, why=why)
                entered = len(entries)
                to_dispatch += [(effects.actions, True), (effects.transactional, False)]
            result.skipped += len(page) - entered
        # Committed: now the jobs may be enqueued (a lost one is found again by the sweeper).
        result.pages += 1
        result.enrolled += entered
        for action_ids, marketing in to_dispatch:
            result.actions += len(action_ids)
            if action_ids:
                dispatch(action_ids, marketing)
    return result


# --- the audience in SQL ----------------------------------------------------------------


def sql_filter(condition: Condition) -> tuple[ColumnElement[bool] | None, bool]:
    """A SQL clause selecting (a superset of) the contacts ``condition`` holds for, and
    whether it is exact (no Python evaluation needed). None: no SQL part at all."""
    if isinstance(condition, StageIn):
        return col(Contact.stage).in_(list(condition.names)), True
    if isinstance(condition, Subscribed):
        return col(Contact.subscription_status) == SubscriptionStatus.SUBSCRIBED, True
    if isinstance(condition, Score):
        clause = _predicate_sql(col(Contact.score), condition.predicate)
        return (clause, True) if clause is not None else (None, False)
    if isinstance(condition, AllOf):
        parts = [sql_filter(c) for c in condition.conditions]
        clauses = [c for c, _ in parts if c is not None]
        exact = all(e for _, e in parts)
        return (and_(*clauses) if clauses else None), exact
    if isinstance(condition, AnyOf):
        parts = [sql_filter(c) for c in condition.conditions]
        if any(c is None for c, _ in parts):
            return None, False  # one part may hold for anyone: no SQL narrowing
        return or_(*[c for c, _ in parts if c is not None]), all(e for _, e in parts)
    if isinstance(condition, Not):
        inner, exact = sql_filter(condition.condition)
        return (not_(inner), True) if inner is not None and exact else (None, False)
    return None, False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _predicate_sql(column: Any, predicate: Predicate) -> ColumnElement[bool] | None:
    """A predicate on a numeric column, where SQL and ``Predicate.test`` agree."""
    if isinstance(predicate, Compare):
        return {  # type: ignore[no-any-return]
            ">": column > predicate.value,
            ">=": column >= predicate.value,
            "<": column < predicate.value,
            "<=": column <= predicate.value,
        }[predicate.op]
    if isinstance(predicate, Eq) and _is_number(predicate.value):
        return column == predicate.value  # type: ignore[no-any-return]
    if isinstance(predicate, Eq):
        return false()  # an int column never equals a string, a bool or None in Python
    if isinstance(predicate, OneOf) and all(_is_number(v) for v in predicate.values):
        return column.in_(list(predicate.values))  # type: ignore[no-any-return]
    if isinstance(predicate, Exists):
        return true()
    return None


# --- pages ------------------------------------------------------------------------------


def _next_page(
    session: Session,
    audience: Condition,
    clause: ColumnElement[bool] | None,
    exact: bool,
    after_id: int,
    page_size: int,
    now: datetime,
    result: BroadcastResult,
) -> tuple[list[Contact] | list[int], int]:
    """The next page of matching contacts after ``after_id`` and the id to continue from
    (-1: no more). Exact audiences read ids only; others read rows to evaluate."""
    where = [col(Contact.id) > after_id]
    if clause is not None:
        where.append(clause)
    if exact:
        ids = list(
            session.exec(
                select(Contact.id).where(*where).order_by(col(Contact.id)).limit(page_size)
            ).all()
        )
        if not ids:
            return [], -1
        result.scanned += len(ids)
        result.matched += len(ids)
        return ids, ids[-1]  # type: ignore[return-value]
    contacts = list(
        session.exec(select(Contact).where(*where).order_by(col(Contact.id)).limit(page_size))
    )
    if not contacts:
        return [], -1
    result.scanned += len(contacts)
    last = contacts[-1].id
    matched = [c for c in contacts if audience.evaluate(EvalContext(session, c, now))]
    result.matched += len(matched)
    return matched, last  # type: ignore[return-value]


def starts_with_email(workflow: Workflow) -> bool:
    """Whether entering ``workflow`` can be written set-based (``enroll_starting_with_email``):
    its first step is an email, and no condition goal or exit could end an entry before it
    (those are evaluated per contact at entry, ``entry.start_enrollment``)."""
    if any(isinstance(item, ConditionMet) for item in (*workflow.goals, *workflow.exit_when)):
        return False
    return bool(workflow.program) and isinstance(workflow.program[0].step, SendEmail)


def enroll_starting_with_email(
    session: Session,
    workflow: Workflow,
    entries: list[tuple[Contact, int]],
    *,
    now: datetime,
    why: str,
) -> list[int]:
    """Enter contacts into a workflow whose first step is an email, each with her entry
    number (``reentries``, then found eligible), set-based: the enrollments and first-step
    actions in one ``INSERT ... SELECT`` each. Returns the new action ids. Schedule slots
    use it for each batch of a time zone's contacts."""
    return _enroll_fast(session, workflow, _by_entry(list(entries)), now=now, why=why)


def reentries(
    session: Session, workflow: Workflow, contacts: Sequence[Contact], now: datetime
) -> list[tuple[Contact, int]]:
    """(contact, entry number) for each of ``contacts`` the re-entry rules let in, in one
    query; each kept out is told to ``engine.refusals``' listeners, as ``start_enrollment``
    tells them (being in the workflow, or its re-entry policy)."""
    return _entries(session, workflow, contacts, now, tell=refusals.listened())


def _entries(
    session: Session,
    workflow: Workflow,
    page: Sequence[Contact] | Sequence[int],
    now: datetime,
    *,
    tell: bool = False,
) -> list[tuple[Any, int]]:
    """(contact or id, entry number) for each contact the re-entry rules let in; with
    ``tell``, a refusal for each one kept out."""
    ids = [p if isinstance(p, int) else p.id for p in page]
    if not ids:
        return []
    live = (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING)
    rows = session.exec(
        select(
            Enrollment.contact_id,
            func.max(Enrollment.entry),
            func.max(Enrollment.started_at),
            func.sum(case((col(Enrollment.status).in_(live), 1), else_=0)),
        )
        .where(Enrollment.workflow == workflow.name, col(Enrollment.contact_id).in_(ids))
        .group_by(col(Enrollment.contact_id))
    ).all()
    previous = {contact_id: (entry, started, n_live) for contact_id, entry, started, n_live in rows}
    policy = workflow.reentry
    entries: list[tuple[Any, int]] = []
    for item, contact_id in zip(page, ids, strict=True):
        if contact_id not in previous:
            entries.append((item, 1))
            continue
        entry, started, n_live = previous[contact_id]
        kept_out: refusals.RefusalKind | None = None
        if n_live:
            kept_out = "in it"  # a workflow holds a contact once at a time
        elif policy.policy == "never" or (
            policy.policy == "after" and policy.after is not None and now < started + policy.after
        ):
            kept_out = "re-entry"
        if kept_out is None:
            entries.append((item, entry + 1))
        elif tell:
            why_not = why_kept_out(kept_out, workflow, entry, started, "still running")
            refusals.refuse(session, contact_id, workflow.name, now, kept_out, why_not)
    return entries


def _never_enrolled(
    workflow: Workflow, clause: ColumnElement[bool] | None, first: int, last: int
) -> ColumnElement[bool]:
    """Contacts with ids in [first, last] in the audience and never in ``workflow``."""
    # The range is repeated inside: with statistics from before the broadcast (an empty
    # enrollments table), PostgreSQL may answer NOT EXISTS with a hash anti-join over every
    # enrollment in the workflow, which grows with each page (at 1,000,000 contacts a page
    # took 300 ms instead of 10). Bounded, the worst plan reads one page's enrollments.
    earlier = (
        select(col(Enrollment.id))
        .where(
            Enrollment.contact_id == Contact.id,
            Enrollment.workflow == workflow.name,
            col(Enrollment.contact_id).between(first, last),
        )
        .exists()
    )
    parts = [col(Contact.id).between(first, last), not_(earlier)]
    if clause is not None:
        parts.append(clause)
    return and_(*parts)


Selection = dict[int, tuple[ColumnElement[bool], Callable[[Any], ColumnElement[bool]]]]
"""entry number -> (which contacts to enroll, and the same contacts as a condition on any
table's ``contact_id`` column) for ``_enroll_fast``."""


def _in_range(first: int, last: int) -> Callable[[Any], ColumnElement[bool]]:
    return lambda contact_id: contact_id.between(first, last)  # type: ignore[no-any-return]


def _in_list(ids: list[int]) -> Callable[[Any], ColumnElement[bool]]:
    return lambda contact_id: contact_id.in_(ids)  # type: ignore[no-any-return]


def _by_entry(entries: list[tuple[Any, int]]) -> Selection:
    ids: dict[int, list[int]] = {}
    for item, entry in entries:
        ids.setdefault(entry, []).append(item if isinstance(item, int) else item.id)
    return {entry: (col(Contact.id).in_(group), _in_list(group)) for entry, group in ids.items()}


def _enroll_fast(
    session: Session,
    workflow: Workflow,
    selection: Selection,
    *,
    now: datetime,
    why: str,
) -> list[int]:
    """Insert the enrollments and their first-step email actions for one page, set-based
    (``INSERT ... SELECT``, one statement per table and entry number). ``selection`` maps an
    entry number to the contacts to enroll with it, and to a condition on ``contact_id``
    selecting the same contacts' rows in other tables."""
    if not selection:
        return []
    program = workflow.program
    first = program[0]
    step = first.step
    assert isinstance(step, SendEmail)
    context: dict[str, Any] = {"trigger": why, "trail": []}
    wake_at: datetime | None
    status, position, wake_at, ended_at = EnrollmentStatus.WAITING, first.next, now, None
    if first.next is None:
        status, position, wake_at, ended_at = EnrollmentStatus.COMPLETED, len(program), None, now
        context = {**context, "end_reason": "completed"}
    elif isinstance(program[first.next].step, Wait):
        after_wait = program[first.next]
        position = _PAST_THE_END if after_wait.next is None else after_wait.next
        wake_at = now + after_wait.step.duration  # type: ignore[union-attr]
    # else: due now at the next step; the scheduler runs it per contact, as after any wait.
    payload = step.payload()
    reason: dict[str, Any] = {
        "workflow": workflow.name,
        "version": workflow.version,
        "step": first.id,
        "trigger": why,
        "cause_event_id": None,
        "variants": {},
    }
    enrollments = Enrollment.__table__  # type: ignore[attr-defined]
    actions = Action.__table__  # type: ignore[attr-defined]
    action_ids: list[int] = []
    for entry, (contacts_where, same_contacts) in selection.items():
        session.execute(
            insert(enrollments).from_select(
                [
                    "contact_id",
                    "workflow",
                    "version",
                    "entry",
                    "status",
                    "position",
                    "wake_at",
                    "context",
                    "started_at",
                    "updated_at",
                    "ended_at",
                ],
                select(  # type: ignore[call-overload]
                    col(Contact.id),
                    literal(workflow.name),
                    literal(workflow.version),
                    literal(entry),
                    literal(str(status)),
                    literal(position),
                    literal(wake_at, UTCDateTime),
                    literal(context, JSON),
                    literal(now, UTCDateTime),
                    literal(now, UTCDateTime),
                    literal(ended_at, UTCDateTime),
                ).where(contacts_where),
            )
        )
        # The enrollments just written: this entry, this instant, and no action yet (a
        # virtual clock may run two broadcasts at one instant). Both sides are bounded to the
        # page's contacts, so no plan reads the whole table (see ``_never_enrolled``).
        no_action_yet = not_(
            select(col(Action.id))
            .where(Action.enrollment_id == Enrollment.id, same_contacts(col(Action.contact_id)))
            .exists()
        )
        started = select(col(Enrollment.id)).where(
            Enrollment.workflow == workflow.name,
            Enrollment.entry == entry,
            Enrollment.started_at == now,
            same_contacts(col(Enrollment.contact_id)),
            no_action_yet,
        )
        inserted = session.execute(
            insert(actions)
            .from_select(
                [
                    "contact_id",
                    "enrollment_id",
                    "kind",
                    "payload",
                    "idempotency_key",
                    "status",
                    "reason",
                    "attempts",
                    "next_attempt_at",
                    "lease_until",
                    "created_at",
                    "updated_at",
                ],
                select(  # type: ignore[call-overload]
                    col(Enrollment.contact_id),
                    col(Enrollment.id),
                    literal("email"),
                    literal(payload, JSON),
                    # The executor's key for this intent: this enrollment, at this step.
                    literal("enrollment:")
                    + cast(col(Enrollment.id), String)
                    + literal(f":step:{first.id}"),
                    literal(str(ActionStatus.PENDING)),
                    literal(reason, JSON),
                    literal(0),
                    literal(now, UTCDateTime),
                    literal(now + DISPATCH_LEASE, UTCDateTime),
                    literal(now, UTCDateTime),
                    literal(now, UTCDateTime),
                ).where(col(Enrollment.id).in_(started)),
            )
            .returning(actions.c.id)
        )
        action_ids += sorted(inserted.scalars())
    return action_ids


def _enroll_each(
    session: Session,
    registry: Registry,
    workflow: Workflow,
    entries: list[tuple[Any, int]],
    *,
    now: datetime,
    why: str,
) -> Effects:
    """The general path: the executor's own entry, one contact at a time."""
    effects = Effects()
    known_events.batch(session, [item if isinstance(item, int) else item.id for item, _ in entries])
    for item, _entry in entries:
        contact_id = item if isinstance(item, int) else item.id
        # Locked like the event pipeline locks it: one writer per contact at a time.
        contact = session.exec(
            select(Contact).where(Contact.id == contact_id).with_for_update(key_share=True)
        ).first()
        if contact is None:
            continue
        effects.extend(
            start_enrollment(
                session, registry, contact, workflow, now=now, cause_event_id=None, why=why
            )
        )
        session.add(contact)
    return effects
