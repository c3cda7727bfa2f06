"""Consideration: the lead's score passed the MQL threshold; they are comparing solutions.

Sales hears about it first (a CRM task to reach out), then the lead gets what helps a
comparison: an honest side-by-side, a demo invitation, what customers say, and plans and
prices. Starting a trial or asking for a demo (decision), or buying, ends it as converted.
"""

from datetime import timedelta

from engine import Workflow, create_crm_task, on_stage_entered, send_email, wait

from .common import later
from .stages import MQL_THRESHOLD

CONSIDERATION = Workflow(
    "consideration_compare",
    description="A marketing-qualified lead: a task for sales, then comparison, demo, reviews.",
    trigger=on_stage_entered("consideration"),
    goals=[on_stage_entered("decision"), on_stage_entered("purchase")],
    steps=[
        create_crm_task(
            "New MQL: reach out within two working days",
            body=(
                f"Lead score passed the MQL threshold ({MQL_THRESHOLD}) after reading our "
                "guides. Offer a short discovery call; the comparison guide goes out today."
            ),
            due_in=timedelta(days=2),
            id="mql_task",
        ),
        send_email("comparison_guide", id="comparison"),
        wait(days=2),
        send_email("demo_invitation", id="demo"),
        *later(3, id="reviews_morning"),
        send_email("customer_reviews", id="reviews"),
        *later(4, id="pricing_morning"),
        send_email("pricing_explained", id="pricing"),
    ],
)

WORKFLOWS = [CONSIDERATION]
