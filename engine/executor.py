"""Running workflow enrollments: enter, walk the compiled program, wait, resume, end.

All of it happens inside the caller's transaction (DESIGN.md section 3): the enrollment's new
position and the action rows its steps write commit together, so a step runs once. Every
decision (a branch taken, a variant drawn, a step skipped) is written to the enrollment's
``context["trail"]``, and every action's ``reason`` says which workflow, version, step and
event caused it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import object_session
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Session, col, func, select

from engine import known_enrollments
from engine.conditions import context_for
from engine.db import keep
from engine.localtime import (
    at_local,
    date_problem,
    next_time_of_day,
    parse_hhmm,
    parse_instant,
    zone,
)
from engine.models import (
    Action,
    ActionStatus,
    Contact,
    Enrollment,
    EnrollmentStatus,
    WorkflowVersion,
)
from engine.new_rows import new_row
from engine.registry import Registry
from engine.spec import from_spec
from engine.steps import (
    Branch,
    CallWebhook,
    ChangeScore,
    CreateCRMNote,
    CreateCRMTask,
    Exit,
    MoveStage,
    Node,
    SendEmail,
    SetAttribute,
    Split,
    Tag,
    UpdateCRM,
    Wait,
    WaitForEvent,
    WaitUntil,
    WaitUntilDate,
    transactional_ahead,
)
from engine.workflow import ConditionMet, Workflow

log = logging.getLogger(__name__)

# The sweeper re-dispatches a pending action only after this; the normal path is faster.
DISPATCH_LEASE = timedelta(minutes=5)
LIVE = known_enrollments.LIVE


ActionFields = tuple[str, dict[str, Any], dict[str, Any]]
"""An action's kind, payload and reason."""


class Effects:
    """What a transaction asks to be enqueued once it has committed: marketing actions,
    transactional ones (they jump the marketing queue), and contacts with pending events
    left to process.

    A step's new action is kept as the object, not flushed for its id there and then, so a
    job's actions reach the database in one multi-row INSERT at its next flush. Reading
    ``actions`` or ``transactional`` gives ids: after the commit from each object's identity;
    inside the transaction, flushing the session first if some were not written yet."""

    def __init__(
        self,
        actions: Iterable[int] = (),
        transactional: Iterable[int] = (),
        contacts: Iterable[int] = (),
    ) -> None:
        self._marketing: list[int | Action] = list(actions)
        self._transactional: list[int | Action] = list(transactional)
        self.contacts: list[int] = list(contacts)
        # What grouping into batches reads of a new action, kept as written: after the
        # commit the objects' attributes are expired, and re-reading them costs a query.
        self._described: list[tuple[Action, ActionFields]] = []

    def add_action(self, action: Action, *, marketing: bool) -> None:
        (self._marketing if marketing else self._transactional).append(action)
        self._described.append((action, (action.kind, action.payload, action.reason)))

    def described(self) -> dict[int, ActionFields]:
        """Action id -> (kind, payload, reason) of the actions these effects wrote."""
        return {inspect(action).identity[0]: fields for action, fields in self._described}

    @property
    def actions(self) -> list[int]:
        return _ids(self._marketing)

    @property
    def transactional(self) -> list[int]:
        return _ids(self._transactional)

    def extend(self, other: Effects) -> None:
        self._marketing.extend(other._marketing)
        self._transactional.extend(other._transactional)
        self.contacts.extend(other.contacts)
        self._described.extend(other._described)

    def __repr__(self) -> str:
        return (
            f"Effects(actions={self.actions}, transactional={self.transactional}, "
            f"contacts={self.contacts})"
        )


def _ids(items: list[int | Action]) -> list[int]:
    unwritten = [i for i in items if not isinstance(i, int) and inspect(i).identity is None]
    if unwritten:
        session = object_session(unwritten[0])
        if session is None:
            raise RuntimeError("an action of these effects was never written (rolled back?)")
        session.flush()
    return [i if isinstance(i, int) else inspect(i).identity[0] for i in items]


