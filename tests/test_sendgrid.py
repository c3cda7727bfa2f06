"""The SendGrid connector against the shipped fake, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import SQLModel

from connectors import EmailMessage, SendGridEmailConnector, build_email_connector
from connectors.fakes import FakeSendGrid
from engine import (
    ConfigurationError,
    DeliveryUnknownError,
    PermanentConnectorError,
    Settings,
    TransientConnectorError,
    VirtualClock,
)
from engine.db import make_engine
from engine.runtime import Runtime
from tests.support import actions

KEY = "SG.test-key"


def message(**overrides: object) -> EmailMessage:
    fields: dict[str, object] = {
        "to": "ada@example.com",
        "sender": "Journeyline <hello@journeyline.example>",
        "subject": "Welcome, Ada",
        "text": "Hello Ada",
        "html": "<p>Hello Ada</p>",
        "idempotency_key": "action-7",
        "sent_at": datetime(2024, 1, 1, tzinfo=UTC),
        "categories": ("welcome", "welcome:hello"),
        "custom_args": {"jl_action_id": "7", "jl_contact_id": "3"},
    }
    fields.update(overrides)
    return EmailMessage(**fields)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.fixture
def connector(fake: FakeSendGrid) -> Iterator[SendGridEmailConnector]:
    sendgrid = SendGridEmailConnector(api_key=KEY, host=fake.url, timeout_s=0.5)
    yield sendgrid
    sendgrid.close()


def test_a_send_posts_the_payload_and_returns_the_message_id(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    result = connector.send(message())

    (request,) = fake.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["from"] == {"email": "hello@journeyline.example", "name": "Journeyline"}
    assert body["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert body["subject"] == "Welcome, Ada"
    assert body["content"] == [
        {"type": "text/plain", "value": "Hello Ada"},
        {"type": "text/html", "value": "<p>Hello Ada</p>"},
    ]
    assert body["categories"] == ["welcome", "welcome:hello"]
    assert body["custom_args"] == {"jl_action_id": "7", "jl_contact_id": "3"}
    assert "mail_settings" not in body
    assert result.provider_id == request.message_id != ""
    (sent,) = fake.sent_messages()
    assert (sent.to, sent.subject, sent.custom_args["jl_action_id"]) == (
        "ada@example.com",
        "Welcome, Ada",
        "7",
    )


def test_categories_are_capped_at_ten_and_the_unsubscribe_group_is_sent(
    fake: FakeSendGrid,
) -> None:
    sendgrid = SendGridEmailConnector(api_key=KEY, host=fake.url, asm_group_id=42)
    try:
        sendgrid.send(message(categories=tuple(f"c{i}" for i in range(15))))
    finally:
        sendgrid.close()
    body = fake.requests[0].body
    assert body["categories"] == [f"c{i}" for i in range(10)]
    assert body["asm"] == {"group_id": 42}


def test_a_429_is_transient_and_honors_x_ratelimit_reset(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    fake.fail_next(429, headers={"X-RateLimit-Reset": str(int(time.time()) + 30)})
    with pytest.raises(TransientConnectorError) as caught:
        connector.send(message())
    assert caught.value.retry_after is not None
    assert timedelta(seconds=28) <= caught.value.retry_after <= timedelta(seconds=31)


def test_a_429_whose_reset_has_passed_waits_at_least_a_second(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    fake.fail_next(429, headers={"X-RateLimit-Reset": str(int(time.time()) - 10)})
    with pytest.raises(TransientConnectorError) as caught:
        connector.send(message())
    assert caught.value.retry_after == timedelta(seconds=1)


def test_a_500_is_transient(fake: FakeSendGrid, connector: SendGridEmailConnector) -> None:
    fake.fail_next(500)
    with pytest.raises(TransientConnectorError, match="500"):
        connector.send(message())
    assert connector.send(message()).provider_id  # and the next try goes through


def test_a_payload_sendgrid_would_reject_is_permanent_with_its_message(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    big = message(custom_args={"jl_action_id": "7", "blob": "x" * 10_000})
    with pytest.raises(PermanentConnectorError, match=r"400.*under 10,000 bytes.*custom_args"):
        connector.send(big)
    assert fake.sent_messages() == []


def test_a_message_the_helper_cannot_build_is_permanent(
    connector: SendGridEmailConnector,
) -> None:
    with pytest.raises(PermanentConnectorError, match="cannot build"):
        connector.send(message(to="not-an-address"))


def test_the_fake_reports_every_problem_sendgrid_documents(fake: FakeSendGrid) -> None:
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}, {"email": "A@example.com"}]}],
        "from": {"email": "hello@example.com"},
        "content": [{"type": "text/plain", "value": "hi"}],
        "categories": [str(i) for i in range(11)],
        "custom_args": {"n": 1},
    }
    with httpx.Client() as client:
        response = client.post(
            f"{fake.url}/v3/mail/send", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 400
    fields = sorted(str(e["field"]) for e in response.json()["errors"])
    assert fields == ["categories", "custom_args", "personalizations.0.to", "subject"]


def test_a_400_carries_sendgrids_message_and_field(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    fake.fail_next(
        400,
        body={"errors": [{"message": "Does not contain a valid address.", "field": "from.email"}]},
    )
    with pytest.raises(PermanentConnectorError) as caught:
        connector.send(message())
    assert "Does not contain a valid address. (field: from.email)" in str(caught.value)
    assert not isinstance(caught.value, TransientConnectorError)


def test_a_wrong_api_key_is_permanent(fake: FakeSendGrid) -> None:
    sendgrid = SendGridEmailConnector(api_key="SG.wrong", host=fake.url)
    try:
        with pytest.raises(PermanentConnectorError, match=r"401.*authorization grant"):
            sendgrid.send(message())
    finally:
        sendgrid.close()
    assert fake.sent_messages() == []


def test_a_read_timeout_is_delivery_unknown(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    fake.delay_next(2.0)
    with pytest.raises(DeliveryUnknownError, match="jl_action_id=7"):
        connector.send(message())


def test_an_unreachable_host_is_transient() -> None:
    with FakeSendGrid(api_key=KEY) as gone:
        url = gone.url  # a port that was just released: nothing listens there now
    sendgrid = SendGridEmailConnector(api_key=KEY, host=url, timeout_s=0.5)
    try:
        with pytest.raises(TransientConnectorError, match="unreachable"):
            sendgrid.send(message())
    finally:
        sendgrid.close()


def test_sandbox_mode_is_answered_200_and_delivers_nothing(fake: FakeSendGrid) -> None:
    sendgrid = SendGridEmailConnector(api_key=KEY, host=fake.url, sandbox=True)
    try:
        result = sendgrid.send(message())
    finally:
        sendgrid.close()
    (request,) = fake.requests
    assert request.status == 200
    assert request.body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert result.provider_id == ""
    assert fake.sent_messages() == []


def test_one_pooled_client_carries_every_send_over_one_connection(
    fake: FakeSendGrid, connector: SendGridEmailConnector
) -> None:
    client = connector.client
    for i in range(5):
        connector.send(message(to=f"user{i}@example.com"))
    assert connector.client is client
    assert len({r.client_port for r in fake.requests}) == 1
    assert len(fake.sent_messages()) == 5


def test_build_email_connector_needs_a_key_for_sendgrid(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SENDGRID_API_KEY"):
        build_email_connector("sendgrid", outbox_dir=tmp_path)
    built = build_email_connector(
        "sendgrid", outbox_dir=tmp_path, sendgrid_api_key=KEY, sendgrid_sandbox=True
    )
    assert isinstance(built, SendGridEmailConnector) and built.sandbox
    built.close()


# --- end to end: a runtime on SQLite and the stub broker, sending through the fake -----------


@pytest.fixture
def runtime(tmp_path: Path, fake: FakeSendGrid) -> Iterator[tuple[Runtime, VirtualClock]]:
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    clock = VirtualClock()
    settings = Settings(
        database_url=url,
        email_connector="sendgrid",
        sendgrid_api_key=KEY,
        sendgrid_host=fake.url,
        sendgrid_timeout_seconds=2.0,
        max_attempts=3,
    )
    rt = Runtime(settings, clock=clock, db=db)
    yield rt, clock
    rt.close()


def test_a_tracked_event_sends_one_email_tagged_with_its_action(
    runtime: tuple[Runtime, VirtualClock], fake: FakeSendGrid
) -> None:
    rt, _clock = runtime
    assert isinstance(rt.email, SendGridEmailConnector)

    rt.track("ana@example.com", "page.viewed")
    rt.drain()

    (action,) = actions(rt)
    (sent,) = fake.sent_messages()
    assert action.status == "sent"
    assert sent.to == "ana@example.com"
    assert sent.custom_args["jl_action_id"] == str(action.id)
    assert action.provider_id == sent.message_id


def test_a_rate_limited_send_is_retried_after_the_reset_and_sent_once(
    runtime: tuple[Runtime, VirtualClock], fake: FakeSendGrid
) -> None:
    rt, clock = runtime
    fake.fail_next(429, headers={"X-RateLimit-Reset": str(int(time.time()) + 60)})

    rt.track("ana@example.com", "page.viewed")
    rt.drain()
    (action,) = actions(rt)
    assert action.status == "pending"
    assert action.next_attempt_at >= clock.now() + timedelta(seconds=58)
    assert fake.sent_messages() == []

    clock.advance(seconds=61)
    rt.run_until_idle()

    (action,) = actions(rt)
    assert action.status == "sent"
    assert action.attempts == 2
    (sent,) = fake.sent_messages()
    assert sent.custom_args["jl_action_id"] == str(action.id)
    assert [r.status for r in fake.requests] == [429, 202]
