"""SendGrid dynamic templates and the unsubscribe group, over real HTTP to the fake SendGrid.

Given a workflow step ``send_email(name, sendgrid_template="d-...")``, when it runs, then
SendGrid gets ``template_id`` and, per personalization, ``dynamic_template_data`` made of the
contact's fields and the step's data, with the usual categories and ``custom_args``.
"""

from __future__ import annotations

import email
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from connectors import EmailMessage, SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import (
    PermanentConnectorError,
    Segment,
    Settings,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    build_registry,
    on_event,
    on_segment_joined,
    send_email,
    stage_in,
)
from engine.db import make_engine
from engine.runtime import Runtime
from engine.spec import from_spec, to_spec
from tests.support import actions, contact

KEY = "SG.dynamic-test"
WELCOME = "d-0123456789abcdef0123456789abcdef"
RECEIPT = "d-fedcba9876543210fedcba9876543210"
TEMPLATES = Path(__file__).parent.parent / "workflows" / "templates"


def welcome(*, marketing: bool = True, template_id: str = WELCOME) -> Workflow:
    return Workflow(
        "hosted_welcome",
        trigger=on_event("trial.started"),
        steps=[
            send_email(
                "welcome_hosted",
                id="hello",
                marketing=marketing,
                sendgrid_template=template_id,
                data={"offer": "20%"},
            )
        ],
    )


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@contextmanager
def running(tmp_path: Path, workflows: Sequence[Workflow], **settings: object) -> Iterator[Runtime]:
    registry = build_registry(
        workflows=workflows, templates_dir=tmp_path / "no-templates", events=["trial.started"]
    )
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    runtime = Runtime(
        Settings(database_url=url, outbox_dir=tmp_path / "outbox", **settings),  # type: ignore[arg-type]
        clock=VirtualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
        registry=registry,
        db=db,
    )
    try:
        yield runtime
    finally:
        runtime.close()


def sendgrid(fake: FakeSendGrid, **settings: object) -> dict[str, object]:
    return {
        "email_connector": "sendgrid",
        "sendgrid_api_key": KEY,
        "sendgrid_host": fake.url,
        **settings,
    }


def test_a_dynamic_template_step_sends_template_id_and_the_contacts_data(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(tmp_path, [welcome()], **sendgrid(fake)) as runtime:
        runtime.track("ana@example.com", "trial.started", attributes={"first_name": "Ana"})
        runtime.drain()

        (action,) = actions(runtime)
        stage = contact(runtime, "ana@example.com").stage
    assert action.status == "sent"
    (request,) = fake.requests
    assert request.status == 202
    body = request.body
    assert body["template_id"] == WELCOME
    assert "content" not in body and "subject" not in body
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "ana@example.com"}]
    data = personalization["dynamic_template_data"]
    assert data["first_name"] == "Ana"
    assert data["email"] == "ana@example.com"
    assert data["stage"] == stage
    assert data["offer"] == "20%"
    assert body["categories"] == ["hosted_welcome", "hosted_welcome:hello"]
    assert body["custom_args"] == {
        "jl_action_id": str(action.id),
        "jl_contact_id": str(action.contact_id),
    }
    assert action.provider_id == request.message_id
    assert action.payload["sendgrid_template"] == WELCOME


def test_a_malformed_template_id_is_a_registry_problem_with_its_file_and_line(
    tmp_path: Path,
) -> None:
    bad = welcome(template_id="d-not-a-template")
    with pytest.raises(WorkflowDefinitionError) as info:
        build_registry(workflows=[bad], templates_dir=TEMPLATES, events=["trial.started"])
    (problem,) = info.value.problems
    assert "sendgrid_template 'd-not-a-template' is not a SendGrid dynamic template id" in problem
    assert f"{Path(__file__).name}:" in problem


def test_a_dynamic_template_needs_no_local_template_file(tmp_path: Path) -> None:
    registry = build_registry(
        workflows=[welcome()], templates_dir=tmp_path / "empty", events=["trial.started"]
    )
    assert "hosted_welcome" in registry.workflows


def test_the_spec_of_a_plain_send_is_unchanged_and_a_dynamic_one_round_trips() -> None:
    plain = send_email("welcome", data={"a": 1})
    assert to_spec(plain) == {
        "kind": "send_email",
        "template": "welcome",
        "id": "",
        "marketing": True,
        "data": {"a": 1},
    }
    hosted = send_email("welcome", sendgrid_template=WELCOME)
    assert to_spec(hosted)["sendgrid_template"] == WELCOME
    assert from_spec(to_spec(hosted)) == hosted
    assert welcome().version != welcome(template_id=RECEIPT).version


