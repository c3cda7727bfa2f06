"""A connector that keeps what it was asked to send, for tests (yours and ours).

It dedupes by idempotency key like a well-behaved provider, counts every call, and can be
told to fail the next calls to exercise retries.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import timedelta

from connectors.email.base import EmailConnector, EmailMessage, SendResult
from engine.errors import ConnectorError, PermanentConnectorError, TransientConnectorError


class RecordingEmailConnector(EmailConnector):
    name = "recording"
    dedupes = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[EmailMessage] = []
        self.calls = 0
        self._by_key: dict[str, str] = {}
        self._failures: deque[ConnectorError] = deque()

    def fail_next(
        self, count: int = 1, *, permanent: bool = False, retry_after: timedelta | None = None
    ) -> None:
        """Make the next ``count`` calls raise a transient (or permanent) error."""
        with self._lock:
            for _ in range(count):
                self._failures.append(
                    PermanentConnectorError("recording connector told to fail (permanent)")
                    if permanent
                    else TransientConnectorError(
                        "recording connector told to fail", retry_after=retry_after
                    )
                )

    def send(self, message: EmailMessage) -> SendResult:
        with self._lock:
            self.calls += 1
            if self._failures:
                raise self._failures.popleft()
            if message.idempotency_key in self._by_key:
                return SendResult(self._by_key[message.idempotency_key])
            provider_id = f"rec-{len(self.sent) + 1}"
            self._by_key[message.idempotency_key] = provider_id
            self.sent.append(message)
            return SendResult(provider_id)

    def to(self, email: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.sent if m.to == email]
