"""SendGrid v3 Mail Send through one pooled ``httpx.Client``.

The payload is built by the official ``sendgrid`` package (``Mail(...).get()``); the request
goes through a long-lived ``httpx.Client`` because the package's own client opens a new
connection per request (about 30 emails/s against ~1,300 with keep-alive).

SendGrid has no idempotency key, so ``dedupes`` is False: the action id travels in
``custom_args`` (echoed on every delivery event) and a timeout after the request went out
becomes ``DeliveryUnknownError``, to be reconciled from events rather than re-sent.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import timedelta
from typing import Any

import httpx
from sendgrid.helpers.mail import (
    Asm,
    Category,
    CustomArg,
    Header,
    Mail,
    MailSettings,
    SandBoxMode,
)

from connectors.email.base import EmailConnector, EmailMessage, SendResult
from engine.errors import (
    DeliveryUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

MAX_CATEGORIES = 10
_DEFAULT_RETRY_AFTER_S = 1.0


class SendGridEmailConnector(EmailConnector):
    name = "sendgrid"
    dedupes = False

    def __init__(
        self,
        *,
        api_key: str,
        host: str = "https://api.sendgrid.com",
        timeout_s: float = 10.0,
        sandbox: bool = False,
        client: httpx.Client | None = None,
        asm_group_id: int | None = None,
    ) -> None:
        self.url = f"{host.rstrip('/')}/v3/mail/send"
        self.sandbox = sandbox
        self.asm_group_id = asm_group_id
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._owns_client = client is None
        # One client per process: a new client per request is as slow as the sendgrid package.
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout_s))
        self._timeout = httpx.Timeout(timeout_s)

    def payload(self, message: EmailMessage) -> dict[str, Any]:
        """The v3 JSON body for one message, as built by the ``sendgrid`` package."""
        mail = Mail(
            from_email=message.sender,
            to_emails=message.to,
            subject=message.subject,
            plain_text_content=message.text or None,
            html_content=message.html or None,
        )
        categories = list(dict.fromkeys(message.categories))[:MAX_CATEGORIES]
        # The helper prepends each category; add them reversed to keep the caller's order.
        for category in reversed(categories):
            mail.category = Category(category)
        if message.custom_args:
            mail.custom_arg = [CustomArg(str(k), str(v)) for k, v in message.custom_args.items()]
        if message.headers:
            mail.header = [Header(k, v) for k, v in message.headers.items()]
        if self.asm_group_id is not None:
            mail.asm = Asm(self.asm_group_id)
        if self.sandbox:
            settings = MailSettings()
            settings.sandbox_mode = SandBoxMode(True)
            mail.mail_settings = settings
        body: dict[str, Any] = mail.get()
        return body

    def send(self, message: EmailMessage) -> SendResult:
        if not (message.text or message.html):
            raise PermanentConnectorError("an email needs a text or an html body")
        try:
            body = self.payload(message)
        except Exception as exc:  # the helper raises KeyError/ValueError on a malformed address
            raise PermanentConnectorError(f"cannot build a sendgrid payload: {exc!r}") from exc
        try:
            response = self.client.post(
                self.url, json=body, headers=self._headers, timeout=self._timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left this process: safe to try again.
            raise TransientConnectorError(f"sendgrid unreachable: {exc!r}") from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError) as exc:
            raise DeliveryUnknownError(
                f"sendgrid did not answer after the request was sent ({exc!r}); "
                f"reconcile jl_action_id={message.custom_args.get('jl_action_id', '?')} "
                "from delivery events before sending again"
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryUnknownError(f"sendgrid request failed mid-flight: {exc!r}") from exc
        if response.status_code in (200, 202):
            return SendResult(provider_id=response.headers.get("X-Message-Id", ""))
        raise _error_for(response)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _error_for(response: httpx.Response) -> Exception:
    status = response.status_code
    detail = _describe_errors(response)
    if status == 429:
        return TransientConnectorError(
            f"sendgrid rate limit (429): {detail}",
            retry_after=_retry_after(response.headers.get("X-RateLimit-Reset")),
        )
    if status >= 500:
        return TransientConnectorError(f"sendgrid server error ({status}): {detail}")
    return PermanentConnectorError(f"sendgrid rejected the message ({status}): {detail}")


def _retry_after(reset: str | None) -> timedelta:
    """``X-RateLimit-Reset`` is a unix time; wait until then, at least one second."""
    seconds = _DEFAULT_RETRY_AFTER_S
    if reset:
        with contextlib.suppress(ValueError):
            seconds = max(_DEFAULT_RETRY_AFTER_S, math.ceil(float(reset) - time.time()))
    return timedelta(seconds=seconds)


def _describe_errors(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return response.text[:500] or "(no body)"
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = error.get("message") or "(no message)"
        field = error.get("field")
        parts.append(f"{message} (field: {field})" if field else str(message))
    return "; ".join(parts) or response.text[:500] or "(no body)"
