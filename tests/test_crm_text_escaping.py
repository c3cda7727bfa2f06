"""A CRM task's or note's text prints contact fields; where the CRM shows it as HTML
(HubSpot's ``hs_task_body`` and ``hs_note_body``), what a contact typed must arrive as text,
never as markup in a sales rep's CRM. A task's subject (``hs_task_subject``) is plain text,
and so is the CRM outbox's JSON: those keep the text as it reads. Given / When / Then."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connectors.fakes import FakeHubSpot
from engine import (
    Workflow,
    build_registry,
    create_crm_note,
    create_crm_task,
    lifecycle_journey,
    on_event,
)
from engine.runtime import Runtime
from engine.templates import render_html_text, render_text
from tests.language_support import TEMPLATES
from tests.support import actions, make_runtime
from workflows.rules import RULES

TOKEN = "pat-test"
LINK = "<a href=https://evil.example>click</a>"
LINK_AS_TEXT = "&lt;a href=https://evil.example&gt;click&lt;/a&gt;"
FIELDS = {"first_name": LINK, "company": "O'Brien & Co"}

HANDOFF = Workflow(
    "handoff",
    trigger=on_event("demo.requested"),
    steps=[
        create_crm_task(
            "Call {{ contact.first_name }}",
            body="<b>Demo asked</b> by {{ contact.first_name }} of {{ contact.company }}",
        ),
        create_crm_note("{{ contact.first_name }} ({{ contact.company }}) asked for a demo"),
    ],
)


@contextmanager
def runtime(tmp_path: Path, **settings: object) -> Iterator[Runtime]:
    rt, _clock, _email = make_runtime(
        f"sqlite:///{tmp_path}/jl.db",
        broker_url="inline://",
        clock=None,
        outbox_dir=tmp_path / "outbox",
        **settings,
    )
    rt.registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[HANDOFF], templates_dir=TEMPLATES
    )
    rt.start()
    try:
        yield rt
    finally:
        rt.close()


def test_contact_fields_reach_hubspot_bodies_escaped_and_the_subject_as_text(
    tmp_path: Path,
) -> None:
    with FakeHubSpot(token=TOKEN, max_per_interval=None) as hubspot:
        hubspot.add_contact("lead@example.com")
        settings = {"hubspot_token": TOKEN, "hubspot_base_url": hubspot.url}
        with runtime(tmp_path, crm_connector="hubspot", **settings) as rt:
            # Given a lead whose name holds a link
            # When the workflow creates a task and a note for a rep in HubSpot
            rt.track("lead@example.com", "demo.requested", attributes=FIELDS)
            rt.run_until_idle()
            assert {a.kind: a.status for a in actions(rt)} == {
                "crm.task": "sent",
                "crm.note": "sent",
            }
        [task] = hubspot.tasks()
        [note] = hubspot.notes()
    # Then the bodies (rich text) show the name as text, the author's own markup kept
    assert task.properties["hs_task_body"] == (
        f"<b>Demo asked</b> by {LINK_AS_TEXT} of O&#39;Brien &amp; Co"
    )
    assert note.properties["hs_note_body"] == (
        f"{LINK_AS_TEXT} (O&#39;Brien &amp; Co) asked for a demo"
    )
    # And the subject, plain text in HubSpot, reads as typed
    assert task.properties["hs_task_subject"] == f"Call {LINK}"


def test_the_crm_outbox_keeps_plain_text(tmp_path: Path) -> None:
    with runtime(tmp_path) as rt:
        rt.track("lead@example.com", "demo.requested", attributes=FIELDS)
        rt.run_until_idle()
    files = sorted((tmp_path / "outbox" / "crm").glob("*.json"))
    payloads = {f.name.split("-")[0]: json.loads(f.read_text())["payload"] for f in files}
    assert payloads["crm.task"]["subject"] == f"Call {LINK}"
    assert payloads["crm.task"]["body"] == f"<b>Demo asked</b> by {LINK} of O'Brien & Co"
    assert payloads["crm.note"]["body"] == f"{LINK} (O'Brien & Co) asked for a demo"


def test_html_text_escapes_what_it_prints_and_nothing_else() -> None:
    contact = {"first_name": '"><script>x()</script>'}
    assert render_html_text("Hi <i>{{ contact.first_name }}</i>", contact=contact, data={}) == (
        "Hi <i>&#34;&gt;&lt;script&gt;x()&lt;/script&gt;</i>"
    )
    assert render_html_text("Tom & Jerry, no fields", contact=contact, data={}) == (
        "Tom & Jerry, no fields"
    )


def test_snippets_render_in_a_sandbox() -> None:
    # A snippet cannot reach Python's internals through a value it is given
    for source in ("{{ contact.__class__ }}", "{{ data.items.__self__ }}"):
        assert render_text(source, contact={}, data={}) == ""
        assert render_html_text(source, contact={}, data={}) == ""
    # while what a snippet is for still works
    assert render_text(
        "{{ contact.first_name | default('there') | upper }} {{ data.n + 1 }}",
        contact={},
        data={"n": 1},
    ) == ("THERE 2")
