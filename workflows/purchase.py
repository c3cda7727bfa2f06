"""Purchase and post-purchase: the first order.

The order confirmation (with our thanks) goes out at once, as transactional mail that caps
and quiet hours never hold. A week later, a one-click satisfaction check; a low rating
becomes a task for customer success. The contact moves on to onboarding straight away, so
this workflow does not stop when they leave the purchase stage; a cancellation ends it.
"""

from datetime import timedelta

from engine import (
    Workflow,
    add_tag,
    branch,
    create_crm_task,
    did_event,
    lte,
    on_event,
    on_stage_entered,
    send_email,
    wait_for_event,
)

from .common import later

ORDER = Workflow(
    "purchase_thanks",
    description="Order confirmation and thanks; a satisfaction check a week later.",
    trigger=on_stage_entered("purchase"),
    exit_on_stage_left=False,
    exit_when=[on_event("subscription.cancelled"), on_stage_entered("churned")],
    steps=[
        send_email("thank_you", id="thanks", marketing=False),
        *later(7, id="one_week_later"),
        send_email("satisfaction_check", id="satisfaction"),
        wait_for_event(
            "survey.answered",
            survey="satisfaction",
            timeout=timedelta(days=7),
            id="rated?",
            on_event=[
                branch(
                    did_event("survey.answered", survey="satisfaction", rating=lte(2)),
                    id="unhappy?",
                    then=[
                        add_tag("unhappy_new_customer"),
                        create_crm_task(
                            "Unhappy new customer: call within one working day",
                            body="Rated the first week 1 or 2 out of 5 in the satisfaction check.",
                            due_in=timedelta(days=1),
                            id="unhappy_task",
                        ),
                    ],
                )
            ],
        ),
    ],
)

WORKFLOWS = [ORDER]