def workflow_for(session: Session, registry: Registry, name: str, version: str) -> Workflow | None:
    """The definition an enrollment runs on: the current one, or its own older version."""
    current = registry.workflows.get(name)
    if current is not None and current.version == version:
        return current
    cache: dict[tuple[str, str], Workflow] = registry.__dict__.setdefault("_versions", {})
    if (name, version) not in cache:
        row = session.exec(
            select(WorkflowVersion).where(
                WorkflowVersion.workflow == name, WorkflowVersion.version == version
            )
        ).first()
        if row is None:
            return None
        cache[(name, version)] = from_spec(row.spec)
    return cache[(name, version)]


def remember_version(
    session: Session, registry: Registry, workflow: Workflow, now: datetime
) -> None:
    """Store this version's spec once, so enrollments on it can finish after the code moves
    on. Checked once per process per version; concurrent writers meet the unique key."""
    seen: set[tuple[str, str]] = registry.__dict__.setdefault("_stored_versions", set())
    key = (workflow.name, workflow.version)
    if key in seen:
        return
    store_version(session, workflow, now)
    seen.add(key)


def store_version(session: Session, workflow: Workflow, now: datetime) -> datetime:
    """Store this version's spec unless it is stored already; return when it first was."""
    query = select(WorkflowVersion.created_at).where(
        WorkflowVersion.workflow == workflow.name, WorkflowVersion.version == workflow.version
    )
    created = session.exec(query).first()
    if created is not None:
        return created
    try:
        with session.begin_nested():
            session.add(
                WorkflowVersion(
                    workflow=workflow.name,
                    version=workflow.version,
                    spec=workflow.spec,
                    created_at=now,
                )
            )
    except IntegrityError:  # another worker stored the same version a moment ago
        return session.exec(query).one()
    return now


def start_enrollment(
    session: Session,
    registry: Registry,
    contact: Contact,
    workflow: Workflow,
    *,
    now: datetime,
    cause_event_id: int | None,
    why: str,
) -> Effects:
    """Enter ``contact`` into ``workflow`` if its entry rules allow, and run to the first wait."""
    previous = _latest_entry(session, contact.id, workflow.name)  # type: ignore[arg-type]
    if previous is not None:
        if previous.status in LIVE:
            return Effects()  # already in it: a workflow holds a contact once at a time
        policy = workflow.reentry
        if policy.policy == "never":
            return Effects()
        if (
            policy.policy == "after"
            and policy.after is not None
            and now < previous.started_at + policy.after
        ):
            return Effects()
    if not meets_entry_rules(session, workflow, contact, now):
        return Effects()
    remember_version(session, registry, workflow, now)
    enrollment = new_row(
        Enrollment,
        contact_id=contact.id,  # type: ignore[arg-type]
        workflow=workflow.name,
        version=workflow.version,
        entry=(previous.entry + 1) if previous else 1,
        status=EnrollmentStatus.ACTIVE,
        cause_event_id=cause_event_id,
        context={"trigger": why, "trail": []},
        started_at=now,
        updated_at=now,
    )
    session.add(enrollment)  # written at the next flush, with its actions (see action_key)
    known_enrollments.added(session, enrollment)
    met = _met_at_entry(session, workflow, contact, enrollment, now)
    if met is not None:
        reason, status = met
        log.info("contact %s entered %s and left it at once: %s", contact.id, workflow.name, reason)
        end_enrollment(session, enrollment, now=now, reason=reason, status=status)
        return Effects()
    return advance(session, registry, contact, enrollment, now=now)


