"""Conditions: data that answers yes or no about a contact, an event or an enrollment.

Predicates test one value (``gte(100)``, ``one_of("pro", "team")``); conditions test a contact
(``attribute("plan", eq("pro"))``, ``score_at_least(50)``, ``has_tag("vip")``), their
behaviour (``did_event("order.completed", within=timedelta(days=7))``) or their engagement
with this workflow's emails (``opened("welcome")``, ``clicked()``). ``all_of``, ``any_of`` and
``not_`` combine them. All are frozen dataclasses, so a workflow stays data (see spec.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine import known_events
from engine.durations import describe_duration
from engine.spec import vocabulary

if TYPE_CHECKING:
    from sqlmodel import Session

    from engine.models import Contact, Enrollment, Event


# --- predicates on one value ------------------------------------------------------------


class Predicate(ABC):
    @abstractmethod
    def test(self, value: Any) -> bool: ...

    @abstractmethod
    def describe(self) -> str: ...


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_json(value: Any) -> Any:
    """``value`` as JSON holds it: tuples as lists, at any depth. A list in a definition is
    a tuple once its stored spec is read back (an enrollment on an older version), and an
    attribute or a property is a list: ``["en", "es"]`` must equal them both."""
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_json(v) for k, v in value.items()}
    return value


@vocabulary("eq")
@dataclass(frozen=True)
class Eq(Predicate):
    value: Any

    def test(self, value: Any) -> bool:
        if isinstance(self.value, list | tuple | Mapping):
            return bool(_as_json(value) == _as_json(self.value))
        return bool(value == self.value)

    def describe(self) -> str:
        return f"= {self.value!r}"


@vocabulary("compare")
@dataclass(frozen=True)
class Compare(Predicate):
    op: str  # one of > >= < <=
    value: float

    def test(self, value: Any) -> bool:
        number = _num(value)
        if number is None:
            return False
        return {
            ">": number > self.value,
            ">=": number >= self.value,
            "<": number < self.value,
            "<=": number <= self.value,
        }[self.op]

    def describe(self) -> str:
        return f"{self.op} {self.value:g}"


@vocabulary("one_of")
@dataclass(frozen=True)
class OneOf(Predicate):
    values: tuple[Any, ...]

    def test(self, value: Any) -> bool:
        if isinstance(value, list | tuple | Mapping):  # see ``_as_json``
            return _as_json(value) in [_as_json(v) for v in self.values]
        return value in self.values

    def describe(self) -> str:
        return "in " + ", ".join(repr(v) for v in self.values)


@vocabulary("exists")
@dataclass(frozen=True)
class Exists(Predicate):
    def test(self, value: Any) -> bool:
        return value is not None and value != ""

    def describe(self) -> str:
        return "is set"


def eq(value: Any) -> Eq:
    return Eq(value)


def gt(value: float) -> Compare:
    return Compare(">", value)


def gte(value: float) -> Compare:
    return Compare(">=", value)


def lt(value: float) -> Compare:
    return Compare("<", value)


def lte(value: float) -> Compare:
    return Compare("<=", value)


def one_of(*values: Any) -> OneOf:
    return OneOf(tuple(values))


def exists() -> Exists:
    return Exists()


def as_predicate(value: Any) -> Predicate:
    """A plain value in a filter means equality: ``plan="pro"`` is ``plan=eq("pro")``."""
    return value if isinstance(value, Predicate) else Eq(value)


def matches(properties: Mapping[str, Any], where: Mapping[str, Predicate]) -> bool:
    return all(pred.test(properties.get(key)) for key, pred in where.items())


# --- conditions on a contact ------------------------------------------------------------


@dataclass
class EvalContext:
    """What a condition may look at."""

    session: Session
    contact: Contact
    now: datetime
    enrollment: Enrollment | None = None
    event: Event | None = None
    # Count only the contact's events with an id at most this (None: all of them): what
    # was true before an event (its id - 1) or with it (its id), later ones being stored.
    upto_event: int | None = None
    # The contact's attributes as they stood before or after an event (None: as stored,
    # which already holds every recorded event's): see engine/attribute_changes.py.
    attributes: Mapping[str, Any] | None = None

    @property
    def contact_attributes(self) -> Mapping[str, Any]:
        """What a condition on the contact's attributes (and tags) reads."""
        return self.contact.attributes if self.attributes is None else self.attributes


_AS_OF = "journeyline.conditions_as_of"
"""The key of ``session.info`` holding the event being applied and the contact's
attributes with it (``conditions_as_of``)."""


