"""Outgoing webhooks: a signed JSON POST to a URL a workflow names.

The body is signed like inbound generic webhooks (``X-Journeyline-Signature: t=..,v1=..``,
HMAC-SHA256 with the shared secret) and carries an ``Idempotency-Key`` header, so a receiver
can drop a repeat. Errors are mapped at the boundary: 429 and 5xx are transient (429 honours
``Retry-After``), other 4xx permanent, a timeout after sending is "unknown".
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx

from connectors.http_clients import ClientPerThread
from connectors.webhooks.signatures import JOURNEYLINE_SIGNATURE_HEADER, sign_hmac
from engine.errors import DeliveryUnknownError, PermanentConnectorError, TransientConnectorError


class WebhookSender:
    name = "webhook"
    dedupes = False  # we cannot know whether the receiver honours Idempotency-Key

    def __init__(
        self, *, secret: str, client: httpx.Client | None = None, timeout_s: float = 10.0
    ) -> None:
        self.secret = secret
        # One pooled client per worker thread (see connectors/http_clients.py).
        self._clients = ClientPerThread(lambda: httpx.Client(timeout=timeout_s), shared=client)

    @property
    def client(self) -> httpx.Client:
        """The calling thread's client (or the one passed in, shared)."""
        return self._clients.get()

    def post(self, url: str, body: Mapping[str, Any], *, idempotency_key: str) -> str:
        raw = json.dumps(body, sort_keys=True, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            JOURNEYLINE_SIGNATURE_HEADER: sign_hmac(
                secret=self.secret, body=raw, timestamp=int(time.time())
            ),
        }
        try:
            response = self.client.post(url, content=raw, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientConnectorError(f"webhook {url}: could not connect: {exc}") from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError) as exc:
            raise DeliveryUnknownError(
                f"webhook {url}: no answer after sending ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientConnectorError(f"webhook {url}: {exc}") from exc
        if response.status_code < 300:
            return f"{response.status_code}"
        detail = response.text[:300]
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise TransientConnectorError(
                f"webhook {url} answered {response.status_code}: {detail}", retry_after=retry_after
            )
        raise PermanentConnectorError(f"webhook {url} answered {response.status_code}: {detail}")

    def close(self) -> None:
        self._clients.close()


def _retry_after(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return timedelta(seconds=max(1.0, float(value)))
    except ValueError:
        return None