def _met_at_entry(
    session: Session, workflow: Workflow, contact: Contact, enrollment: Enrollment, now: datetime
) -> tuple[str, str] | None:
    """Why, and with which status, a new enrollment ends before its first step: one of the
    workflow's condition goals (``on_condition`` in ``goals``) already holds (converted),
    else one of its condition exits (exited), as HubSpot unenrolls a contact who meets the
    goal when enrolled. Read as of the event being applied and for this enrollment (it has
    sent nothing, so ``opened(...)`` is false; ``did_event`` without ``within`` counts from
    now). A goal turning true later still ends it in the pipeline, as before."""
    goals = [g.condition for g in workflow.goals if isinstance(g, ConditionMet)]
    exits = [x.condition for x in workflow.exit_when if isinstance(x, ConditionMet)]
    if not goals and not exits:
        return None
    ctx = context_for(session, contact, now, enrollment)
    for goal in goals:
        if goal.evaluate(ctx):
            return f"goal already met at entry: {goal.describe()}", EnrollmentStatus.CONVERTED
    for exit_rule in exits:
        if exit_rule.evaluate(ctx):
            return (
                f"exit condition already met at entry: {exit_rule.describe()}",
                EnrollmentStatus.EXITED,
            )
    return None


def _latest_entry(
    session: Session, contact_id: int, workflow: str
) -> Enrollment | known_enrollments.PastEntry | None:
    known = known_enrollments.known_for(session, contact_id)
    if known is not None:
        return max((e for e in known if e.workflow == workflow), key=_entry, default=None)
    return session.exec(
        select(Enrollment)
        .where(Enrollment.contact_id == contact_id, Enrollment.workflow == workflow)
        .order_by(col(Enrollment.entry).desc())
    ).first()


def _entry(enrollment: Enrollment | known_enrollments.PastEntry) -> int:
    return enrollment.entry


def meets_entry_rules(
    session: Session, workflow: Workflow, contact: Contact, now: datetime
) -> bool:
    """The workflow's own entry checks, after its trigger and before its re-entry policy: the
    ``entry_if`` condition, and consent: a contact who is not subscribed is refused by a
    workflow that sends marketing email, leaves on unsubscribe and sends no transactional
    email. One that also sends a transactional email (a receipt) admits them: the receipt
    goes and its marketing emails are skipped at send time ("contact is unsubscribed"), as
    ``exit_unsubscribed`` leaves it running for a contact who unsubscribes on the way.

    A refusal writes no row (an enrollment would count for the re-entry policy): it is
    logged, naming the contact, the workflow and why."""
    if workflow.entry_if is not None and not workflow.entry_if.evaluate(
        context_for(session, contact, now)
    ):
        log.debug("contact %s does not meet the entry rule of %s", contact.id, workflow.name)
        return False
    if (
        contact.subscription_status != "subscribed"
        and workflow.exit_on_unsubscribe
        and workflow.sends_marketing
        and not transactional_ahead(workflow.program, 0)
    ):
        log.info(
            "contact %s not enrolled in %s: contact is %s and the workflow sends only "
            "marketing email",
            contact.id,
            workflow.name,
            contact.subscription_status,
        )
        return False
    return True


def advance(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    *,
    now: datetime,
) -> Effects:
    """Run from ``enrollment.position`` until a wait, an exit or the end."""
    effects = Effects()
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return effects
    program = workflow.program
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.wake_at = None
    if any(key in enrollment.context for key in _ABOUT_THE_WAIT):
        enrollment.context = {
            k: v for k, v in enrollment.context.items() if k not in _ABOUT_THE_WAIT
        }
    position: int | None = enrollment.position
    while position is not None and position < len(program):
        node = program[position]
        step = node.step
        if isinstance(step, Wait | WaitUntil | WaitUntilDate):
            wake = _wake_time(step, contact, now)
            position = node.next
            if wake is not None and wake > now:
                _park(enrollment, position, wake, now)
                # Followed if the date changes, or the contact's time zone (a local time).
                if isinstance(step, WaitUntilDate):
                    waiting = {"attribute": step.attribute, "step": node.id}
                    enrollment.context = {
                        **enrollment.context,
                        WAITING_UNTIL_DATE: {**waiting, "zone": contact.timezone},
                    }
                elif isinstance(step, WaitUntil):
                    enrollment.context = {
                        **enrollment.context,
                        WAITING_UNTIL_TIME: {"step": node.id, "zone": contact.timezone},
                    }
                return effects
            if wake is None:
                assert isinstance(step, WaitUntilDate)  # the only wait that may have no time
                note = _without_a_date(contact, enrollment, step, "went on")
            else:
                note = "wait already over: went on"
            _trail(enrollment, node, now, note)
            continue
        if isinstance(step, WaitForEvent):
            enrollment.context = {
                **enrollment.context,
                "waiting_for": {"type": step.type, "step": node.id},
            }
            _park(enrollment, position, now + step.timeout, now)
            return effects
        if isinstance(step, Exit):
            end_enrollment(session, enrollment, now=now, reason=step.reason)
            return effects
        position = _run(session, registry, contact, enrollment, workflow, node, now, effects)
        if enrollment.status not in LIVE:  # a step (move_stage) ended this enrollment
            return effects
    enrollment.position = len(program)
    end_enrollment(
        session, enrollment, now=now, reason="completed", status=EnrollmentStatus.COMPLETED
    )
    return effects


