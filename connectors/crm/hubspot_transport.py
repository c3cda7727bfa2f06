"""HubSpot HTTP transport: pooled ``httpx.Client``s (one per thread), paced, retried, errors mapped.

Every HubSpot request goes through :meth:`HubSpotTransport.request`, which waits for the
:class:`~connectors.crm.rate_limit.HubSpotRateLimiter` (100 per rolling 10 s by default)
and maps what comes back, here at the boundary:

- 429: wait ``Retry-After`` if given, else the ``X-HubSpot-RateLimit-Interval-Milliseconds``
  window, else an exponential backoff; plus jitter; up to ``max_retries`` times, holding
  back every thread sharing the limiter; then ``TransientConnectorError(retry_after=...)``.
  A 429 for the DAILY policy is not retried here (it lasts until midnight).
- connection refused / connect timeout: the request never left, retried likewise, then
  ``TransientConnectorError``.
- 5xx, or a timeout after the request was sent: for idempotent calls (reads, upserts,
  property updates) retried likewise, then ``TransientConnectorError``; for creating a task
  or a note (HubSpot has no idempotency key) 500 / 503 are ``TransientConnectorError`` at
  once, and a timeout or a gateway's 502 / 504 / 524 (the proxy gave up waiting) is
  ``DeliveryUnknownError``: it may exist already.
- other 4xx: ``PermanentConnectorError`` with HubSpot's ``message``, category and
  correlation id (unless the caller takes that status as an answer: a batch refused whole).
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from connectors.crm.rate_limit import HubSpotRateLimiter
from connectors.http_clients import ClientPerThread
from engine.errors import DeliveryUnknownError, PermanentConnectorError, TransientConnectorError

DEFAULT_BASE_URL = "https://api.hubapi.com"

_DAILY_RETRY_AFTER = timedelta(hours=1)  # a guess: the daily quota resets at midnight

GATEWAY_GAVE_UP = frozenset({502, 504, 524})
"""Answers of the proxy in front of HubSpot (Bad Gateway, Gateway Timeout, Cloudflare's 524
"a timeout occurred"): the request may have reached HubSpot and been done, as after a read
timeout. HubSpot's own 500 and 503 did not do it."""


@dataclass(frozen=True)
class Call:
    """One HubSpot request, and whether repeating it is harmless."""

    method: str
    path: str
    what: str  # for messages: "upsert 3 contacts", "create a task"...
    idempotent: bool
    json: Any = None
    params: Mapping[str, str] | None = None


class HubSpotTransport:
    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.Client | None = None,
        timeout_s: float = 10.0,
        limiter: HubSpotRateLimiter | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter or HubSpotRateLimiter()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._jitter = jitter
        self._headers = {"Authorization": f"Bearer {token.strip()}", "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout_s)
        # Pooled clients (a client per request costs a TLS handshake each), one per worker
        # thread (see connectors/http_clients.py).
        self._clients = ClientPerThread(lambda: httpx.Client(timeout=self._timeout), shared=client)

    @property
    def client(self) -> httpx.Client:
        """The calling thread's client (or the one passed in, shared)."""
        return self._clients.get()

    def send(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying what may be retried; a 2xx answer or an error."""
        response = self.request(call, not_found_ok=False)
        if response is None:  # not reached: a 404 raises unless not_found_ok
            raise PermanentConnectorError(f"hubspot found nothing to {call.what}")
        return response

    def request(
        self,
        call: Call,
        *,
        not_found_ok: bool,
        answer_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response | None:
        """A 2xx answer (or one whose status is in ``answer_statuses``), None for a 404 when
        ``not_found_ok``, or a ``ConnectorError``."""
        url = self.base_url + call.path
        attempt = 0
        while True:
            self.limiter.acquire()
            retry = attempt < self.max_retries
            attempt += 1
            try:
                response = self.client.request(
                    call.method,
                    url,
                    json=call.json,
                    params=call.params,
                    headers=self._headers,
                    timeout=self._timeout,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left this process: always safe to try again.
                if retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot unreachable ({call.what}): {exc!r}"
                ) from exc
            except httpx.HTTPError as exc:  # read/write timeout, dropped connection
                if not call.idempotent:
                    raise DeliveryUnknownError(
                        f"hubspot did not answer after the request was sent ({call.what}): "
                        f"{exc!r}; it may have been done, check before trying again"
                    ) from exc
                if retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot did not answer ({call.what}): {exc!r}"
                ) from exc
            self.limiter.observe(response.headers)
            status = response.status_code
            if 200 <= status < 300:
                return response
            if status == 404 and not_found_ok:
                return None
            if status == 429:
                body = json_body(response)
                wait_s = rate_limit_wait_s(response.headers)
                if body.get("policyName") == "DAILY":
                    raise TransientConnectorError(
                        f"hubspot daily API limit reached ({call.what}): {describe(response)}",
                        retry_after=timedelta(seconds=wait_s) if wait_s else _DAILY_RETRY_AFTER,
                    )
                wait_s = wait_s if wait_s is not None else self._backoff(attempt, jitter=False)
                if retry:
                    # Every thread sharing the limiter waits: they would all get a 429 too.
                    self.limiter.pause(wait_s * (1 + 0.1 * self._jitter()))
                    continue
                raise TransientConnectorError(
                    f"hubspot rate limit (429) after {attempt} attempt(s) ({call.what}): "
                    f"{describe(response)}",
                    retry_after=timedelta(seconds=wait_s),
                )
            if status >= 500:
                if not call.idempotent and status in GATEWAY_GAVE_UP:
                    raise DeliveryUnknownError(
                        f"hubspot's gateway answered {status} ({call.what}): "
                        f"{describe(response)}; it may have been done, check before trying again"
                    )
                if call.idempotent and retry:
                    self.limiter.sleep(self._backoff(attempt))
                    continue
                raise TransientConnectorError(
                    f"hubspot server error {status} ({call.what}): {describe(response)}"
                )
            if status in answer_statuses:
                return response
            raise refused(call, response)

    def close(self) -> None:
        self._clients.close()

    def _backoff(self, attempt: int, *, jitter: bool = True) -> float:
        """Exponential, capped, with "equal jitter": half fixed, half random."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return delay / 2 + delay / 2 * self._jitter() if jitter else delay


def refused(call: Call, response: httpx.Response) -> PermanentConnectorError:
    return PermanentConnectorError(
        f"hubspot refused to {call.what} ({response.status_code}): {describe(response)}"
    )


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def describe(response: httpx.Response) -> str:
    """HubSpot's error body, ``{"status":"error","message",..,"category","correlationId"}``."""
    body = json_body(response)
    message = body.get("message")
    if not message:
        return response.text[:500] or "(no body)"
    parts = [str(message)]
    kind = body.get("category") or body.get("errorType")
    if kind:
        parts.append(f"category {kind}")
    if body.get("correlationId"):
        parts.append(f"correlationId {body['correlationId']}")
    return "; ".join(parts)


def rate_limit_wait_s(headers: httpx.Headers) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or an HTTP date), else the
    rolling window's length, else None."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        with contextlib.suppress(ValueError):
            return max(0.0, float(retry_after))
        with contextlib.suppress(TypeError, ValueError):
            moment = email.utils.parsedate_to_datetime(retry_after)
            return max(0.0, moment.timestamp() - time.time())
    interval_ms = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    if interval_ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(interval_ms) / 1000)
    return None
