"""Engagement: an active customer. Keep teaching, and ask what to build next.

Tips on the features teams adopt in their second month, a free course, then a feedback
survey; an answer is thanked and tagged. The series carries on if they renew (retention),
and stops if they churn.
"""

from datetime import timedelta

from engine import Workflow, add_tag, on_stage_entered, send_email, wait_for_event

from .common import later

ENGAGEMENT = Workflow(
    "engagement_education",
    description="Educational tips and content for active customers, then a feedback survey.",
    trigger=on_stage_entered("engagement"),
    exit_on_stage_left=False,
    exit_when=[on_stage_entered("churned")],
    steps=[
        *later(3, id="tips_morning"),
        send_email("engagement_tips", id="tips"),
        *later(7, id="academy_morning"),
        send_email("engagement_academy", id="academy"),
        *later(14, id="survey_morning"),
        send_email("feedback_survey", id="survey"),
        wait_for_event(
            "survey.answered",
            survey="feedback",
            timeout=timedelta(days=10),
            id="answered?",
            on_event=[add_tag("gave_feedback"), send_email("feedback_thanks", id="survey_thanks")],
        ),
    ],
)

WORKFLOWS = [ENGAGEMENT]