def resume_on_event(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    *,
    now: datetime,
    event_id: int | None,
) -> Effects:
    """The event a ``wait_for_event`` waited for arrived first: take its path."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return Effects()
    node = workflow.program[enrollment.position]
    _trail(enrollment, node, now, f"event arrived first (event {event_id})")
    return _jump(session, registry, contact, enrollment, node.targets["event"], now)


def wake(
    session: Session, registry: Registry, contact: Contact, enrollment: Enrollment, *, now: datetime
) -> Effects:
    """A wait is over: a plain wait goes on; a wait for an event takes its timeout path. A
    wait for a local time computed in a zone the contact has left since (her new zone was
    recorded, not yet applied: ``follow_zone_changes``) waits on for that time in her zone."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        end_enrollment(session, enrollment, now=now, reason="workflow version no longer known")
        return Effects()
    if "waiting_for" in enrollment.context and enrollment.position < len(workflow.program):
        node = workflow.program[enrollment.position]
        _trail(enrollment, node, now, "timed out waiting for the event")
        return _jump(session, registry, contact, enrollment, node.targets["timeout"], now)
    if _rezoned(session, registry, contact, enrollment, now=now):
        return Effects()
    return advance(session, registry, contact, enrollment, now=now)


def end_enrollment(
    session: Session,
    enrollment: Enrollment,
    *,
    now: datetime,
    reason: str,
    status: str = EnrollmentStatus.EXITED,
) -> None:
    enrollment.status = status
    enrollment.wake_at = None
    enrollment.ended_at = now
    enrollment.updated_at = now
    context = {k: v for k, v in enrollment.context.items() if k not in _ENDED_WITHOUT}
    enrollment.context = {**context, "end_reason": reason}
    keep(session, enrollment)


# --- internals --------------------------------------------------------------------------


def _jump(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    target: int | None,
    now: datetime,
) -> Effects:
    enrollment.context = {k: v for k, v in enrollment.context.items() if k != "waiting_for"}
    if target is None:
        enrollment.position = 10**6  # past the end: advance completes it
    else:
        enrollment.position = target
    return advance(session, registry, contact, enrollment, now=now)


WAITING_UNTIL_DATE = "waiting_until_date"
"""In a waiting enrollment's context: the date attribute its wait is counted from, the wait
step, and the contact's time zone when the wake-up was computed (``follow_date_changes``
moves the wake-up when the date changes, ``follow_zone_changes`` when the zone does: a date
without an offset, and a ``time=``, are local)."""

WAITING_UNTIL_TIME = "waiting_until_time"
"""In a waiting enrollment's context: its wait until a time of day (``wait_until``) and the
contact's time zone when the wake-up was computed (``follow_zone_changes``)."""

PAUSED = "paused"
"""In a waiting enrollment's context: its relative wait was extended because an email
written just before it was held by a guard rail (engine/pauses.py): the wait step, when
the wait began, and the hold that set its wake-up."""

_ABOUT_THE_WAIT = (WAITING_UNTIL_DATE, WAITING_UNTIL_TIME, PAUSED)
"""Context keys that describe the wait an enrollment is parked at: gone when it runs on."""
_ENDED_WITHOUT = ("waiting_for", PAUSED)
"""Context keys an ended enrollment no longer needs."""
_LOCAL_WAITS = (WAITING_UNTIL_DATE, WAITING_UNTIL_TIME)


