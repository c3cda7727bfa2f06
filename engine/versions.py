"""Moving in-flight enrollments from an older workflow version to the current one.

Enrollments finish on the version they started with unless an operator moves them. A move
maps each enrollment's position by *step id*: the step it would run next (or the
``wait_for_event`` it is waiting in) must be *the same step* in the new version, or the
enrollment is refused, with the reason, and stays where it is:

- that step id is not in the new version;
- the step under that id is of another kind (an email there, a wait here);
- the id was generated from the step's position (``3-send_email``: no ``id=`` given) and the
  step under it does something else in the new version (email ``b`` there, email ``a``
  here): one step inserted above shifts every generated id below it, so an equal generated
  id proves nothing. Only an explicit ``id=`` on both sides says "the same step, edited";
- a step the enrollment is already past in its version comes after its landing step in the
  new one (steps reordered under explicit ids): moving it would run that step again.

Steps it already passed are never run again: it continues from the same step, not from the
top. A move keeps the enrollment's wake-up; ``apply_migration`` moves only enrollments still
where the plan saw them, read again under their contacts' locks (a worker may have run one on
since the plan read it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from engine.db import one_of
from engine.diagram import describe_step
from engine.enrollments import LIVE, workflow_for
from engine.models import Contact, Enrollment, EnrollmentStatus
from engine.registry import Registry
from engine.spec import to_spec
from engine.steps import (
    Branch,
    Node,
    Split,
    Step,
    Wait,
    WaitForEvent,
    WaitUntil,
    WaitUntilDate,
    walk,
)
from engine.waits import PAUSED, WAITING_UNTIL_DATE
from engine.workflow import Workflow

END = "(end)"
UNKNOWN_VERSION = "(unknown version)"

# Fields of a step that hold further steps: those are nodes of their own, compared apart.
_NESTED: dict[type, tuple[str, ...]] = {
    Branch: ("then", "otherwise"),
    Split: ("variants",),
    WaitForEvent: ("on_event", "on_timeout"),
}
_PLAIN_WAITS = (Wait, WaitUntil, WaitUntilDate)


@dataclass(frozen=True)
class Move:
    """One enrollment to move: where the plan saw it, and its position in the new version."""

    enrollment_id: int
    version: str
    position: int
    to_position: int


@dataclass
class Group:
    """The live enrollments of one older version at one spot, and what migrating does."""

    version: str
    step: str  # the id of the step they run next in their version (END past the last one)
    where: str  # that spot in words: "waiting in pause (wait 2 days), then b (email b)"
    count: int = 0
    lands_on: str | None = None  # the same step's id in the current version; None: refused
    landing: str = ""  # that step in words: "b (email b)"
    reason: str = ""  # why they are refused, and what to do about it

    @property
    def key(self) -> str:
        return f"{self.version}@{self.step}"


@dataclass
class MigrationPlan:
    workflow: str
    target_version: str
    moves: list[Move] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    @property
    def movable(self) -> int:
        return len(self.moves)

    @property
    def landing(self) -> Counter[str]:
        """Step id in the current version -> enrollments that would land on it."""
        found: Counter[str] = Counter()
        for group in self.groups:
            if group.lands_on is not None:
                found[group.lands_on] += group.count
        return found

    @property
    def refused(self) -> Counter[str]:
        """``version@step`` (the step they run next there) -> enrollments refused."""
        found: Counter[str] = Counter()
        for group in self.groups:
            if group.lands_on is None:
                found[group.key] += group.count
        return found

    @property
    def reasons(self) -> dict[str, str]:
        """``version@step`` -> why those enrollments are refused, and what to do."""
        return {g.key: g.reason for g in self.groups if g.lands_on is None}


def plan_migration(session: Session, registry: Registry, name: str) -> MigrationPlan:
    current = registry.workflows.get(name)
    if current is None:
        raise KeyError(f"no workflow named {name!r}; known: {sorted(registry.workflows)}")
    plan = MigrationPlan(name, current.version)
    rows = session.exec(
        select(Enrollment)
        .where(
            Enrollment.workflow == name,
            col(Enrollment.status).in_(LIVE),
            Enrollment.version != current.version,
        )
        .order_by(col(Enrollment.id))
    ).all()
    groups: dict[tuple[str, int, str], Group] = {}
    decided: dict[tuple[str, int], tuple[int | None, str]] = {}
    for enrollment in rows:
        assert enrollment.id is not None
        old = workflow_for(session, registry, name, enrollment.version)
        if old is None:
            key = (enrollment.version, -1, "")
            if key not in groups:
                groups[key] = Group(
                    enrollment.version,
                    UNKNOWN_VERSION,
                    "on a version whose definition is not stored",
                    reason=f"version {enrollment.version} is not stored in this database, so "
                    "where its enrollments are cannot be told",
                )
            groups[key].count += 1
            continue
        position = min(enrollment.position, len(old.program))
        if (enrollment.version, position) not in decided:
            decided[(enrollment.version, position)] = _decide(
                old, enrollment.version, position, current
            )
        target, reason = decided[(enrollment.version, position)]
        where = _where(old.program, enrollment)
        key = (enrollment.version, position, where)
        if key not in groups:
            groups[key] = Group(
                enrollment.version,
                _step_id(old.program, position),
                where,
                lands_on=None if target is None else _step_id(current.program, target),
                landing="" if target is None else _name(current.program, target),
                reason=reason,
            )
        groups[key].count += 1
        if target is not None:
            plan.moves.append(Move(enrollment.id, enrollment.version, enrollment.position, target))
    plan.groups = list(groups.values())
    return plan


def apply_migration(session: Session, plan: MigrationPlan) -> int:
    """Move the planned enrollments still where the plan saw them; return how many moved.

    The plan read the enrollments without locks, and a worker may have run one on (or
    written its context) and committed since, even inside this transaction on PostgreSQL
    (read committed). So the enrollments are taken as the pipeline takes them: their
    contacts locked first, in id order (the order every pipeline transaction locks in, so
    the two queue rather than deadlock), then the enrollments re-read under those locks, as
    they are now, not as this session last saw them. A worker arriving after that waits
    for this transaction and finds the enrollment moved. Each one is moved only if it still
    has the plan's version, position and a live status, and only ``trail``, ``version`` and
    ``position`` change: the rest of its context is kept as locked. On SQLite the whole
    transaction already holds the write lock (``BEGIN IMMEDIATE``), so nothing commits
    between the plan and the move; the same statements then lock nothing more.
    """
    if not plan.moves:
        return 0
    planned = {move.enrollment_id: move for move in plan.moves}
    ids = sorted(planned)
    owners: set[int] = set()
    for part in _chunks(ids):
        owners.update(
            session.exec(
                select(Enrollment.contact_id).where(one_of(session, col(Enrollment.id), part))
            ).all()
        )
    for part in _chunks(sorted(owners)):  # ascending across chunks too: one lock order
        session.exec(
            select(Contact.id)
            .where(one_of(session, col(Contact.id), part))
            .order_by(col(Contact.id))
            .with_for_update()
        ).all()
    moved = 0
    for part in _chunks(ids):
        enrollments = session.exec(
            select(Enrollment)
            .where(one_of(session, col(Enrollment.id), part))
            .order_by(col(Enrollment.id))
            # FOR NO KEY UPDATE, the lock the UPDATE takes anyway: rows that only reference
            # an enrollment (an action's foreign key) are not held up by it.
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)  # as they are under the locks
        ).all()
        for enrollment in enrollments:
            move = planned[enrollment.id]  # type: ignore[index]
            if (
                enrollment.status not in LIVE
                or enrollment.version != move.version
                or enrollment.position != move.position
            ):
                continue  # ended, or ran on since the plan: its plan no longer holds
            trail = [
                *enrollment.context.get("trail", []),
                {
                    "step": "(migration)",
                    "note": f"moved from version {enrollment.version} to {plan.target_version}",
                },
            ]
            enrollment.context = {**enrollment.context, "trail": trail[-50:]}
            enrollment.version = plan.target_version
            enrollment.position = move.to_position
            session.add(enrollment)
            moved += 1
    return moved


_CHUNK = 500  # ids per statement: well under SQLite's limit on bound parameters


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


# --- deciding where an enrollment lands -------------------------------------------------


def _decide(
    old: Workflow, version: str, position: int, current: Workflow
) -> tuple[int | None, str]:
    """Where enrollments of ``version`` about to run ``position`` land in ``current`` (None:
    refused), and why not."""
    if position >= len(old.program):
        return len(current.program), ""
    node = old.program[position]
    target = current.node_index(node.id)
    if target is None:
        return None, (
            f"step {node.id} ({describe_step(node.step)}) is not in version {current.version}; "
            f"these enrollments stay on version {version} and finish there"
        )
    differs = _not_the_same_step(node, current.program[target], version, current.version)
    if differs:
        return None, differs
    again = _passed_again(old.program, position, current.program, target, version, current)
    if again:
        return None, again
    return target, ""


def _not_the_same_step(old: Node, new: Node, old_version: str, new_version: str) -> str:
    """Why ``new`` (in ``new_version``) cannot be taken for ``old`` (in ``old_version``), both
    under the same id; empty when it is the same step."""
    old_desc, new_desc = describe_step(old.step), describe_step(new.step)
    if type(old.step) is not type(new.step):
        return (
            f"step {old.id} is {old_desc} in version {old_version} and {new_desc} in version "
            f"{new_version}: a step cannot change kind under the same id; give the new step "
            "another id"
        )
    if old.step.id and new.step.id:
        return ""  # the author named both: the same step, whatever was edited in it
    before, after = _own_spec(old.step), _own_spec(new.step)
    if before == after:
        return ""
    advice = (
        "its id comes from its position (no id=...), so an equal id does not make it the same "
        f"step; these enrollments stay on version {old_version} and finish there. Give the "
        "steps explicit ids (id=...) so they can be matched in later versions"
    )
    if old_desc != new_desc:
        return (
            f"step {old.id} is {old_desc} in version {old_version} and {new_desc} in version "
            f"{new_version}: {advice}"
        )
    changed = ", ".join(
        sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    )
    return (
        f"step {old.id} ({old_desc}) differs in {changed} between version {old_version} and "
        f"version {new_version}: {advice}"
    )


def _own_spec(step: Step) -> dict[str, Any]:
    """What a step does by itself: its spec without its id and without the steps it holds."""
    spec: dict[str, Any] = to_spec(step)
    leave_out = {"id", *_NESTED.get(type(step), ())}
    return {k: v for k, v in spec.items() if k not in leave_out}


def _passed_again(
    old: Sequence[Node],
    position: int,
    new: Sequence[Node],
    target: int,
    old_version: str,
    current: Workflow,
) -> str:
    """The steps enrollments at ``position`` are already past that come again after
    ``target`` in the new version (steps reordered), in words; empty when there are none."""
    ahead = _reachable(old, position)
    past = {node.id: node for i, node in enumerate(old) if i not in ahead}
    again = [
        new[i]
        for i in sorted(_reachable(new, target))
        if new[i].id in past
        and not _not_the_same_step(past[new[i].id], new[i], old_version, current.version)
    ]
    if not again:
        return ""
    named = " and ".join(
        ", ".join(f"{n.id} ({describe_step(n.step)})" for n in part)
        for part in (again[:-1], again[-1:])
        if part
    )
    one = len(again) == 1
    return (
        f"step{'' if one else 's'} {named}, which they are past in version {old_version}, "
        f"come{'s' if one else ''} after {new[target].id} in version {current.version}: "
        f"moving them would run {'it' if one else 'them'} again"
    )


def _reachable(program: Sequence[Node], start: int) -> set[int]:
    """Every position a run from ``start`` can reach, ``start`` included (the program
    only jumps forward)."""
    return set(walk(program, [start]))


# --- saying where an enrollment is ------------------------------------------------------


def _step_id(program: Sequence[Node], position: int) -> str:
    return program[position].id if position < len(program) else END


def _name(program: Sequence[Node], position: int) -> str:
    if position >= len(program):
        return "the end"
    node = program[position]
    return f"{node.id} ({describe_step(node.step)})"


def _where(program: Sequence[Node], enrollment: Enrollment) -> str:
    """Where an enrollment is, in words a workflow's author recognises. One parked in a
    plain wait has the step *after* the wait as its position: name the wait too."""
    position = enrollment.position
    here = _name(program, position)
    waiting_for = enrollment.context.get("waiting_for")
    if waiting_for is not None and position < len(program):
        return f"waiting in {here}"
    if enrollment.status != EnrollmentStatus.WAITING:
        return "finishing" if position >= len(program) else f"due to run {here}"
    wait = _wait_before(program, enrollment)
    if wait is None:
        return f"waiting, then {here}"
    return f"waiting in {wait.id} ({describe_step(wait.step)}), then {here}"


def _wait_before(program: Sequence[Node], enrollment: Enrollment) -> Node | None:
    """The plain wait a waiting enrollment is parked in, when it can be told."""
    for key in (WAITING_UNTIL_DATE, PAUSED):
        named = enrollment.context.get(key)
        if isinstance(named, dict) and named.get("step"):
            found = next((n for n in program if n.id == named["step"]), None)
            if found is not None:
                return found
    after = enrollment.position
    candidates = [
        node
        for node in program
        if isinstance(node.step, _PLAIN_WAITS)
        and (node.next if node.next is not None else len(program)) == min(after, len(program))
    ]
    return candidates[0] if len(candidates) == 1 else None
