"""Onboarding: a new customer getting set up, paced by what they do in the product.

Each setup step the product reports (``product.step_completed``) brings the next lesson;
no progress for a while brings help instead: tips after two days, then the offer of a setup
call and a task for the onboarding team. Reaching first value (``product.activated``, which
moves the customer to engagement) ends it as converted; a customer still not there ten days
after the last lesson is flagged in the CRM.

These are service emails for something the customer has paid for, so they are sent as
transactional mail: the weekly cap, which the trial emails before the purchase have often
used up, must not hold back the setup guide.
"""

from datetime import timedelta

from engine import (
    Workflow,
    create_crm_task,
    on_stage_entered,
    send_email,
    update_crm,
    wait_for_event,
)

ONBOARDING = Workflow(
    "onboarding_guide",
    description="Guide a new customer to first value, one setup step at a time; help if stalled.",
    trigger=on_stage_entered("onboarding"),
    goals=[on_stage_entered("engagement")],
    steps=[
        send_email("onboarding_welcome", id="welcome", marketing=False),
        wait_for_event(
            "product.step_completed",
            timeout=timedelta(days=2),
            id="first_step?",
            on_event=[send_email("onboarding_next_steps", id="next_steps", marketing=False)],
            on_timeout=[send_email("onboarding_tips", id="tips", marketing=False)],
        ),
        wait_for_event(
            "product.step_completed",
            timeout=timedelta(days=5),
            id="progress?",
            on_event=[send_email("onboarding_almost_there", id="almost_there", marketing=False)],
            on_timeout=[
                send_email("onboarding_help", id="help", marketing=False),
                create_crm_task(
                    "Onboarding stalled: offer a setup call",
                    body="No setup progress for five days after the tips. Offer 30 minutes.",
                    due_in=timedelta(days=1),
                    id="stalled_task",
                ),
            ],
        ),
        # Activation moves the customer to engagement, which ends this workflow as converted
        # (the goal): this wait only has a timeout path.
        wait_for_event(
            "product.activated",
            timeout=timedelta(days=10),
            id="activated?",
            on_timeout=[update_crm(onboarding_status="not activated", id="flag_not_activated")],
        ),
    ],
)

WORKFLOWS = [ONBOARDING]