@contextmanager
def conditions_as_of(
    session: Session, event_id: int, attributes: Callable[[], Mapping[str, Any]] | None = None
) -> Iterator[None]:
    """While an event is applied, the conditions a workflow evaluates on its own (entry
    rules, branches) read the contact as she stood with that event: its events up to it,
    and the attributes ``attributes()`` gives (as they stood after it, asked when a
    condition reads them, so a ``set_attribute`` step of the same pass shows). A job
    stores all of a contact's pending events before it applies the first, so without this
    a later event of the same job (an order the entry rule asks about, a plan it set) would
    count already, and what a workflow did would depend on how its events were batched."""
    previous = session.info.get(_AS_OF)
    session.info[_AS_OF] = (event_id, attributes)
    try:
        yield
    finally:
        if previous is None:
            session.info.pop(_AS_OF, None)
        else:
            session.info[_AS_OF] = previous


def context_for(
    session: Session, contact: Contact, now: datetime, enrollment: Enrollment | None = None
) -> EvalContext:
    """An ``EvalContext`` for a workflow's own condition: as of the event being applied, if
    any (``conditions_as_of``), else as everything stands now (a wake-up, a broadcast)."""
    point = session.info.get(_AS_OF)
    if point is None:
        return EvalContext(session, contact, now, enrollment=enrollment)
    event_id, attributes = point
    return EvalContext(
        session,
        contact,
        now,
        enrollment=enrollment,
        upto_event=event_id,
        attributes=None if attributes is None else attributes(),
    )


class Condition(ABC):
    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> bool: ...

    @abstractmethod
    def describe(self) -> str: ...

    def parts(self) -> tuple[Condition, ...]:
        """The conditions this one combines (``all_of``, ``any_of``, ``not_``)."""
        return ()

    def stages(self) -> tuple[str, ...]:
        """Stages this condition names (for validation)."""
        return tuple(s for c in self.parts() for s in c.stages())

    def events(self) -> tuple[str, ...]:
        """Event types this condition names (for validation)."""
        return tuple(e for c in self.parts() for e in c.events())

    def step_ids(self) -> tuple[str, ...]:
        """Steps of its workflow this condition names (for validation)."""
        return tuple(i for c in self.parts() for i in c.step_ids())


@vocabulary("attribute")
@dataclass(frozen=True)
class Attribute(Condition):
    name: str
    predicate: Predicate = field(default_factory=Exists)

    def evaluate(self, ctx: EvalContext) -> bool:
        return self.predicate.test(ctx.contact_attributes.get(self.name))

    def describe(self) -> str:
        return f"{self.name} {self.predicate.describe()}"


@vocabulary("score")
@dataclass(frozen=True)
class Score(Condition):
    predicate: Predicate

    def evaluate(self, ctx: EvalContext) -> bool:
        return self.predicate.test(ctx.contact.score)

    def describe(self) -> str:
        return f"score {self.predicate.describe()}"


@vocabulary("stage_in")
@dataclass(frozen=True)
class StageIn(Condition):
    names: tuple[str, ...]

    def evaluate(self, ctx: EvalContext) -> bool:
        return ctx.contact.stage in self.names

    def describe(self) -> str:
        return "stage in " + ", ".join(self.names)

    def stages(self) -> tuple[str, ...]:
        return self.names


@vocabulary("has_tag")
@dataclass(frozen=True)
class HasTag(Condition):
    tag: str

    def evaluate(self, ctx: EvalContext) -> bool:
        return self.tag in (ctx.contact_attributes.get("tags") or [])

    def describe(self) -> str:
        return f"tagged {self.tag!r}"


@vocabulary("subscribed")
@dataclass(frozen=True)
class Subscribed(Condition):
    def evaluate(self, ctx: EvalContext) -> bool:
        return ctx.contact.subscription_status == "subscribed"

    def describe(self) -> str:
        return "subscribed"


_OUTSIDE_A_WORKFLOW: ContextVar[bool] = ContextVar("outside_a_workflow", default=False)


def describe_as_entry_rule(condition: Condition) -> str:
    """``condition.describe()`` as an entry rule reads: before the contact is in the
    workflow, so ``did_event`` without ``within`` counts every event ("ever")."""
    token = _OUTSIDE_A_WORKFLOW.set(True)
    try:
        return condition.describe()
    finally:
        _OUTSIDE_A_WORKFLOW.reset(token)