def follow_date_changes(
    session: Session,
    registry: Registry,
    contact: Contact,
    changed: Iterable[str],
    *,
    now: datetime,
    running: Enrollment | None = None,
) -> None:
    """The contact's attributes ``changed`` (by an event, an import, or a ``set_attribute``
    step of the enrollment ``running``, which is left alone: it is not waiting): a wait
    counted from one of them (``wait_until_date``) wakes at the time the new date gives, as
    a trial extended by two weeks moves its "3 days before it ends" reminder; a date
    removed, moved into the past, or replaced by something that is not a date, wakes it now
    (as a wait that starts without a date goes straight on)."""
    names = set(changed)
    if not names:
        return
    for enrollment, waiting in _parked_at_local_waits(
        session, contact, running, WAITING_UNTIL_DATE
    ):
        if waiting["attribute"] not in names:
            continue
        node = _wait_node(session, registry, enrollment, waiting, (WaitUntilDate,))
        if node is None:
            continue
        assert isinstance(node.step, WaitUntilDate)
        moved_to = _moved_wake(node.step, contact, now)
        if date_problem(contact.attributes.get(node.step.attribute)) is not None:
            note = _without_a_date(
                contact, enrollment, node.step, f"wakes at {moved_to.isoformat()}"
            )
        else:
            note = f"{waiting['attribute']} changed: wakes at {moved_to.isoformat()}"
        _rewake(session, contact, enrollment, WAITING_UNTIL_DATE, node, moved_to, now, note)


def follow_zone_changes(
    session: Session,
    registry: Registry,
    contact: Contact,
    *,
    now: datetime,
) -> None:
    """The contact's time zone is not the one a waiting enrollment's local-time wake-up was
    computed in (``wait_until("10:00")``, ``wait_until_date`` at a time or from a date
    without an offset): it wakes at that time in the new zone, the next ``10:00`` there, or
    now if the date's time there has passed; as quiet hours, and Braze's and Customer.io's
    local-time sends, follow the contact's current zone. Relative waits stay."""
    for enrollment, _waiting in _parked_at_local_waits(session, contact, None, *_LOCAL_WAITS):
        _rezoned(session, registry, contact, enrollment, now=now)


def _parked_at_local_waits(
    session: Session, contact: Contact, running: Enrollment | None, *keys: str
) -> Iterator[tuple[Enrollment, dict[str, Any]]]:
    """The contact's waiting enrollments parked at a wait that ``keys`` of their context
    describe, with what it says of the wait; never ``running``, the enrollment whose step
    asks (it is mid-run: its state is its caller's)."""
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        if enrollment is running or enrollment.status != EnrollmentStatus.WAITING:
            continue
        for key in keys:
            waiting = enrollment.context.get(key)
            if waiting:
                yield enrollment, waiting
                break


def _rezoned(
    session: Session, registry: Registry, contact: Contact, enrollment: Enrollment, *, now: datetime
) -> bool:
    """If ``enrollment`` waits for a local time computed in another zone than the contact's,
    move its wake-up to that time in her zone; whether it then still lies ahead. (Checked
    on waking too, for a zone recorded but not applied yet when the old wake-up came.)"""
    key = next((k for k in _LOCAL_WAITS if enrollment.context.get(k)), None)
    if key is None:
        return False
    waiting = enrollment.context[key]
    if waiting.get("zone", contact.timezone) == contact.timezone:
        return False  # the same zone; or parked before zones were noted: left as it is
    node = _wait_node(session, registry, enrollment, waiting, (WaitUntil, WaitUntilDate))
    if node is None:
        return False
    assert isinstance(node.step, WaitUntil | WaitUntilDate)
    moved_to = _moved_wake(node.step, contact, now)
    note = f"time zone changed to {contact.timezone}: wakes at {moved_to.isoformat()}"
    _rewake(session, contact, enrollment, key, node, moved_to, now, note)
    return moved_to > now


