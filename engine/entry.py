"""Entering a workflow: the re-entry policy, the entry rules, and the enrollment's start.

``start_enrollment`` takes a contact its trigger chose into a workflow: not while they are
in it already, and only as its re-entry policy allows; then only if they meet its entry
rules (``meets_entry_rules``: its ``entry_if`` condition and consent). The new enrollment
ends at once when one of the workflow's condition goals or exits already holds; else it
runs (engine/executor.py) to its first wait.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, col, select

from engine import known_enrollments, refusals
from engine.conditions import context_for, describe_as_entry_rule
from engine.durations import describe_duration
from engine.effects import Effects
from engine.enrollments import LIVE, remember_version
from engine.executor import advance, end_enrollment
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.new_rows import new_row
from engine.registry import Registry
from engine.steps import transactional_ahead
from engine.workflow import ConditionMet, Workflow

# The executor's logger, as before entry had a module of its own: a refusal is logged as
# ``engine.executor`` (README, "Unsubscribing"), and logging set up for it still applies.
log = logging.getLogger("engine.executor")


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
    kept_out = None if previous is None else _kept_out(workflow, previous, now)
    if kept_out is not None:
        assert previous is not None
        if refusals.listened():  # the reason is text: made only for someone to read
            why_not = why_kept_out(
                kept_out, workflow, previous.entry, previous.started_at, previous.status
            )
            refusals.refuse(session, contact.id, workflow.name, now, kept_out, why_not)  # type: ignore[arg-type]
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


def _kept_out(
    workflow: Workflow, previous: known_enrollments.Known, now: datetime
) -> refusals.RefusalKind | None:
    """What keeps the contact out of ``workflow`` now, given her latest entry: being in it
    (a workflow holds a contact once at a time), or its re-entry policy; None if nothing."""
    if previous.status in LIVE:
        return "in it"
    policy = workflow.reentry
    if policy.policy == "never":
        return "re-entry"
    if policy.policy == "after" and policy.after is not None:
        return "re-entry" if now < previous.started_at + policy.after else None
    return None


def why_kept_out(
    kind: refusals.RefusalKind,
    workflow: Workflow,
    entry: int,
    started_at: datetime,
    status: str,
) -> str:
    """Why a contact whose latest entry of ``workflow`` is ``entry`` (started then, now in
    ``status``) is kept out, in words."""
    since = f"entry {entry}, started {started_at:%Y-%m-%d %H:%M} UTC"
    after = workflow.reentry.after
    if kind == "in it":
        return f"already in it ({since}, {status})"
    if after is not None and workflow.reentry.policy == "after":
        return f"re-entry only {describe_duration(after)} after the last entry ({since})"
    return f"re-entry is never allowed, and they entered before ({since})"


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
    logged, naming the contact, the workflow and why, and told to ``engine.refusals``'
    listeners."""
    if workflow.entry_if is not None and not workflow.entry_if.evaluate(
        context_for(session, contact, now)
    ):
        log.debug("contact %s does not meet the entry rule of %s", contact.id, workflow.name)
        if refusals.listened():
            why_not = f"entry rule not met: {describe_as_entry_rule(workflow.entry_if)}"
            refusals.refuse(session, contact.id, workflow.name, now, "entry rule", why_not)  # type: ignore[arg-type]
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
        if refusals.listened():
            why_not = (
                f"contact is {contact.subscription_status}; the workflow sends marketing email"
            )
            refusals.refuse(session, contact.id, workflow.name, now, "consent", why_not)  # type: ignore[arg-type]
        return False
    return True
