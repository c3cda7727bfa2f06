"""Erasing a contact through the API removes the files the embedded outboxes wrote for her:
her emails' ``.eml`` files (named after her address) and her CRM steps' ``.json`` files
(her address, and what the step printed of her). Kept, they outlived the erasure, and on
SQLite, which reuses the highest ids, a newcomer's CRM task took her file's name: it was
"sent" without being written, the file still telling sales to call the erased contact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.email.outbox import OutboxEmailConnector
from engine import (
    Workflow,
    build_registry,
    create_crm_task,
    lifecycle_journey,
    on_event,
    send_email,
)
from tests.language_support import TEMPLATES
from tests.support import make_runtime
from tests.test_api import Api, event, serve
from workflows.rules import RULES

CALL = Workflow(
    "call_them",
    trigger=on_event("demo.requested"),
    steps=[
        send_email("demo_invitation", id="invite", marketing=False),
        create_crm_task("Call {{ contact.first_name }}", id="call"),
    ],
)


@pytest.fixture
def api(tmp_path: Path, sqlite_url: str) -> Iterator[Api]:
    outbox = tmp_path / "outbox"
    runtime, clock, email = make_runtime(sqlite_url, outbox_dir=outbox)
    runtime.registry = build_registry(
        journey=lifecycle_journey(mql_threshold=20),
        rules=RULES,
        workflows=[CALL],
        templates_dir=TEMPLATES,
        events=["demo.requested"],
    )
    runtime.email = OutboxEmailConnector(outbox)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _files(api: Api) -> dict[str, str]:
    outbox = api.runtime.settings.outbox_dir
    return {
        str(path.relative_to(outbox)): path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(outbox.rglob("*"))
        if path.is_file()
    }


def _demo(api: Api, email: str, first_name: str) -> None:
    body = event(email, "demo.requested", attributes={"first_name": first_name})
    assert api.post_events(body).status_code == 202
    api.runtime.drain()


def _erase(api: Api, email: str) -> None:
    assert api.http.delete(f"/v1/contacts/{email}", headers=api.auth()).status_code == 204


def test_an_erasure_removes_her_outbox_files_and_no_one_elses(api: Api) -> None:
    # Given Zelda and Bob, each with an email in the outbox and a CRM task in outbox/crm
    _demo(api, "zelda@example.com", "Zeldaname")
    _demo(api, "bob@example.com", "Bobname")
    before = _files(api)
    assert sum("zelda@example.com" in text for text in before.values()) == 2, list(before)
    # When Zelda is erased
    _erase(api, "zelda@example.com")
    # Then no file names her or holds her address or her name; Bob's two stay as they were
    after = _files(api)
    assert not [name for name in after if "zelda" in name]
    assert not [name for name, text in after.items() if "zelda" in text.lower()]
    assert after == {name: text for name, text in before.items() if "bob" in text}
    assert len(after) == 2


def test_a_newcomer_after_an_erasure_gets_his_own_crm_task_written(api: Api) -> None:
    # Given Zelda, the last contact written (SQLite gives her ids to the next one), erased
    _demo(api, "zelda@example.com", "Zeldaname")
    _erase(api, "zelda@example.com")
    # When a newcomer requests a demo
    _demo(api, "newbie@example.com", "Newbie")
    # Then the CRM task in the outbox is his, not hers
    tasks = [json.loads(text) for name, text in _files(api).items() if name.startswith("crm/")]
    assert [(task["email"], task["payload"]["subject"]) for task in tasks] == [
        ("newbie@example.com", "Call Newbie")
    ]