def _wait_node(
    session: Session,
    registry: Registry,
    enrollment: Enrollment,
    waiting: dict[str, Any],
    kinds: tuple[type, ...],
) -> Node | None:
    """The wait step ``waiting`` names in the enrollment's workflow, if still one of ``kinds``."""
    workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
    if workflow is None:
        return None
    node = next((n for n in workflow.program if n.id == waiting["step"]), None)
    return node if node is not None and isinstance(node.step, kinds) else None


def _moved_wake(step: WaitUntil | WaitUntilDate, contact: Contact, now: datetime) -> datetime:
    """When a wait the contact is parked at wakes, computed again now: its time if still
    ahead, else now (no date, or one already past)."""
    wake = _wake_time(step, contact, now)
    return wake if wake is not None and wake > now else now


def _rewake(
    session: Session,
    contact: Contact,
    enrollment: Enrollment,
    key: str,
    node: Node,
    moved_to: datetime,
    now: datetime,
    note: str,
) -> None:
    """Move a waiting enrollment's wake-up to ``moved_to`` (noting why in its trail, if it
    moves), computed in the contact's current zone, which its context now records."""
    waiting = enrollment.context[key]
    if moved_to == enrollment.wake_at and waiting.get("zone") == contact.timezone:
        return
    enrollment.context = {**enrollment.context, key: {**waiting, "zone": contact.timezone}}
    if moved_to != enrollment.wake_at:
        _trail(enrollment, node, now, note)
        enrollment.wake_at = moved_to
    enrollment.updated_at = now
    keep(session, enrollment)


def _without_a_date(
    contact: Contact, enrollment: Enrollment, step: WaitUntilDate, outcome: str
) -> str:
    """The trail note of a date wait that has no date to count from and so ``outcome``
    ("went on"). A value that is not a date (stored before dates were checked, or from a
    provider's webhook, which is not refused) is also logged as a warning: its workflow
    goes on without waiting, which its author will want to know."""
    value = contact.attributes.get(step.attribute)
    if date_problem(value) is None:  # nothing there
        return f"no {step.attribute}: {outcome}"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    log.warning(
        "contact %s, workflow %s: %s holds %s, not a date: %s (give an ISO 8601 date or time, "
        "or a Unix time)",
        contact.id,
        enrollment.workflow,
        step.attribute,
        shown,
        outcome,
    )
    return f"{step.attribute} holds {shown}, not a date: {outcome}"


_UNSET = object()


def _park(enrollment: Enrollment, position: int | None, wake_at: datetime, now: datetime) -> None:
    enrollment.position = 10**6 if position is None else position
    enrollment.status = EnrollmentStatus.WAITING
    enrollment.wake_at = wake_at
    enrollment.updated_at = now


def _trail(enrollment: Enrollment, node: Node, now: datetime, note: str) -> None:
    enrollment.context = with_trail(enrollment.context, node.id, now, note)


def with_trail(
    context: dict[str, Any], step: str, now: datetime, note: str, **marks: Any
) -> dict[str, Any]:
    """``context`` with a note on ``step`` added to its trail (the last fifty kept);
    ``marks`` are extra keys of the note (``kind="paused"``: the timeline shows it)."""
    trail = [
        *context.get("trail", []),
        {"step": step, "at": now.isoformat(), "note": note, **marks},
    ]
    return {**context, "trail": trail[-50:]}


def _wake_time(
    step: Wait | WaitUntil | WaitUntilDate, contact: Contact, now: datetime
) -> datetime | None:
    if isinstance(step, Wait):
        return now + step.duration
    if isinstance(step, WaitUntil):
        return next_time_of_day(now, contact.timezone, step.time, weekdays_only=step.weekdays_only)
    instant = parse_instant(contact.attributes.get(step.attribute), contact.timezone)
    if instant is None:
        return None  # no date (or not a date: the caller says so): nothing to wait for
    target = instant + step.offset
    if step.time:
        tz = zone(contact.timezone)
        local_day = (instant.astimezone(tz) + step.offset).date()
        target = at_local(local_day, parse_hhmm(step.time), tz)
    return target


