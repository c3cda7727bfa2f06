"""The vocabulary of lifecycle stages, and the default buyer + customer journey.

A ``Journey`` is plain data: stages in their forward order, and named transitions between
them with optional guards. ``lifecycle_journey()`` builds the default one; a user replaces it
by defining ``JOURNEY`` in their workflows module. ``Journey.validate`` reports every
problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class StageSubject(Protocol):
    """What a guard may look at: a read-only view of the contact being moved."""

    @property
    def email(self) -> str: ...
    @property
    def score(self) -> int: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Guard:
    """A named condition a transition needs; the name shows up in refusals."""

    name: str
    check: Callable[[StageSubject], bool]

    def __call__(self, subject: StageSubject) -> bool:
        return bool(self.check(subject))


def score_at_least(threshold: int) -> Guard:
    """Guard: the contact's lead score has reached ``threshold``."""
    return Guard(f"score >= {threshold}", lambda subject: subject.score >= threshold)


@dataclass(frozen=True)
class Stage:
    name: str
    journey: str  # "buyer", "customer" or "exit"
    description: str = ""


@dataclass(frozen=True)
class Transition:
    trigger: str
    sources: tuple[str, ...]
    dest: str
    guards: tuple[Guard, ...] = ()
    backward: bool = False  # must be said explicitly: journeys move forward by default
    description: str = ""


@dataclass(frozen=True)
class Journey:
    stages: tuple[Stage, ...]
    transitions: tuple[Transition, ...]
    initial: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def triggers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.trigger for t in self.transitions))

    def order(self, stage: str) -> int:
        return self.stage_names.index(stage)

    def problems(self) -> list[str]:
        names = self.stage_names
        found: list[str] = []
        if len(set(names)) != len(names):
            found.append(f"stage names repeat: {sorted(n for n in names if names.count(n) > 1)}")
        if self.initial not in names:
            found.append(f"initial stage {self.initial!r} is not one of the stages {list(names)}")
        for t in self.transitions:
            for stage in (*t.sources, t.dest):
                if stage not in names:
                    found.append(f"transition {t.trigger!r} names unknown stage {stage!r}")
            if t.dest in names and not t.backward:
                for source in t.sources:
                    if source in names and self.order(source) >= self.order(t.dest):
                        found.append(
                            f"transition {t.trigger!r} goes backward from {source!r} to "
                            f"{t.dest!r}; mark it backward=True if that is intended"
                        )
        return found


BUYER_STAGES = ("awareness", "consideration", "decision", "purchase")
CUSTOMER_STAGES = ("onboarding", "engagement", "retention", "loyalty", "advocacy")


def lifecycle_journey(*, mql_threshold: int = 20) -> Journey:
    """The default journey: buyer stages, then customer stages, with churn and reactivation.

    ``qualify`` moves a lead to consideration only once its score reaches ``mql_threshold``
    (marketing-qualified); the other triggers are unguarded.
    """
    stages = (
        Stage("awareness", "buyer", "Knows the problem, has met the brand."),
        Stage("consideration", "buyer", "Comparing solutions; marketing-qualified."),
        Stage("decision", "buyer", "Evaluating us: trial, demo, pricing."),
        Stage("purchase", "buyer", "Bought; order being fulfilled."),
        Stage("onboarding", "customer", "Getting set up and to first value."),
        Stage("engagement", "customer", "Active, using the product."),
        Stage("retention", "customer", "Renewing; kept through value and service."),
        Stage("loyalty", "customer", "Repeat buyer, rewarded."),
        Stage("advocacy", "customer", "Promoter: refers and reviews."),
        Stage("churned", "exit", "Cancelled or gone quiet."),
    )
    customer = CUSTOMER_STAGES
    transitions = (
        Transition(
            "qualify",
            ("awareness",),
            "consideration",
            (score_at_least(mql_threshold),),
            description="Lead score reached the MQL threshold.",
        ),
        Transition(
            "evaluate",
            ("awareness", "consideration"),
            "decision",
            description="Started a trial or asked for a demo.",
        ),
        Transition(
            "purchase",
            ("awareness", "consideration", "decision"),
            "purchase",
            description="Completed a first order.",
        ),
        Transition("onboard", ("purchase",), "onboarding"),
        Transition(
            "activate",
            ("onboarding",),
            "engagement",
            description="Reached first value in the product.",
        ),
        Transition("retain", ("engagement",), "retention", description="Renewed."),
        Transition("reward", ("retention",), "loyalty", description="Bought again."),
        Transition("advocate", ("loyalty",), "advocacy", description="Answered NPS as a promoter."),
        Transition("churn", customer, "churned", description="Cancelled."),
        Transition(
            "reactivate",
            ("churned",),
            "engagement",
            backward=True,
            description="Came back after churning.",
        ),
    )
    return Journey(
        stages, transitions, initial="awareness", metadata={"mql_threshold": mql_threshold}
    )
