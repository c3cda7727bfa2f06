"""Decision: the lead started a trial or asked for a demo; they are evaluating us.

A free trial with a limited-time discount and the money-back guarantee, a reminder three
days before the trial ends (09:00 in the contact's time zone; after four days when the trial
end is unknown), then a nudge if no order came. Engaged leads who did not buy also go to
sales. Buying is the goal.
"""

from datetime import timedelta

from engine import (
    Workflow,
    any_of,
    attribute,
    branch,
    clicked,
    create_crm_task,
    did_event,
    on_stage_entered,
    opened,
    send_email,
    wait,
    wait_for_event,
    wait_until_date,
)

OFFER = {"discount": 20, "code": "TRIAL20"}

TRIAL = Workflow(
    "decision_trial",
    description="Trial or demo: limited-time offer and guarantee, trial-end reminder, nudge.",
    trigger=on_stage_entered("decision"),
    goals=[on_stage_entered("purchase")],
    steps=[
        branch(
            did_event("trial.started", within=timedelta(days=2)),
            id="on_trial?",
            then=[send_email("trial_offer", id="offer", data=OFFER)],
            # a demo request: invite them to try it themselves, same offer
            otherwise=[send_email("trial_invitation", id="invitation", data=OFFER)],
        ),
        branch(
            attribute("trial_ends_at"),
            id="knows_trial_end?",
            then=[wait_until_date("trial_ends_at", days_before=3, time="09:00", id="3d_before")],
            otherwise=[wait(days=4, id="4d_later")],
        ),
        send_email("trial_reminder", id="reminder", data=OFFER),
        # An order moves the lead to purchase, which ends this workflow as converted; the
        # timeout path is the "no purchase" one.
        wait_for_event(
            "order.completed",
            timeout=timedelta(days=4),
            id="bought?",
            on_timeout=[
                send_email("trial_nudge", id="nudge", data=OFFER),
                branch(
                    any_of(opened(), clicked()),
                    id="engaged?",
                    then=[
                        create_crm_task(
                            "Trial ended without a purchase: engaged lead, call them",
                            body="Opened the trial emails but did not buy. Ask what is missing.",
                            due_in=timedelta(days=1),
                            id="sales_call",
                        )
                    ],
                ),
            ],
        ),
    ],
)

WORKFLOWS = [TRIAL]
