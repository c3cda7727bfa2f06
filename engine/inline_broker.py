"""``inline://``: a broker that runs jobs in the calling thread, one after another.

For virtual-time runs (the test harness, the simulator, the demo): no worker threads and no
hand-offs, so simulated weeks cost what the work costs. Jobs run first-in, first-out when
``run_all`` is called, which keeps per-contact order like a single worker would. Errors
propagate to the caller: in a simulation a failing job is a bug to see, not to retry.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from dramatiq import Message
from dramatiq.brokers.stub import StubBroker


class InlineBroker(StubBroker):
    def __init__(self) -> None:
        super().__init__(middleware=[])
        self.pending: deque[Message[Any]] = deque()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        self.pending.append(message)
        return message

    def run_all(self) -> int:
        """Run every queued job, and the jobs they queue, until none is left."""
        ran = 0
        while self.pending:
            message = self.pending.popleft()
            self.actors[message.actor_name](*message.args, **message.kwargs)
            ran += 1
        return ran
