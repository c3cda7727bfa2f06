"""Transitions/s of the shared ``StageMachine.fire`` vs a ``transitions.Machine`` per contact.

``python -m bench.machine [--n 20000] [--smoke]``. The baseline builds a ``Machine`` for each
contact and event from the same journey (``auto_transitions=False``). Memory: tracemalloc
peak while 1,000 contacts each hold their own machine vs 1,000 plain subjects sharing one.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

from transitions import EventData, Machine

from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from engine.machine import StageMachine
from engine.stages import Guard, Journey, lifecycle_journey

# A walk through the journey; each step is (stage, trigger), every one allowed and moving.
WALK = (
    ("awareness", "evaluate"),
    ("decision", "purchase"),
    ("purchase", "onboard"),
    ("onboarding", "activate"),
    ("engagement", "retain"),
    ("retention", "reward"),
    ("loyalty", "advocate"),
    ("awareness", "qualify"),
)


class _Contact:
    def __init__(self, email: str, stage: str, score: int) -> None:
        self.email = email
        self.state = stage
        self.score = score
        self.attributes: dict[str, Any] = {}


def _condition(guard: Guard) -> Any:
    def check(event: EventData) -> bool:
        assert isinstance(event.model, _Contact)  # the one model attached to the machine
        return guard(event.model)

    return check


def _specs(journey: Journey) -> list[dict[str, Any]]:
    return [
        {
            "trigger": t.trigger,
            "source": list(t.sources),
            "dest": t.dest,
            "conditions": [_condition(g) for g in t.guards],
        }
        for t in journey.transitions
    ]


def per_contact_machine(journey: Journey, contact: _Contact, specs: list[dict[str, Any]]) -> None:
    Machine(
        model=contact,
        states=list(journey.stage_names),
        transitions=specs,
        initial=contact.state,
        auto_transitions=False,
        send_event=True,
    )


def time_shared(machine: StageMachine, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        stage, trigger = WALK[i % len(WALK)]
        move = machine.fire(email=f"c{i}@example.com", stage=stage, trigger=trigger, score=50)
        assert move.moved
    return n / (time.perf_counter() - start)


def time_per_contact(journey: Journey, n: int) -> float:
    specs = _specs(journey)
    start = time.perf_counter()
    for i in range(n):
        stage, trigger = WALK[i % len(WALK)]
        contact = _Contact(f"c{i}@example.com", stage, 50)
        per_contact_machine(journey, contact, specs)
        assert contact.trigger(trigger)  # type: ignore[attr-defined]
    return n / (time.perf_counter() - start)


def memory_shared(journey: Journey, contacts: int) -> int:
    tracemalloc.start()
    machine = StageMachine(journey)
    held = [_Contact(f"c{i}@example.com", "awareness", 0) for i in range(contacts)]
    for c in held:
        machine.fire(email=c.email, stage=c.state, trigger="evaluate")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def memory_per_contact(journey: Journey, contacts: int) -> int:
    specs = _specs(journey)
    tracemalloc.start()
    held = [_Contact(f"c{i}@example.com", "awareness", 0) for i in range(contacts)]
    for c in held:
        per_contact_machine(journey, c, specs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run(n: int, contacts: int = 1000) -> list[Result]:
    journey = lifecycle_journey()
    shared = StageMachine(journey)
    time_shared(shared, min(n, 500))  # warm up
    time_per_contact(journey, min(n, 100))
    shared_rate = time_shared(shared, n)
    per_contact_rate = time_per_contact(journey, n)
    mem_shared = memory_shared(journey, contacts)
    mem_per_contact = memory_per_contact(journey, contacts)
    return [
        Result.of(
            "transitions/s, shared StageMachine.fire (baseline: Machine per contact)",
            shared_rate,
            "transitions/s",
            per_contact_rate,
        ),
        Result.of(
            f"tracemalloc peak, {contacts:,} contacts, shared (baseline: Machine per contact)",
            mem_shared / 1024,
            "KiB",
            mem_per_contact / 1024,
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.machine", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="transitions per approach")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    n, contacts = (300, 100) if args.smoke else (args.n, 1000)
    rows = run(n, contacts)
    print_results(f"bench.machine (n={n:,})", rows)
    path = write_json("machine", rows, n=n, contacts=contacts, smoke=args.smoke)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.machine")
