"""Loyalty: a customer who bought again. Reward them and keep it personal.

A reward code right after the repeat purchase, then a members-only offer two weeks later.
Milestone orders (the shop sends ``order_number``) bring a gift whatever the stage.
"""

from engine import (
    Workflow,
    on_event,
    on_stage_entered,
    one_of,
    reenter_always,
    send_email,
    stage_in,
)

from .common import CUSTOMER_STAGES, later

LOYALTY = Workflow(
    "loyalty_reward",
    description="Reward a repeat purchase, then a members-only offer.",
    trigger=on_stage_entered("loyalty"),
    # Becoming an advocate does not cancel the perks; churning does.
    exit_on_stage_left=False,
    exit_when=[on_stage_entered("churned")],
    steps=[
        send_email("loyalty_reward", id="reward", data={"reward_code": "LOYAL15", "discount": 15}),
        *later(14, id="exclusive_morning"),
        send_email("exclusive_offer", id="exclusive", data={"discount": 25, "code": "INSIDER25"}),
    ],
)

MILESTONE_ORDERS = (5, 10, 25, 50, 100)

MILESTONE = Workflow(
    "loyalty_milestone",
    description="A gift on milestone orders (5th, 10th, 25th...).",
    trigger=on_event("order.completed", order_number=one_of(*MILESTONE_ORDERS)),
    entry_if=stage_in(*CUSTOMER_STAGES),
    reentry=reenter_always(),
    steps=[
        send_email(
            "milestone_reward", id="gift", data={"reward_code": "MILESTONE20", "discount": 20}
        ),
    ],
)

WORKFLOWS = [LOYALTY, MILESTONE]
