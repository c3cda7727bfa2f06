"""The default playbook: the journey, the event rules, the workflows and the guard rails.

One module per journey stage (awareness, consideration, decision, purchase, onboarding,
engagement, retention, loyalty, advocacy) plus the periodic NPS survey. Marketing ops edit
the modules in this package; ``JOURNEYLINE_WORKFLOWS`` can point the engine at another
package with the same names.
"""

from engine import Guardrails, at_most, quiet_hours

from . import (
    advocacy,
    awareness,
    consideration,
    decision,
    engagement,
    loyalty,
    nps,
    onboarding,
    purchase,
    retention,
)
from .rules import RULES
from .stages import JOURNEY

WORKFLOWS = [
    *awareness.WORKFLOWS,
    *consideration.WORKFLOWS,
    *decision.WORKFLOWS,
    *purchase.WORKFLOWS,
    *onboarding.WORKFLOWS,
    *engagement.WORKFLOWS,
    *retention.WORKFLOWS,
    *loyalty.WORKFLOWS,
    *advocacy.WORKFLOWS,
    *nps.WORKFLOWS,
]

# Over every marketing email, whatever the workflow: at most three a week per contact, and
# none between 21:00 and 08:00 in the contact's time zone (held until the morning, not
# dropped). Transactional mail (order confirmation, onboarding, renewal notices, the reply to
# a detractor) is not held.
GUARDRAILS = Guardrails(cap=at_most(3, per_days=7), quiet_hours=quiet_hours("21:00", "08:00"))

# Event types the playbook waits for or filters on. Each also has a rule (rules.py); listing
# them here keeps the workflows valid should a rule be dropped.
EVENTS = [
    "product.step_completed",  # onboarding: {"step": "data_connected"}
    "survey.answered",  # {"survey": "satisfaction", "rating": 1-5} or {"survey": "feedback"}
    "nps.answered",  # {"score": 0-10}
    "referral.sent",
    "review.posted",
]

__all__ = ["EVENTS", "GUARDRAILS", "JOURNEY", "RULES", "WORKFLOWS"]
