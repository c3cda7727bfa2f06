"""The pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``journeyline_sim``: a ``Simulation`` of the workflows module from settings
  (``JOURNEYLINE_WORKFLOWS``, default ``workflows``), closed after the test;
- ``journeyline_golden``: ``check(sim, email, name)`` compares a contact's journey with
  ``tests/golden/<name>.json`` next to the test (``JOURNEYLINE_UPDATE_GOLDEN=1`` rewrites).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.testing.simulation import Simulation, check_golden


@pytest.fixture
def journeyline_sim() -> Iterator[Simulation]:
    sim = Simulation(os.environ.get("JOURNEYLINE_WORKFLOWS", "workflows"))
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def journeyline_golden(request: pytest.FixtureRequest) -> Callable[[Simulation, str, str], None]:
    folder = Path(str(request.path)).parent / "golden"
    update = os.environ.get("JOURNEYLINE_UPDATE_GOLDEN") == "1"

    def check(sim: Simulation, email: str, name: str) -> None:
        check_golden(sim.journey(email), folder / f"{name}.json", update=update)

    return check
