"""Retention: keep customers through value and service, and win back the ones drifting away.

- Win-back: the product reports a customer inactive; a "we miss you" email, and if they do
  not come back within a week, a task for the account team (at-risk) and a free month.
- Renewal reminders: ahead of ``renews_at`` (set by billing with the order or the renewal),
  a notice two weeks before, and a task three days before if the account has gone unused.
- Churned: a request for the reason, then a comeback offer a month later.
"""

from datetime import timedelta

from engine import (
    Workflow,
    all_of,
    attribute,
    branch,
    create_crm_task,
    did_event,
    on_event,
    on_stage_entered,
    reenter_after,
    reenter_always,
    send_email,
    stage_in,
    wait,
    wait_for_event,
    wait_until_date,
)
from engine.workflow import EventReceived

from .common import ACTIVE_CUSTOMER_STAGES, CUSTOMER_STAGES

WINBACK = Workflow(
    "retention_winback",
    description="An inactive customer: we miss you, then an at-risk task and a free month.",
    trigger=on_event("product.inactive"),
    entry_if=stage_in(*ACTIVE_CUSTOMER_STAGES),
    reentry=reenter_after(days=60),
    goals=[on_event("product.used")],
    exit_when=[on_stage_entered("churned")],
    steps=[
        send_email("winback", id="winback"),
        # Using the product again is the goal and ends the workflow; this is the "still
        # away" path.
        wait_for_event(
            "product.used",
            timeout=timedelta(days=7),
            id="back?",
            on_timeout=[
                create_crm_task(
                    "At-risk account: inactive and did not answer the win-back",
                    body="No product use for a week after the win-back email. Call before "
                    "they cancel; a free month (BACK1M) went out with this task.",
                    due_in=timedelta(days=2),
                    id="at_risk_task",
                ),
                send_email("winback_offer", id="offer", data={"code": "BACK1M"}),
            ],
        ),
    ],
)


def _renewal(name: str, trigger: EventReceived, description: str) -> Workflow:
    return Workflow(
        name,
        description=description,
        trigger=trigger,
        entry_if=all_of(attribute("renews_at"), stage_in(*CUSTOMER_STAGES)),
        reentry=reenter_always(),
        # A new order or renewal restarts the reminders against the current ``renews_at``
        # (one of these two workflows enters again): this cycle's are moot.
        exit_when=[
            on_event("order.completed"),
            on_event("subscription.renewed"),
            on_event("subscription.cancelled"),
            on_stage_entered("churned"),
        ],
        steps=[
            wait_until_date("renews_at", days_before=14, time="09:00", id="2w_before"),
            # A notice of an upcoming charge is an account message, not marketing.
            send_email("renewal_reminder", id="reminder", marketing=False),
            wait_until_date("renews_at", days_before=3, time="09:00", id="3d_before"),
            branch(
                did_event("product.used", within=timedelta(days=21)),
                id="still_using?",
                otherwise=[
                    create_crm_task(
                        "Renewal at risk: no product use in three weeks, renews in 3 days",
                        body="Check in before the renewal charge; offer help or a plan change.",
                        due_in=timedelta(days=1),
                        id="at_risk_task",
                    )
                ],
            ),
        ],
    )


FIRST_RENEWAL = _renewal(
    "retention_renewal_after_order",
    on_event("order.completed"),
    "Renewal notice ahead of the renewal date billing sent with an order.",
)
RENEWAL = _renewal(
    "retention_renewal",
    on_event("subscription.renewed"),
    "Renewal notice ahead of the next renewal date, after each renewal.",
)

CHURNED = Workflow(
    "churned_winback",
    description="A cancelled customer: ask why, then a comeback offer a month later.",
    trigger=on_stage_entered("churned"),
    goals=[on_stage_entered("engagement")],
    steps=[
        wait(days=1),
        send_email("cancellation_feedback", id="why"),
        wait(days=30),
        send_email("comeback_offer", id="comeback", data={"discount": 30, "code": "COMEBACK30"}),
    ],
)

WORKFLOWS = [WINBACK, FIRST_RENEWAL, RENEWAL, CHURNED]
