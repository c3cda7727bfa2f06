"""Email connectors: the interface and its implementations, chosen by name."""

from __future__ import annotations

from pathlib import Path

from connectors.email.base import EmailConnector, EmailMessage, SendResult, unsubscribe_headers
from connectors.email.outbox import OutboxEmailConnector
from connectors.email.recording import RecordingEmailConnector
from connectors.email.sendgrid import SendGridEmailConnector
from engine.errors import ConfigurationError

__all__ = [
    "EmailConnector",
    "EmailMessage",
    "OutboxEmailConnector",
    "RecordingEmailConnector",
    "SendGridEmailConnector",
    "SendResult",
    "build_email_connector",
    "unsubscribe_headers",
]


def build_email_connector(
    name: str,
    *,
    outbox_dir: Path,
    sendgrid_api_key: str | None = None,
    sendgrid_host: str = "https://api.sendgrid.com",
    sendgrid_timeout_s: float = 10.0,
    sendgrid_sandbox: bool = False,
    sendgrid_batch_size: int = 1000,
    sendgrid_unsubscribe_group: int | None = None,
    sendgrid_substitutions: bool = True,
) -> EmailConnector:
    """The connector named in settings (``JOURNEYLINE_EMAIL_CONNECTOR``)."""
    if name == "outbox":
        return OutboxEmailConnector(outbox_dir)
    if name == "recording":
        return RecordingEmailConnector()
    if name == "sendgrid":
        if not sendgrid_api_key:
            raise ConfigurationError(
                "the sendgrid email connector needs JOURNEYLINE_SENDGRID_API_KEY"
            )
        return SendGridEmailConnector(
            api_key=sendgrid_api_key,
            host=sendgrid_host,
            timeout_s=sendgrid_timeout_s,
            sandbox=sendgrid_sandbox,
            batch_size=sendgrid_batch_size,
            asm_group_id=sendgrid_unsubscribe_group,
            substitutions=sendgrid_substitutions,
        )
    raise ConfigurationError(
        f"unknown email connector {name!r}; choose one of: outbox, recording, sendgrid, or "
        "module:factory for one of your own"
    )
