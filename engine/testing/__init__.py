"""Testing workflows as code: a virtual-time simulation of the real pipeline, and fixtures.

    from engine.testing import Simulation

    def test_trial_reminder():
        with Simulation() as sim:
            sim.track("ana@example.com", "trial.started", timezone="Europe/Madrid",
                      attributes={"trial_ends_at": "2026-01-20"})
            sim.advance(days=14)
            sim.expect_email("ana@example.com", "reminder", at_local="09:00")

With the package installed, pytest also offers the ``journeyline_sim`` and
``journeyline_golden`` fixtures (see ``engine.testing.plugin``). A test on the wall clock
(real services, no virtual time) gives its contacts ``midday_zone()`` so that quiet hours
never hold its emails, whatever the hour it runs.
"""

from engine.testing.simulation import (
    JourneyAssertionError,
    SentEmail,
    Simulation,
    check_golden,
)
from engine.testing.zones import midday_zone

__all__ = ["JourneyAssertionError", "SentEmail", "Simulation", "check_golden", "midday_zone"]