def _run(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    workflow: Workflow,
    node: Node,
    now: datetime,
    effects: Effects,
) -> int | None:
    """Run one non-waiting step; return the next position."""
    step = node.step
    if isinstance(step, Branch):
        ctx = context_for(session, contact, now, enrollment)
        taken = "then" if step.condition.evaluate(ctx) else "else"
        _trail(enrollment, node, now, f"{step.condition.describe()}: {taken}")
        return node.targets[taken]
    if isinstance(step, Split):
        variant = choose_variant(step.weights, f"{contact.id}:{workflow.name}:{node.id}")
        variants = {**enrollment.context.get("variants", {}), node.id: variant}
        enrollment.context = {**enrollment.context, "variants": variants}
        _trail(enrollment, node, now, f"variant {variant}")
        return node.targets[variant]
    if isinstance(step, SetAttribute):
        changed = contact.attributes.get(step.name, _UNSET) != step.value
        contact.attributes = {**contact.attributes, step.name: step.value}
        if changed:  # a trial extended by a step moves a reminder as an input would
            follow_date_changes(
                session, registry, contact, (step.name,), now=now, running=enrollment
            )
    elif isinstance(step, Tag):
        tags = [t for t in (contact.attributes.get("tags") or []) if t != step.tag]
        if not step.remove:
            tags.append(step.tag)
        contact.attributes = {**contact.attributes, "tags": sorted(tags)}
    elif isinstance(step, ChangeScore):
        contact.score += step.delta
    elif isinstance(step, MoveStage):
        _move(session, registry, contact, enrollment, node, step, now, effects)
    else:
        action = _action(contact, enrollment, workflow, node, now)
        session.add(action)  # written with the job's next flush (see Effects)
        effects.add_action(action, marketing=bool(action.payload.get("marketing", False)))
    contact.updated_at = now
    keep(session, contact)
    return node.next


def _move(
    session: Session,
    registry: Registry,
    contact: Contact,
    enrollment: Enrollment,
    node: Node,
    step: MoveStage,
    now: datetime,
    effects: Effects,
) -> None:
    from engine.pipeline import change_stage

    if not registry.machine.allows(contact.stage, step.trigger):
        _trail(
            enrollment, node, now, f"stage {contact.stage} does not allow {step.trigger}: skipped"
        )
        return
    move = registry.machine.fire(
        email=contact.email,
        stage=contact.stage,
        trigger=step.trigger,
        score=contact.score,
        attributes=contact.attributes,
    )
    if not move.moved:
        _trail(enrollment, node, now, f"{step.trigger} held by guard {move.refused_by}")
        return
    enrollment.position = node.next if node.next is not None else 10**6
    effects.extend(
        change_stage(
            session,
            registry,
            contact,
            move.dest,
            trigger=step.trigger,
            now=now,
            event_id=None,
            cause=f"workflow {enrollment.workflow}",
        )
    )


def choose_variant(weights: dict[str, int] | Any, key: str) -> str:
    """Deterministic weighted choice: the same contact always lands in the same variant."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % sum(weights.values())
    for name, weight in sorted(weights.items()):
        if bucket < weight:
            return str(name)
        bucket -= weight
    raise AssertionError("unreachable: buckets cover the total weight")


def _action(
    contact: Contact, enrollment: Enrollment, workflow: Workflow, node: Node, now: datetime
) -> Action:
    step = node.step
    kind: str
    payload: dict[str, Any]
    if isinstance(step, SendEmail):
        kind, payload = "email", step.payload()
    elif isinstance(step, UpdateCRM):
        kind, payload = (
            "crm.update",
            {
                "properties": dict(step.properties),
                "stage": contact.stage,
                "score": contact.score,
                "workflow": workflow.name,
            },
        )
    elif isinstance(step, CreateCRMTask):
        due = (now + step.due_in).isoformat() if step.due_in else None
        kind, payload = "crm.task", {"subject": step.subject, "body": step.body, "due_at": due}
    elif isinstance(step, CreateCRMNote):
        kind, payload = "crm.note", {"body": step.body}
    elif isinstance(step, CallWebhook):
        kind, payload = "webhook", {"url": step.url, "payload": dict(step.payload)}
    else:
        raise AssertionError(f"not an action step: {step!r}")
    action = new_row(
        Action,
        contact_id=contact.id,  # type: ignore[arg-type]
        enrollment_id=enrollment.id,
        kind=kind,
        payload=payload,
        # Derived from the intent: this enrollment, at this step. A retry, a redelivered
        # message or a second worker computes the same key and the unique constraint holds.
        idempotency_key=(
            _AWAITS_ENROLLMENT_ID if enrollment.id is None else action_key(enrollment.id, node.id)
        ),
        status=ActionStatus.PENDING,
        reason={
            "workflow": workflow.name,
            "version": enrollment.version,
            "step": node.id,
            "trigger": enrollment.context.get("trigger", ""),
            "cause_event_id": enrollment.cause_event_id,
            "variants": enrollment.context.get("variants", {}),
        },
        next_attempt_at=now,
        lease_until=now + DISPATCH_LEASE,
        created_at=now,
        updated_at=now,
    )
    if enrollment.id is None:  # started in this flush: the unit of work fills the id in
        set_attribute(action, "enrollment", enrollment)
    return action


def action_key(enrollment_id: int, step: str) -> str:
    """The idempotency key of the action an enrollment's step writes."""
    return f"enrollment:{enrollment_id}:step:{step}"


