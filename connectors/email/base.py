"""The email connector interface.

A connector takes one rendered ``EmailMessage`` and either returns a ``SendResult`` or raises
``TransientConnectorError`` / ``PermanentConnectorError``. Connectors whose ``dedupes`` is
True guarantee that a repeated ``idempotency_key`` never produces a second email, so the
engine may safely re-send after a worker died mid-send; for the others it marks the action
``unknown`` instead of risking a duplicate.

A message either carries its own content (``subject``, ``text``, ``html``, rendered by
Journeyline) or names a provider-hosted template (``template_id``, e.g. a SendGrid dynamic
template ``d-...``) with the data to fill it (``template_data``); then its subject and bodies
are empty and the provider renders it. ``marketing`` is False for transactional mail, which
must not carry the marketing unsubscribe group.

``unsubscribe_url`` is the recipient's one-click unsubscribe link (``engine/unsubscribe.py``;
empty when none is configured, and always for transactional mail). Every connector sends it
as the ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers (RFC 2369, RFC 8058):
``headers_to_send`` for one message; a batched SendGrid send puts them in each
personalization, as the link differs per recipient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ONE_CLICK = "List-Unsubscribe=One-Click"


def unsubscribe_headers(url: str) -> dict[str, str]:
    """The one-click unsubscribe headers for ``url`` (RFC 8058); none without a URL."""
    if not url:
        return {}
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


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
    template_id: str = ""
    template_data: Mapping[str, Any] = field(default_factory=dict)
    marketing: bool = True
    unsubscribe_url: str = ""

    @property
    def headers_to_send(self) -> dict[str, str]:
        """``headers`` plus the unsubscribe headers of ``unsubscribe_url``, if any."""
        return {**self.headers, **unsubscribe_headers(self.unsubscribe_url)}

    @property
    def has_content(self) -> bool:
        """Whether there is something to send: a body, or a provider template to render."""
        return bool(self.text or self.html or self.template_id)


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
