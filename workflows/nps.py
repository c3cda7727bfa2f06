"""NPS: a periodic "how likely are you to recommend us?" for active customers.

Every Tuesday at 10:00 in each customer's own time zone, active customers who used the
product in the last 30 days are asked, at most every 90 days and not within 90 days of an
answer (a schedule trigger: one check per time zone, not one per contact). The answer
decides what follows:

- promoters (9-10): tagged; loyal customers move to advocacy through the ``nps.answered``
  rule (the advocacy workflow then asks for referrals and reviews), the others get a thank-you
  with the review and referral asks right here;
- passives (7-8): a thank-you asking what would make it a 10;
- detractors (0-6): tagged, a personal recovery email, and a task for customer success.

No answer after five days brings one reminder; a late answer is handled the same way.
"""

from datetime import timedelta

from engine import (
    Segment,
    Workflow,
    add_tag,
    all_of,
    branch,
    create_crm_task,
    did_event,
    gte,
    lte,
    not_,
    on_schedule,
    on_stage_entered,
    reenter_after,
    remove_tag,
    send_email,
    stage_in,
    wait_for_event,
)

from .common import ACTIVE_CUSTOMER_STAGES

SURVEY_EVERY = timedelta(days=90)
USING_THE_PRODUCT = Segment(
    "active customers using the product",
    all_of(
        stage_in(*ACTIVE_CUSTOMER_STAGES),
        did_event("product.used", within=timedelta(days=30)),
    ),
)


def answer_paths(suffix: str = "") -> list:
    """What an answer leads to (``suffix`` keeps step ids unique when used twice)."""
    return [
        branch(
            did_event("nps.answered", score=gte(9)),
            id=f"promoter?{suffix}",
            then=[
                add_tag("promoter", id=f"tag_promoter{suffix}"),
                remove_tag("detractor", id=f"untag_detractor{suffix}"),
                branch(
                    stage_in("advocacy"),  # moved there by the rule: advocacy asks
                    id=f"advocate_now?{suffix}",
                    otherwise=[send_email("promoter_thanks", id=f"promoter_thanks{suffix}")],
                ),
            ],
            otherwise=[
                branch(
                    did_event("nps.answered", score=lte(6)),
                    id=f"detractor?{suffix}",
                    then=[
                        add_tag("detractor", id=f"tag_detractor{suffix}"),
                        remove_tag("promoter", id=f"untag_promoter{suffix}"),
                        # a personal reply to their answer: never held by caps or quiet hours
                        send_email("nps_recovery", id=f"recovery{suffix}", marketing=False),
                        create_crm_task(
                            "NPS detractor: call within two working days",
                            body="Scored us 6 or lower. Find out what went wrong and fix it.",
                            due_in=timedelta(days=2),
                            id=f"detractor_task{suffix}",
                        ),
                    ],
                    otherwise=[send_email("passive_thanks", id=f"passive_thanks{suffix}")],
                ),
            ],
        ),
    ]


NPS = Workflow(
    "nps_survey",
    description="NPS every 90 days for active customers; promoters, passives, detractors.",
    # Tuesdays 10:00 local: a weekday morning, away from Monday's inbox.
    trigger=on_schedule("0 10 * * TUE", when=USING_THE_PRODUCT),
    entry_if=not_(did_event("nps.answered", within=SURVEY_EVERY)),
    reentry=reenter_after(days=SURVEY_EVERY.days),
    exit_when=[on_stage_entered("churned")],
    steps=[
        send_email("nps_survey", id="survey"),
        wait_for_event(
            "nps.answered",
            timeout=timedelta(days=5),
            id="answered?",
            on_event=answer_paths(),
            on_timeout=[
                send_email("nps_reminder", id="reminder"),
                wait_for_event(
                    "nps.answered",
                    timeout=timedelta(days=7),
                    id="answered_late?",
                    on_event=answer_paths("_late"),
                ),
            ],
        ),
    ],
)

WORKFLOWS = [NPS]