def test_the_outbox_says_which_dynamic_template_and_data_would_be_sent(tmp_path: Path) -> None:
    with running(tmp_path, [welcome()]) as runtime:
        runtime.track("ana@example.com", "trial.started", attributes={"first_name": "Ana"})
        runtime.drain()
        (action,) = actions(runtime)

    assert action.status == "sent"
    (path,) = (tmp_path / "outbox").glob("*.eml")
    mime = email.message_from_bytes(path.read_bytes())
    assert mime["X-Journeyline-SendGrid-Template"] == WELCOME
    assert WELCOME in mime["Subject"]
    text = mime.get_payload(decode=True).decode()
    assert f"dynamic template {WELCOME}" in text
    data = json.loads(text[text.index("{") :])
    assert data["first_name"] == "Ana" and data["offer"] == "20%"


def test_the_unsubscribe_group_goes_on_marketing_email_only(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    receipt = Workflow(
        "receipt",
        trigger=on_event("trial.started"),
        steps=[send_email("receipt", marketing=False, sendgrid_template=RECEIPT)],
    )
    with running(
        tmp_path, [welcome(), receipt], **sendgrid(fake, sendgrid_unsubscribe_group=77)
    ) as runtime:
        runtime.track("ana@example.com", "trial.started")
        runtime.drain()
        assert {a.status for a in actions(runtime)} == {"sent"}

    by_template = {r.body["template_id"]: r.body for r in fake.requests}
    assert by_template[WELCOME]["asm"] == {"group_id": 77}
    assert "asm" not in by_template[RECEIPT]


def test_without_the_setting_no_unsubscribe_group_is_sent(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    with running(tmp_path, [welcome()], **sendgrid(fake)) as runtime:
        runtime.track("ana@example.com", "trial.started")
        runtime.drain()
    (request,) = fake.requests
    assert "asm" not in request.body


def test_a_broadcast_batches_one_template_with_data_per_personalization(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    leads = Segment("leads", stage_in("consideration"))
    hosted_sale = Workflow(
        "hosted_sale",
        trigger=on_segment_joined(leads),
        steps=[send_email("sale", sendgrid_template=WELCOME, data={"offer": "spring"})],
    )
    with running(tmp_path, [hosted_sale], **sendgrid(fake)) as runtime:
        for name in ("Ana", "Bo", "Cy"):
            runtime.upsert_contact(
                f"{name.lower()}@example.com",
                stage="consideration",
                attributes={"first_name": name},
            )
        result = runtime.broadcast("hosted_sale")
        runtime.drain()
        sent = {a.id: a for a in actions(runtime)}

    assert result.actions == 3
    (request,) = fake.requests
    assert request.status == 202
    assert request.body["template_id"] == WELCOME
    seen = {}
    for personalization in request.body["personalizations"]:
        action = sent[int(personalization["custom_args"]["jl_action_id"])]
        assert action.status == "sent" and action.provider_id == request.message_id
        data = personalization["dynamic_template_data"]
        assert personalization["to"] == [{"email": data["email"]}]
        assert data["offer"] == "spring"
        seen[data["email"]] = data["first_name"]
    assert seen == {"ana@example.com": "Ana", "bo@example.com": "Bo", "cy@example.com": "Cy"}


def test_the_connector_refuses_a_message_with_neither_body_nor_template(
    fake: FakeSendGrid,
) -> None:
    connector = SendGridEmailConnector(api_key=KEY, host=fake.url)
    message = EmailMessage(
        to="ana@example.com",
        sender="hello@journeyline.example",
        subject="Hi",
        text="",
        html="",
        idempotency_key="k",
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    try:
        with pytest.raises(PermanentConnectorError, match="text or an html body, or a template"):
            connector.send(message)
    finally:
        connector.close()
    assert fake.requests == []


def test_a_contact_attribute_cannot_stand_in_for_the_unsubscribe_link(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    # Without links configured the email has none: an attribute of that name (from a signup
    # form, say) must not reach the template's {{unsubscribe_url}}.
    with running(tmp_path, [welcome()], **sendgrid(fake)) as runtime:
        runtime.track(
            "bo@example.com",
            "trial.started",
            attributes={"unsubscribe_url": "https://phish.example/unsub"},
        )
        runtime.drain()
    (request,) = fake.requests
    (personalization,) = request.body["personalizations"]
    assert personalization["dynamic_template_data"]["unsubscribe_url"] == ""
