"""The file outbox: real, parseable emails, one file per intent."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from connectors import EmailMessage, OutboxEmailConnector
from engine import PermanentConnectorError


def _message(**overrides: object) -> EmailMessage:
    fields: dict = {
        "to": "zoë@example.com",
        "sender": "Acme <hello@acme.example>",
        "subject": "Ünïcode subject, ready",
        "text": "Hola, ¿qué tal?",
        "html": "<p>Hola, <b>¿qué tal?</b></p>",
        "idempotency_key": "enrollment:1:step:welcome",
        "sent_at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        "categories": ("nurture", "nurture:welcome"),
        "custom_args": {"jl_action_id": "7"},
    }
    fields.update(overrides)
    return EmailMessage(**fields)


def test_an_email_lands_as_a_parseable_multipart_file(tmp_path: Path) -> None:
    outbox = OutboxEmailConnector(tmp_path)
    result = outbox.send(_message())
    (path,) = tmp_path.glob("*.eml")
    assert result.provider_id == path.name
    parsed = email.message_from_bytes(path.read_bytes())
    assert str(make_header(decode_header(parsed["Subject"]))) == "Ünïcode subject, ready"
    assert parsed["X-Journeyline-Arg-jl_action_id"] == "7"
    assert parsed["Date"] == "Sun, 01 Mar 2026 09:30:00 +0000"
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.get_payload()
    assert text.get_payload(decode=True).decode() == "Hola, ¿qué tal?"
    assert "<b>¿qué tal?</b>" in html.get_payload(decode=True).decode()


def test_the_same_intent_twice_leaves_one_file(tmp_path: Path) -> None:
    outbox = OutboxEmailConnector(tmp_path)
    first = outbox.send(_message())
    second = outbox.send(_message(subject="changed"))
    assert first == second
    assert len(list(tmp_path.glob("*.eml"))) == 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_text_only_email_is_a_single_part(tmp_path: Path) -> None:
    OutboxEmailConnector(tmp_path).send(_message(html=""))
    (path,) = tmp_path.glob("*.eml")
    assert email.message_from_bytes(path.read_bytes()).get_content_type() == "text/plain"


def test_an_email_without_a_body_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PermanentConnectorError, match="text or an html body"):
        OutboxEmailConnector(tmp_path).send(_message(text="", html=""))
