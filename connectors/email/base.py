"""The email connector interface.

A connector takes one rendered ``EmailMessage`` and either returns a ``SendResult`` or raises
``TransientConnectorError`` / ``PermanentConnectorError``. Connectors whose ``dedupes`` is
True guarantee that a repeated ``idempotency_key`` never produces a second email, so the
engine may safely re-send after a worker died mid-send; for the others it marks the action
``unknown`` instead of risking a duplicate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class EmailMessage:
    to: str
    sender: str
    subject: str
    text: str
    html: str
    idempotency_key: str
    sent_at: datetime
    categories: tuple[str, ...] = ()
    custom_args: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    provider_id: str


class EmailConnector(ABC):
    name: str = "email"
    dedupes: bool = False

    @abstractmethod
    def send(self, message: EmailMessage) -> SendResult:
        """Send one message, or raise a ``ConnectorError`` saying whether to retry."""

    def close(self) -> None:  # noqa: B027 - a hook, a no-op by default
        """Release connections; called once when the runtime shuts down."""