_AWAITS_ENROLLMENT_ID = "enrollment:?"


@event.listens_for(Action, "before_insert")
def _key_of_a_new_enrollments_action(_mapper: Any, _connection: Any, action: Action) -> None:
    """An action of an enrollment written in the same flush: the enrollment went first (the
    ``Action.enrollment`` relationship orders them) and its id is known now."""
    if action.idempotency_key == _AWAITS_ENROLLMENT_ID:
        assert action.enrollment_id is not None, "the enrollment was not written first"
        action.idempotency_key = action_key(action.enrollment_id, str(action.reason["step"]))


def exit_unsubscribed(
    session: Session, registry: Registry, contact: Contact, *, now: datetime
) -> None:
    """The contact unsubscribed: end their marketing workflows (receipts carry on). A
    workflow with a transactional email still ahead of the enrollment (on any path) goes
    on, so that email is sent; its marketing emails are skipped at send time ("contact is
    unsubscribed"), each saying so in the timeline."""
    for enrollment in live_enrollments(session, contact.id):  # type: ignore[arg-type]
        workflow = workflow_for(session, registry, enrollment.workflow, enrollment.version)
        if workflow is None or not (workflow.exit_on_unsubscribe and workflow.sends_marketing):
            continue
        if transactional_ahead(workflow.program, enrollment.position):
            log.info(
                "contact %s stays in %s after unsubscribing: a transactional email is ahead "
                "(its marketing emails are skipped)",
                contact.id,
                workflow.name,
            )
            continue
        end_enrollment(session, enrollment, now=now, reason="unsubscribed")


def live_enrollments(session: Session, contact_id: int) -> list[Enrollment]:
    """The contact's active and waiting enrollments, in id order."""
    known = known_enrollments.known_for(session, contact_id)
    if known is not None:
        return sorted((e for e in known if isinstance(e, Enrollment) and e.status in LIVE), key=_id)
    return list(
        session.exec(
            select(Enrollment)
            .where(Enrollment.contact_id == contact_id, col(Enrollment.status).in_(LIVE))
            .order_by(col(Enrollment.id))
        ).all()
    )


def _id(enrollment: Enrollment) -> tuple[bool, int]:
    """Id order; enrollments not written yet last, in the order they were started (the
    order their ids will follow)."""
    return (enrollment.id is None, enrollment.id or 0)


def count_at_steps(session: Session, workflow: str) -> dict[tuple[str, int], int]:
    """(version, position) -> live enrollments, for diagrams and migrations."""
    rows = session.exec(
        select(Enrollment.version, Enrollment.position, func.count())
        .where(Enrollment.workflow == workflow, col(Enrollment.status).in_(LIVE))
        .group_by(Enrollment.version, Enrollment.position)
    ).all()
    return {(v, p): n for v, p, n in rows}
