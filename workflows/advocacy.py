"""Advocacy: a promoter (NPS 9-10, or a loyal customer who referred or reviewed).

Invite them to the referral programme right away, thank them when a referral comes in, and
a few days later ask for a review unless they already wrote one.
"""

from datetime import timedelta

from engine import Workflow, branch, did_event, on_stage_entered, send_email, wait_for_event

from .common import later

ADVOCACY = Workflow(
    "advocacy_referral",
    description="Referral invitation and review request for promoters.",
    trigger=on_stage_entered("advocacy"),
    steps=[
        send_email("referral_invitation", id="referral", data={"program": "friends"}),
        wait_for_event(
            "referral.sent",
            timeout=timedelta(days=5),
            id="referred?",
            on_event=[send_email("referral_thanks", id="referral_thanks")],
        ),
        *later(2, id="review_morning"),
        branch(
            did_event("review.posted", within=timedelta(days=180)),
            id="reviewed_already?",
            otherwise=[
                send_email("review_request", id="review"),
                wait_for_event(
                    "review.posted",
                    timeout=timedelta(days=14),
                    id="reviewed?",
                    on_event=[send_email("review_thanks", id="review_thanks")],
                ),
            ],
        ),
    ],
)

WORKFLOWS = [ADVOCACY]
