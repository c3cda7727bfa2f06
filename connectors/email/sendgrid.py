"""SendGrid v3 Mail Send through pooled ``httpx.Client``s, one per worker thread.

The payload is built by the official ``sendgrid`` package (``Mail(...).get()``); the request
goes through long-lived ``httpx.Client``s because the package's own client opens a new
connection per request (about 30 emails/s against ~1,300 with keep-alive).

SendGrid has no idempotency key, so ``dedupes`` is False: the action id travels in
``custom_args`` (echoed on every delivery event) and a timeout after the request went out,
or a gateway's 502 / 504 (which is one), becomes ``DeliveryUnknownError``, to be reconciled
from events rather than re-sent. 429, 500 and 503 are retried.

``send_batch`` posts one message to many recipients in one request: one personalization per
recipient (at most ``batch_size``, SendGrid's limit is 1,000), each with its own
``custom_args`` so every delivery event still names the action that caused it. A request
succeeds or fails as a whole, so one outcome applies to every recipient in it.

A message naming a dynamic template (``template_id``) is sent as ``template_id`` plus
``dynamic_template_data`` in each personalization, with no subject or content: SendGrid
renders it. ``asm_group_id`` (the marketing unsubscribe group) goes on marketing messages
only; transactional ones carry no ``asm``. A message's ``unsubscribe_url`` becomes its
``List-Unsubscribe`` / ``List-Unsubscribe-Post`` headers: top-level ``headers`` for one
message, each personalization's own ``headers`` in a batch (one recipient's link never
reaches another).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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

from connectors.email.base import EmailConnector, EmailMessage, SendResult, unsubscribe_headers
from connectors.http_clients import ClientPerThread
from engine.errors import (
    DeliveryUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

MAX_CATEGORIES = 10
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10_000
"""Per personalization. SendGrid's pages say 10,000 in one place and 50,000 in another: the
smaller holds for both."""
_DEFAULT_RETRY_AFTER_S = 1.0
_GATEWAY_GAVE_UP = frozenset({502, 504})
"""Answers from a proxy that lost its upstream mid-request (Bad Gateway, Gateway Timeout):
like a read timeout, they say nothing about whether SendGrid accepted the message. A 500 or
503 comes from SendGrid itself refusing it, and is retried."""


@dataclass(frozen=True)
class Recipient:
    """One personalization of a batched send: who, the ids its events must carry, and
    (content sends only) the substitution tags SendGrid replaces in the shared subject and
    bodies for this recipient alone."""

    to: str
    custom_args: Mapping[str, str]
    template_data: Mapping[str, Any] = field(default_factory=dict)
    substitutions: Mapping[str, str] = field(default_factory=dict)
    unsubscribe_url: str = ""  # sent as this personalization's List-Unsubscribe headers


def substitutions_size(substitutions: Mapping[str, str]) -> int:
    """Bytes counted against ``MAX_SUBSTITUTION_BYTES`` (tags and values, UTF-8)."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())


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
        batch_size: int = MAX_PERSONALIZATIONS,
        substitutions: bool = True,
    ) -> None:
        if not 1 <= batch_size <= MAX_PERSONALIZATIONS:
            raise ValueError(f"batch_size must be 1..{MAX_PERSONALIZATIONS}, got {batch_size}")
        self.batch_size = batch_size
        # Whether a batch may carry per-recipient substitution tags (engine/substitutions.py):
        # personalised emails then share requests instead of one request per rendering.
        self.substitutions = substitutions
        self.url = f"{host.rstrip('/')}/v3/mail/send"
        self.sandbox = sandbox
        self.asm_group_id = asm_group_id
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        # Pooled clients kept alive across requests (a new client per request is as slow as
        # the sendgrid package), one per worker thread (see connectors/http_clients.py).
        self._clients = ClientPerThread(
            lambda: httpx.Client(timeout=httpx.Timeout(timeout_s)), shared=client
        )
        self._timeout = httpx.Timeout(timeout_s)

    @property
    def client(self) -> httpx.Client:
        """The calling thread's client (or the one passed in, shared)."""
        return self._clients.get()

    def payload(self, message: EmailMessage) -> dict[str, Any]:
        """The v3 JSON body for one message, as built by the ``sendgrid`` package."""
        if message.template_id:
            mail = Mail(from_email=message.sender, to_emails=message.to)
            mail.template_id = message.template_id
            mail.dynamic_template_data = dict(message.template_data)
        else:
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
        headers = message.headers_to_send
        if headers:
            mail.header = [Header(k, v) for k, v in headers.items()]
        if self.asm_group_id is not None and message.marketing:
            mail.asm = Asm(self.asm_group_id)
        if self.sandbox:
            settings = MailSettings()
            settings.sandbox_mode = SandBoxMode(True)
            mail.mail_settings = settings
        body: dict[str, Any] = mail.get()
        return body

    def batch_payload(
        self, message: EmailMessage, recipients: Sequence[Recipient]
    ) -> dict[str, Any]:
        """The v3 body sending ``message``'s content to every recipient, one personalization
        each. The shared part is built by the ``sendgrid`` package; the personalizations are
        plain dicts in the documented shape (building 1,000 helper objects buys nothing)."""
        if not recipients:
            raise PermanentConnectorError("a batched send needs at least one recipient")
        if len(recipients) > self.batch_size:
            raise PermanentConnectorError(
                f"{len(recipients)} recipients in one request; at most {self.batch_size}"
            )
        # The unsubscribe link differs per recipient: per personalization, never shared.
        body = self.payload(replace(message, unsubscribe_url=""))
        body.pop("custom_args", None)  # per personalization instead
        body["personalizations"] = [
            {"to": [{"email": r.to}], "custom_args": {k: str(v) for k, v in r.custom_args.items()}}
            for r in recipients
        ]
        for personalization, r in zip(body["personalizations"], recipients, strict=True):
            if r.unsubscribe_url:
                personalization["headers"] = unsubscribe_headers(r.unsubscribe_url)
            if message.template_id:
                if r.substitutions:
                    raise PermanentConnectorError(
                        "substitutions cannot be used with a dynamic template"
                    )
                personalization["dynamic_template_data"] = dict(r.template_data)
            elif r.substitutions:
                if substitutions_size(r.substitutions) > MAX_SUBSTITUTION_BYTES:
                    raise PermanentConnectorError(
                        f"substitutions for {r.to} exceed {MAX_SUBSTITUTION_BYTES} bytes"
                    )
                personalization["substitutions"] = {
                    str(k): str(v) for k, v in r.substitutions.items()
                }
        return body

    def send(self, message: EmailMessage) -> SendResult:
        if not message.has_content:
            raise PermanentConnectorError("an email needs a text or an html body, or a template")
        try:
            body = self.payload(message)
        except Exception as exc:  # the helper raises KeyError/ValueError on a malformed address
            raise PermanentConnectorError(f"cannot build a sendgrid payload: {exc!r}") from exc
        return self._post(body, f"jl_action_id={message.custom_args.get('jl_action_id', '?')}")

    def send_batch(self, message: EmailMessage, recipients: Sequence[Recipient]) -> SendResult:
        """Send ``message`` (its subject, bodies or template id, categories, headers; its
        ``to``, ``custom_args`` and ``template_data`` are ignored) to every recipient in one
        request, each with its own ``custom_args`` and ``template_data``."""
        if not message.has_content:
            raise PermanentConnectorError("an email needs a text or an html body, or a template")
        try:
            body = self.batch_payload(message, recipients)
        except PermanentConnectorError:
            raise
        except Exception as exc:  # the helper raises KeyError/ValueError on a malformed address
            raise PermanentConnectorError(f"cannot build a sendgrid payload: {exc!r}") from exc
        ids = [r.custom_args.get("jl_action_id", "?") for r in recipients]
        return self._post(body, f"the {len(ids)} actions jl_action_id={ids[0]}..{ids[-1]}")

    def _post(self, body: dict[str, Any], what: str) -> SendResult:
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
                f"reconcile {what} from delivery events before sending again"
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryUnknownError(f"sendgrid request failed mid-flight: {exc!r}") from exc
        if response.status_code in (200, 202):
            return SendResult(provider_id=response.headers.get("X-Message-Id", ""))
        raise _error_for(response)

    def close(self) -> None:
        self._clients.close()


def _error_for(response: httpx.Response) -> Exception:
    status = response.status_code
    detail = _describe_errors(response)
    if status == 429:
        return TransientConnectorError(
            f"sendgrid rate limit (429): {detail}",
            retry_after=_retry_after(response.headers.get("X-RateLimit-Reset")),
        )
    if status in _GATEWAY_GAVE_UP:
        # A proxy in front of SendGrid answered for it: the request may have reached SendGrid
        # and been accepted. With no idempotency key, sending again may send it twice.
        return DeliveryUnknownError(
            f"sendgrid's gateway answered {status} ({detail}); the message may have been "
            "accepted: reconcile it from delivery events before sending again"
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
