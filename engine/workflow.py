"""Workflows: a trigger, entry rules, steps, goals and exits, and the guard rails on sends.

    from datetime import timedelta
    from engine import Workflow, on_event, send_email, wait, wait_for_event, gte

    BIG_ORDER = Workflow(
        "big_order_thanks",
        trigger=on_event("order.completed", total=gte(100)),
        reentry=reenter_after(days=30),
        steps=[send_email("thank_you", marketing=False), wait(days=7),
               send_email("satisfaction_check")],
    )

A workflow is data (frozen dataclasses, see spec.py): its ``version`` is a hash of its spec,
so any change to what it does gives a new version, and in-flight enrollments finish on the
version they started with.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from types import FrameType
from typing import Any

from engine.conditions import Condition, Predicate, as_predicate
from engine.spec import canonical_json, to_spec, vocabulary
from engine.steps import Node, Step, compile_steps

# --- triggers ---------------------------------------------------------------------------


@vocabulary("stage_entered")
@dataclass(frozen=True)
class StageEntered:
    stage: str


@vocabulary("stage_left")
@dataclass(frozen=True)
class StageLeft:
    stage: str


@vocabulary("event_received")
@dataclass(frozen=True)
class EventReceived:
    type: str
    where: Mapping[str, Predicate] = field(default_factory=dict)


@vocabulary("condition_met")
@dataclass(frozen=True)
class ConditionMet:
    """Fires when ``condition`` turns true for a contact (it was false before the event)."""

    condition: Condition
    name: str = ""


@vocabulary("schedule")
@dataclass(frozen=True)
class Scheduled:
    """Fires at each time ``cron`` matches in each contact's own time zone, for contacts that
    meet ``condition`` then (see engine/schedules.py for how slots are planned and fired).

    ``max_delay``: a slot found later than this after its time (the schedulers were down) is
    skipped instead of fired late; by default the latest missed slot fires once.
    """

    cron: str
    condition: Condition | None = None
    name: str = ""
    max_delay: timedelta | None = None


Trigger = StageEntered | StageLeft | EventReceived | ConditionMet | Scheduled


def on_stage_entered(stage: str) -> StageEntered:
    return StageEntered(stage)


def on_stage_left(stage: str) -> StageLeft:
    return StageLeft(stage)


def on_event(type: str, **where: Any) -> EventReceived:
    """An event of ``type`` whose properties match, e.g. ``on_event("order.completed",
    total=gte(100))``."""
    return EventReceived(type, {k: as_predicate(v) for k, v in where.items()})


def on_condition(condition: Condition, *, name: str = "") -> ConditionMet:
    """When an attribute, the score or a segment's condition becomes true."""
    return ConditionMet(condition, name)


@vocabulary("segment")
@dataclass(frozen=True)
class Segment:
    name: str
    condition: Condition


def on_segment_joined(segment: Segment) -> ConditionMet:
    return ConditionMet(segment.condition, name=f"segment {segment.name}")


def on_schedule(
    cron: str,
    *,
    when: Condition | Segment | None = None,
    max_delay: timedelta | None = None,
) -> Scheduled:
    """A cron schedule in each contact's own time zone, e.g. ``on_schedule("0 9 * * MON")``
    for Mondays at 09:00 local, optionally only for a segment or a condition::

        on_schedule("0 10 1 * *", when=ACTIVE_CUSTOMERS)   # the 1st of the month, 10:00

    Each slot offers the workflow once to every contact in the zone; the workflow's re-entry
    policy decides who enrolls again (a contact still enrolled is never enrolled twice).
    """
    if isinstance(when, Segment):
        return Scheduled(cron, when.condition, f"segment {when.name}", max_delay)
    return Scheduled(cron, when, "", max_delay)


# --- entry and guard rails --------------------------------------------------------------


@vocabulary("reentry")
@dataclass(frozen=True)
class Reentry:
    policy: str = "never"  # never | always | after
    after: timedelta | None = None


def reenter_never() -> Reentry:
    return Reentry("never")


def reenter_always() -> Reentry:
    return Reentry("always")


def reenter_after(*, days: float = 0, hours: float = 0) -> Reentry:
    return Reentry("after", timedelta(days=days, hours=hours))


@vocabulary("frequency_cap")
@dataclass(frozen=True)
class FrequencyCap:
    """At most ``max`` marketing emails per ``per`` (a rolling window)."""

    max: int
    per: timedelta


def at_most(count: int, *, per_days: float) -> FrequencyCap:
    return FrequencyCap(count, timedelta(days=per_days))


@vocabulary("window")
@dataclass(frozen=True)
class Window:
    """A daily time window in the contact's time zone, ``start`` to ``end`` ("HH:MM").

    As quiet hours, sends inside it are deferred to its end; as a send window, sends outside
    it are deferred to its next start. ``end`` before ``start`` wraps midnight.
    """

    start: str
    end: str
    weekdays_only: bool = False


def quiet_hours(start: str = "21:00", end: str = "08:00") -> Window:
    return Window(start, end)


def send_window(start: str, end: str, *, weekdays_only: bool = False) -> Window:
    return Window(start, end, weekdays_only)


@vocabulary("guardrails")
@dataclass(frozen=True)
class Guardrails:
    """Rules over every marketing email, from the workflows module's ``GUARDRAILS``."""

    cap: FrequencyCap | None = None
    quiet_hours: Window | None = None


# --- the workflow -----------------------------------------------------------------------

GoalOrExit = StageEntered | EventReceived | ConditionMet


@vocabulary("workflow")
@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: Trigger
    steps: Sequence[Step]
    description: str = field(default="", metadata={"spec": False})
    entry_if: Condition | None = None
    reentry: Reentry = field(default_factory=Reentry)
    goals: Sequence[GoalOrExit] = ()
    exit_when: Sequence[GoalOrExit] = ()
    exit_on_stage_left: bool = True
    exit_on_unsubscribe: bool = True
    cap: FrequencyCap | None = None
    send_window: Window | None = None
    source: str = field(default="", compare=False, metadata={"spec": False})

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "goals", tuple(self.goals))
        object.__setattr__(self, "exit_when", tuple(self.exit_when))
        if not self.source:
            object.__setattr__(self, "source", _caller())

    @cached_property
    def spec(self) -> dict[str, Any]:
        return to_spec(self)  # type: ignore[no-any-return]

    @cached_property
    def version(self) -> str:
        """A short hash of the definition: any change to what it does changes it."""
        return hashlib.sha256(canonical_json(self.spec).encode()).hexdigest()[:12]

    @cached_property
    def program(self) -> list[Node]:
        return compile_steps(self.steps)

    @cached_property
    def sends_marketing(self) -> bool:
        """Whether any step sends marketing email (unsubscribes end such workflows)."""
        from engine.steps import SendEmail

        return any(isinstance(n.step, SendEmail) and n.step.marketing for n in self.program)

    def node_index(self, step_id: str) -> int | None:
        return next((i for i, n in enumerate(self.program) if n.id == step_id), None)


def _caller() -> str:
    """``file:line`` of the code that built the workflow, for validation messages.

    Walks the frames themselves: ``inspect.stack()`` reads every frame's source file to
    show context lines, which was most of the time a workflows module took to load."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            break
        name = frame.f_code.co_filename
        if not name.endswith(("engine/workflow.py", "dataclasses.py", "<string>")):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return ""
