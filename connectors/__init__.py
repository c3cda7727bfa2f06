"""Connectors: narrow interfaces to the outside world, one package per kind of side effect."""

from connectors.email import (
    EmailConnector,
    EmailMessage,
    OutboxEmailConnector,
    RecordingEmailConnector,
    SendGridEmailConnector,
    SendResult,
    build_email_connector,
)

__all__ = [
    "EmailConnector",
    "EmailMessage",
    "OutboxEmailConnector",
    "RecordingEmailConnector",
    "SendGridEmailConnector",
    "SendResult",
    "build_email_connector",
]
