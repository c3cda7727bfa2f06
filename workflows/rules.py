"""What each event means: points on the lead score, and triggers offered to the stage machine.

A trigger that the contact's current stage does not allow is passed over, so one event can
mean "first purchase" for a lead and "repeat purchase" for a customer.
"""

from engine import EventRule, gte, lte

RULES = [
    # Awareness: interest builds the score; ``qualify`` fires once it reaches the MQL mark.
    EventRule("page.viewed", score=2, triggers=("qualify",)),
    EventRule("email.clicked", score=3, triggers=("qualify",)),
    EventRule("content.downloaded", score=10, triggers=("qualify",)),
    EventRule("webinar.attended", score=15, triggers=("qualify",)),
    # Decision: a trial or a demo request is a clear signal.
    EventRule("demo.requested", score=20, triggers=("evaluate",)),
    EventRule("trial.started", score=25, triggers=("evaluate",)),
    # Purchase: a first order moves a buyer to purchase and on to onboarding; for a customer
    # in retention it is a repeat purchase (loyalty); for a churned one, a comeback.
    EventRule(
        "order.completed", score=50, triggers=("purchase", "onboard", "reward", "reactivate")
    ),
    # Customer journey.
    EventRule("product.activated", score=10, triggers=("activate",)),
    EventRule("product.used", score=1),
    # Onboarding progress, reported by the product for each setup step it sees done.
    EventRule("product.step_completed", score=2),
    # An answer to a survey we sent (the satisfaction check, the feedback survey).
    EventRule("survey.answered", score=3),
    EventRule("subscription.renewed", score=20, triggers=("retain",)),
    # Read as the NPS workflow's branches read it (``gte``/``lte``: a number, or a number
    # sent as text as form tools do, "10"; never a boolean), so a promoter thanked there is
    # also moved here, and a detractor sent the recovery email is also scored down.
    EventRule("nps.answered", triggers=("advocate",), when=lambda p: gte(9).test(p.get("score"))),
    EventRule("nps.answered", score=-10, when=lambda p: lte(6).test(p.get("score"))),
    # Word of mouth: a loyal customer who refers or reviews us is an advocate.
    EventRule("referral.sent", score=15, triggers=("advocate",)),
    EventRule("review.posted", score=15, triggers=("advocate",)),
    EventRule("product.inactive", score=-10),
    EventRule("subscription.cancelled", score=-30, triggers=("churn",)),
]
