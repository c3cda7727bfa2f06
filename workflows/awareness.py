"""Awareness: a new lead has met the brand. Teach before selling.

A welcome, then an educational series (guide, checklist, webinar, reading round-up), spaced
so that it never competes with the rest of the playbook for the weekly cap. The series stops
as soon as the lead moves on: becoming marketing-qualified or buying counts as converted,
any other move out of awareness (a trial, a demo request) ends it as "left stage".
"""

from engine import Workflow, on_stage_entered, send_email, wait

from .common import later

AWARENESS_NURTURE = Workflow(
    "awareness_nurture",
    description="Welcome a new lead and teach before selling; stops when they move on.",
    trigger=on_stage_entered("awareness"),
    goals=[on_stage_entered("consideration"), on_stage_entered("purchase")],
    steps=[
        send_email("welcome", id="welcome"),
        wait(days=3),
        send_email("guide", id="guide"),
        *later(4, id="checklist_morning"),
        send_email("nurture_checklist", id="checklist"),
        *later(5, id="webinar_morning"),
        send_email("nurture_webinar", id="webinar"),
        *later(7, id="roundup_morning"),
        send_email("nurture_roundup", id="roundup"),
    ],
)

WORKFLOWS = [AWARENESS_NURTURE]
