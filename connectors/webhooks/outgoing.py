"""Outgoing webhooks: a signed JSON POST to a URL a workflow names.

The body is signed like inbound generic webhooks (``X-Journeyline-Signature: t=..,v1=..``,
HMAC-SHA256 with the shared secret) and carries an ``Idempotency-Key`` header, so a receiver
can drop a repeat. Errors are mapped at the boundary: 429 and 5xx are transient (429 honours
``Retry-After``), other 4xx permanent, a timeout after sending is "unknown", and a URL no
request can be made to (not http or https, or not a URL) permanent. Redirects are not
followed (a 3xx is a permanent failure): a receiver cannot send the worker on to another
host, such as a cloud metadata address.

The receiver is not trusted with the worker's memory or time: the status alone decides, and
of the body only the first ``MAX_DETAIL_BYTES`` are read (an error quotes its start; a
small success read to its end keeps the connection for the next call), for at most the
timeout in all (a per-read timeout alone lets an answer dripped a byte at a time hold a
worker thread for hours). Errors, which are logged and stored on the action, name
the receiver by its origin only (``engine.urls.url_origin``): a webhook URL often carries
its credential, in a password, a query or the path. The start of an error answer they quote
has the URL's parts after the host cut out too (``_without_url_secrets``): receivers echo
the request's path (Express's default 404 page, ``Cannot POST /hooks/<secret>``) or a token
they refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from connectors.http_clients import ClientPerThread
from connectors.webhooks.signatures import JOURNEYLINE_SIGNATURE_HEADER, sign_hmac
from engine.errors import DeliveryUnknownError, PermanentConnectorError, TransientConnectorError
from engine.urls import url_origin

MAX_DETAIL_BYTES = 4096
"""How much of an error answer's body is read, to quote its start in the error."""
DETAIL_CHARS = 300
"""How many characters of it the error quotes."""


class WebhookSender:
    name = "webhook"
    dedupes = False  # we cannot know whether the receiver honours Idempotency-Key

    def __init__(
        self,
        *,
        secret: str,
        client: httpx.Client | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock  # monotonic seconds: when to stop reading an error's body
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
            # The start of an error's body is read as sent: no compressed body to inflate.
            "Accept-Encoding": "identity",
            JOURNEYLINE_SIGNATURE_HEADER: sign_hmac(
                secret=self.secret, body=raw, timestamp=int(time.time())
            ),
        }
        where = url_origin(url)

        def said(text: object) -> str:  # what the receiver or the client said, URL cut out
            return _without_url_secrets(str(text), url)

        deadline = self.clock() + self.timeout_s
        try:
            with self.client.stream("POST", url, content=raw, headers=headers) as response:
                status = response.status_code
                # Read (a bounded start) even on success: a body read to its end lets the
                # connection go back to the pool; one cut short closes it.
                detail = _start_of(response, deadline=deadline, clock=self.clock)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise PermanentConnectorError(
                f"webhook {where}: no request can be made to this URL: {said(exc)}"
            ) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientConnectorError(
                f"webhook {where}: could not connect: {said(exc)}"
            ) from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError) as exc:
            raise DeliveryUnknownError(
                f"webhook {where}: no answer after sending ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientConnectorError(f"webhook {where}: {said(exc)}") from exc
        if status < 300:
            return f"{status}"  # the status decides; the body is not looked at
        if status == 429 or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise TransientConnectorError(
                f"webhook {where} answered {status}: {said(detail)}", retry_after=retry_after
            )
        raise PermanentConnectorError(f"webhook {where} answered {status}: {said(detail)}")

    def close(self) -> None:
        self._clients.close()


REDACTED = "…"
"""What stands in an error's quote for a part of the URL that may be its credential."""
_MIN_SEGMENT_CHARS = 6
"""Path segments and query values shorter than this are too common to be a secret (``v1``,
``ops``) and are left in the quote."""


def _without_url_secrets(text: str, url: str) -> str:
    """``text`` with every part of ``url`` after its host (the whole URL, its path, query,
    path segments and query values, its user's password) replaced by ``REDACTED``, as sent
    and percent-decoded: a receiver's error answer may echo them."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return text if url not in text else text.replace(url, REDACTED)
    secrets = {url, parts.query, parts.fragment, password or ""}
    if parts.path not in ("", "/"):
        secrets.add(parts.path)
        secrets.update(s for s in parts.path.split("/") if len(s) >= _MIN_SEGMENT_CHARS)
    if parts.query:
        secrets.add(f"{parts.path}?{parts.query}")
        secrets.update(
            value
            for _, value in parse_qsl(parts.query, keep_blank_values=True)
            if len(value) >= _MIN_SEGMENT_CHARS
        )
    secrets |= {unquote(s) for s in secrets}
    for secret in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _start_of(response: httpx.Response, *, deadline: float, clock: Callable[[], float]) -> str:
    """The first characters of an error answer's body (see ``_read_some``)."""
    try:
        received = response.content  # read already: an in-memory transport's answer
    except httpx.ResponseNotRead:
        received = _read_some(response, deadline=deadline, clock=clock)
    text = received[:MAX_DETAIL_BYTES].decode(response.encoding or "utf-8", "replace")
    return text[:DETAIL_CHARS]


def _read_some(response: httpx.Response, *, deadline: float, clock: Callable[[], float]) -> bytes:
    """At most about ``MAX_DETAIL_BYTES`` of a streamed body, and nothing more once
    ``deadline`` has passed; the rest is left unread (the connection is then dropped)."""
    received = bytearray()
    try:
        for chunk in response.iter_raw():
            received += chunk
            if len(received) >= MAX_DETAIL_BYTES or clock() >= deadline:
                break
    except httpx.HTTPError:
        pass  # the status has decided already; the body was only to quote
    return bytes(received)


def _retry_after(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return timedelta(seconds=max(1.0, float(value)))
    except ValueError:
        return None
