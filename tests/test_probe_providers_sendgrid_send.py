"""SendGrid Mail Send failures that may come after SendGrid accepted the message (provider
probe): nothing is ever sent twice. Over real HTTP against the shipped fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from connectors import EmailMessage, SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import DeliveryUnknownError, Settings, TransientConnectorError, VirtualClock
from engine.db import make_engine
from engine.runtime import Runtime
from tests.support import actions

KEY = "SG.probe-key"


def message() -> EmailMessage:
    return EmailMessage(
        to="ada@example.com",
        sender="hello@journeyline.example",
        subject="Welcome",
        text="Hello",
        html="<p>Hello</p>",
        idempotency_key="action-7",
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        custom_args={"jl_action_id": "7"},
    )


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_after_accepting_is_delivery_unknown(
    fake: FakeSendGrid, status: int
) -> None:
    connector = SendGridEmailConnector(api_key=KEY, host=fake.url)
    try:
        # Given a gateway that gave up waiting after SendGrid took the message
        fake.fail_next(status, after_accepting=True)
        # When the connector sends
        with pytest.raises(DeliveryUnknownError, match=str(status)):
            connector.send(message())
    finally:
        connector.close()
    # Then the message went out, and the connector did not call it a retryable failure
    assert [m.to for m in fake.sent_messages()] == ["ada@example.com"]


@pytest.mark.parametrize("status", [500, 503])
def test_sendgrids_own_server_errors_are_still_retried(fake: FakeSendGrid, status: int) -> None:
    connector = SendGridEmailConnector(api_key=KEY, host=fake.url)
    try:
        fake.fail_next(status)
        with pytest.raises(TransientConnectorError):
            connector.send(message())
    finally:
        connector.close()
    assert fake.sent_messages() == []


def test_the_fake_can_fail_after_accepting_and_delivers_the_message(fake: FakeSendGrid) -> None:
    connector = SendGridEmailConnector(api_key=KEY, host=fake.url)
    try:
        fake.fail_next(500, after_accepting=True)
        with pytest.raises(TransientConnectorError):
            connector.send(message())
        fake.fail_next(500)  # a plain failure delivers nothing
        with pytest.raises(TransientConnectorError):
            connector.send(message())
    finally:
        connector.close()
    assert [r.accepted for r in fake.requests] == [True, False]
    assert len(fake.sent_messages()) == 1


def test_an_email_whose_send_hit_a_gateway_timeout_is_never_sent_twice(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    clock = VirtualClock()
    settings = Settings(
        database_url=url,
        email_connector="sendgrid",
        sendgrid_api_key=KEY,
        sendgrid_host=fake.url,
        max_attempts=3,
    )
    rt = Runtime(settings, clock=clock, db=db)
    try:
        # Given SendGrid accepts the welcome email but its gateway answers 504
        fake.fail_next(504, after_accepting=True)
        rt.track("ana@example.com", "page.viewed")
        rt.drain()
        # When the engine runs on past every retry delay
        clock.advance(timedelta(hours=2))
        rt.run_until_idle()
        # Then Ana got it once, and the action waits to be reconciled from events
        assert [m.to for m in fake.sent_messages()] == ["ana@example.com"]
        (action,) = actions(rt)
        assert action.status == "unknown"
    finally:
        rt.close()