@vocabulary("did_event")
@dataclass(frozen=True)
class DidEvent(Condition):
    """The contact had this event: within a window, or since entering this workflow."""

    type: str
    where: Mapping[str, Predicate] = field(default_factory=dict)
    within: timedelta | None = None

    def evaluate(self, ctx: EvalContext) -> bool:
        when: known_events.When = "occurred_at"
        since: datetime | None = None
        after: int | None = None
        if self.within is not None:
            since = ctx.now - self.within
        elif ctx.enrollment is not None and ctx.enrollment.cause_event_id is not None:
            # Since entering: the events that came in after the one that started it, by
            # id, not by time (a backlog may have held that one while later ones arrived).
            after = ctx.enrollment.cause_event_id
        elif ctx.enrollment is not None:  # started by a broadcast, a schedule, a condition
            when, since = "received_at", ctx.enrollment.started_at
        assert ctx.contact.id is not None
        # A batch job reads its contacts' events of this type in one statement.
        found = known_events.properties_since(
            ctx.session,
            ctx.contact.id,
            (self.type,),
            when=when,
            since=since,
            after=after,
            upto=ctx.upto_event,
        )
        return any(matches(properties, self.where) for properties in found)

    def describe(self) -> str:
        if self.within is not None:
            when = f" within {describe_duration(self.within)}"
        else:  # an entry rule reads it before there is anything to have entered
            when = " ever" if _OUTSIDE_A_WORKFLOW.get() else " since entering"
        return f"did {self.type}{when}"

    def events(self) -> tuple[str, ...]:
        return (self.type,)


@vocabulary("engaged")
@dataclass(frozen=True)
class Engaged(Condition):
    """The contact opened (or clicked) an email this enrollment sent (at ``step``, or any)."""

    how: str  # "opened" or "clicked"
    step: str = ""

    def evaluate(self, ctx: EvalContext) -> bool:
        from sqlmodel import col, select

        from engine.models import Action

        if ctx.enrollment is None or ctx.enrollment.id is None:
            # Not written yet, so started in this transaction: nothing it sends exists
            # outside it, and no open or click can name it.
            return False
        kinds = ("email.clicked",) if self.how == "clicked" else ("email.opened", "email.clicked")
        assert ctx.contact.id is not None
        # The contact's engagement first (a batch job reads it for all its contacts in one
        # statement); most contacts have none, and then no query of their emails is needed.
        engagement = known_events.properties_since(
            ctx.session, ctx.contact.id, kinds, upto=ctx.upto_event
        )
        named = {i for p in engagement if (i := _action_id(p.get("action_id"))) is not None}
        if not named:
            return False
        query = select(Action.id).where(
            Action.enrollment_id == ctx.enrollment.id,
            Action.kind == "email",
            col(Action.id).in_(sorted(named)),
        )
        if self.step:
            query = query.where(col(Action.reason)["step"].as_string() == self.step)
        # An email this transaction writes was sent to nobody yet: no flush is needed to
        # find the ones an open or a click can name.
        with ctx.session.no_autoflush:
            return ctx.session.exec(query.limit(1)).first() is not None

    def describe(self) -> str:
        return f"{self.how} {self.step or 'any email of this workflow'}"

    def step_ids(self) -> tuple[str, ...]:
        return (self.step,) if self.step else ()


@vocabulary("all_of")
@dataclass(frozen=True)
class AllOf(Condition):
    conditions: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext) -> bool:
        return all(c.evaluate(ctx) for c in self.conditions)

    def describe(self) -> str:
        return " and ".join(f"({c.describe()})" for c in self.conditions)

    def parts(self) -> tuple[Condition, ...]:
        return tuple(self.conditions)


@vocabulary("any_of")
@dataclass(frozen=True)
class AnyOf(Condition):
    conditions: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext) -> bool:
        return any(c.evaluate(ctx) for c in self.conditions)

    def describe(self) -> str:
        return " or ".join(f"({c.describe()})" for c in self.conditions)

    def parts(self) -> tuple[Condition, ...]:
        return tuple(self.conditions)


@vocabulary("not")
@dataclass(frozen=True)
class Not(Condition):
    condition: Condition

    def evaluate(self, ctx: EvalContext) -> bool:
        return not self.condition.evaluate(ctx)

    def describe(self) -> str:
        return f"not ({self.condition.describe()})"

    def parts(self) -> tuple[Condition, ...]:
        return (self.condition,)


def attribute(name: str, predicate: Any = None) -> Attribute:
    return Attribute(name, Exists() if predicate is None else as_predicate(predicate))


def score(predicate: Predicate) -> Score:
    return Score(predicate)


def stage_in(*names: str) -> StageIn:
    return StageIn(tuple(names))


def has_tag(tag: str) -> HasTag:
    return HasTag(tag)


def subscribed() -> Subscribed:
    return Subscribed()


def did_event(type: str, *, within: timedelta | None = None, **where: Any) -> DidEvent:
    return DidEvent(type, {k: as_predicate(v) for k, v in where.items()}, within)


def opened(step: str = "") -> Engaged:
    return Engaged("opened", step)


def clicked(step: str = "") -> Engaged:
    return Engaged("clicked", step)


def all_of(*conditions: Condition) -> AllOf:
    return AllOf(tuple(conditions))


def any_of(*conditions: Condition) -> AnyOf:
    return AnyOf(tuple(conditions))


def not_(condition: Condition) -> Not:
    return Not(condition)


def _action_id(value: Any) -> int | None:
    """The action id an engagement event names (``action_id``, an int or its digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
