"""A local fake of SendGrid's v3 Mail Send API, served over real HTTP on 127.0.0.1.

Point ``SendGridEmailConnector(host=fake.url)`` at it to test workflows without the network::

    with FakeSendGrid(api_key="SG.test") as fake:
        connector = SendGridEmailConnector(api_key="SG.test", host=fake.url)
        fake.fail_next(429, headers={"X-RateLimit-Reset": "1700000000"})
        ...
        assert [m.to for m in fake.sent_messages()] == ["ada@example.com"]

It checks the Bearer key, validates payloads against the documented limits (answering 400
with SendGrid's ``{"errors": [...]}`` body), answers 202 with an ``X-Message-Id``, 200 in
sandbox mode, and can be scripted to fail (``fail_next``) or stall (``delay_next``). A
failure can come after the message was accepted (``fail_next(504, after_accepting=True)``:
a gateway that gave up waiting for SendGrid's answer), as happens in production: the
message goes out all the same, and a client that sends it again sends it twice.

It also plays SendGrid's signed Event Webhook: ``event(kind, message)`` builds an event
about a message it accepted (``custom_args`` echoed as top-level keys, as SendGrid does) and
``post_events(url, events)`` POSTs a batch signed with the fake's own P-256 key, retrying a
non-2xx answer and, if asked, delivering the same batch again (both happen in production).
Configure the receiver with ``webhook_public_key``::

    settings.sendgrid_webhook_public_key = fake.webhook_public_key
    (message,) = fake.sent_messages()
    fake.post_events(url, [fake.event("delivered", message), fake.event("open", message)])

Retries are immediate here (SendGrid spaces them over 24 hours).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from connectors.webhooks.signatures import (
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    generate_sendgrid_key_pair,
    sign_sendgrid,
)

MAX_BYTES = 30 * 1024 * 1024
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTION_BYTES = 10_000
MAX_SEND_AHEAD = timedelta(hours=72)
_ACCEPTED = "x-fake-accepted-message-id"  # never sent: see _Handler._handle

_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "The JSON payload you have included in your request is too large.",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    status: int
    message_id: str | None
    client_port: int  # the same port across requests means one kept-alive connection
    accepted: bool = False  # taken for delivery (a 202, or a failure after accepting)


@dataclass(frozen=True)
class SentMessage:
    """What one recipient got: the subject and bodies after their substitutions."""

    to: str
    subject: str
    custom_args: Mapping[str, str]
    categories: tuple[str, ...]
    message_id: str
    body: Mapping[str, Any] = field(repr=False, default_factory=dict)
    text: str = field(repr=False, default="")
    html: str = field(repr=False, default="")


@dataclass
class _Script:
    status: int
    headers: dict[str, str]
    body: Any
    after_accepting: bool = False


class FakeSendGrid:
    """An in-thread SendGrid; use as a context manager (or call ``start`` / ``close``)."""

    def __init__(self, *, api_key: str = "SG.fake-key") -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Script] = deque()
        self._delays: deque[float] = deque()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # webhook_public_key: the Event Webhook verification key, base64 DER as SendGrid shows it
        self._signing_key, self.webhook_public_key = generate_sendgrid_key_pair()
        self._event_numbers = itertools.count(1)
        self._deliveries: list[httpx.Response] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, host: str = "127.0.0.1", port: int = 0) -> FakeSendGrid:
        """Serve on ``host:port`` (port 0: any free port; read it back from ``url``)."""
        server = _Server((host, port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeSendGrid is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # wake handler threads parked on kept-alive connections
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        assert self._thread is not None
        self._thread.join()
        self._server = None

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        after_accepting: bool = False,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (a 429 gets rate-limit headers).
        With ``after_accepting`` a valid request is accepted for delivery first (it is in
        ``sent_messages``), and only the answer is the failure."""
        script_headers = dict(headers or {})
        if status == 429:
            script_headers.setdefault("X-RateLimit-Limit", "600")
            script_headers.setdefault("X-RateLimit-Remaining", "0")
            script_headers.setdefault("X-RateLimit-Reset", str(int(time.time()) + 1))
        if body is None:
            body = _errors(_STATUS_MESSAGES.get(status, "error"), None)
        with self._lock:
            self._failures.extend(
                _Script(status, script_headers, body, after_accepting) for _ in range(count)
            )

    def delay_next(self, seconds: float) -> None:
        """Stall the next request ``seconds`` before answering it (it is still processed)."""
        with self._lock:
            self._delays.append(seconds)

    # -- inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def sent_messages(self) -> list[SentMessage]:
        """One record per recipient of every accepted, non-sandbox request (answered 202, or
        failed after accepting)."""
        sent: list[SentMessage] = []
        for request in self.requests:
            if not request.accepted or not isinstance(request.body, dict):
                continue
            body = request.body
            content = {c.get("type"): c.get("value", "") for c in body.get("content", [])}
            for personalization in body["personalizations"]:
                args = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}
                subs = personalization.get("substitutions") or {}
                subject = personalization.get("subject", body.get("subject", ""))
                for recipient in personalization["to"]:
                    sent.append(
                        SentMessage(
                            to=recipient["email"],
                            subject=apply_substitutions(subject, subs),
                            custom_args=args,
                            categories=tuple(body.get("categories", ())),
                            message_id=request.message_id or "",
                            body=body,
                            text=apply_substitutions(content.get("text/plain", ""), subs),
                            html=apply_substitutions(content.get("text/html", ""), subs),
                        )
                    )
        return sent

    # -- the signed Event Webhook ----------------------------------------------------------

    def event(
        self, kind: str, message: SentMessage, *, timestamp: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        """One Event Webhook event about ``message`` (from ``sent_messages``): ``kind`` is
        delivered, open, click, bounce, dropped, spamreport, unsubscribe...; ``extra`` adds
        or overrides fields (``url=`` for a click, ``type="blocked"`` for a bounce)."""
        number = next(self._event_numbers)
        event: dict[str, Any] = {
            "email": message.to,
            "timestamp": timestamp if timestamp is not None else int(time.time()),
            "event": kind,
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{message.message_id}.filter0001.{number}.0",
            "category": list(message.categories),
            **message.custom_args,
        }
        if kind == "bounce":
            event.update(type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
        elif kind == "dropped":
            event.update(reason="Bounced Address")
        event.update(extra)
        return event

    def post_events(
        self,
        url: str,
        events: list[dict[str, Any]],
        *,
        timestamp: int | None = None,
        max_attempts: int = 1,
        duplicates: int = 0,
        client: httpx.Client | None = None,
        timeout_s: float = 5.0,
    ) -> httpx.Response:
        """POST ``events`` as one signed batch to ``url``; return the last answer.

        A non-2xx answer is retried, up to ``max_attempts`` POSTs in all; after a 2xx the
        same signed request is sent ``duplicates`` more times. ``timestamp`` (unix seconds,
        default now) is what is signed: pass an old one to test the receiver's window.
        """
        body = json.dumps(events, separators=(",", ":")).encode("utf-8")
        stamp = timestamp if timestamp is not None else int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            SENDGRID_SIGNATURE_HEADER: sign_sendgrid(self._signing_key, body, stamp),
            SENDGRID_TIMESTAMP_HEADER: str(stamp),
        }
        own = client is None
        http = client or httpx.Client(timeout=timeout_s)
        try:
            response = http.post(url, content=body, headers=headers)
            self._deliveries.append(response)
            for _ in range(max_attempts - 1):
                if response.is_success:
                    break
                response = http.post(url, content=body, headers=headers)
                self._deliveries.append(response)
            if response.is_success:
                for _ in range(duplicates):
                    response = http.post(url, content=body, headers=headers)
                    self._deliveries.append(response)
        finally:
            if own:
                http.close()
        return response

    @property
    def deliveries(self) -> list[httpx.Response]:
        """Every Event Webhook POST's answer, in order."""
        return list(self._deliveries)

    # -- called from handler threads ---------------------------------------------------------

    def _respond(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes | None
    ) -> tuple[int, dict[str, str], Any, Any]:
        """(status, headers, response body, parsed request body) for one request. A failure
        after accepting names the accepted message in the ``_ACCEPTED`` header, which the
        handler keeps to itself."""
        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            self._stopping.wait(delay)
        if path.split("?")[0] != "/v3/mail/send":
            return 404, {}, _errors("Not Found", None), None
        if method != "POST":
            return 405, {}, _errors("Method Not Allowed", None), None
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _errors(_STATUS_MESSAGES[401], None), None
        if raw is None:
            return 413, {}, _errors(_STATUS_MESSAGES[413], None), None
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {}, _errors("Bad Request", None), None
        with self._lock:
            script = self._failures.popleft() if self._failures else None
        problems = validate_mail(body)
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True
        if script is not None:
            answer_headers = dict(script.headers)
            if script.after_accepting and not problems and not sandbox:
                answer_headers[_ACCEPTED] = secrets.token_urlsafe(16)
            return script.status, answer_headers, script.body, body
        if problems:
            return 400, {}, {"errors": problems}, body
        if sandbox:
            return 200, {}, None, body
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)}, None, body

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


def _errors(message: str, field: str | None, help_: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": help_}]}


def _problem(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": None}


def validate_mail(body: Any) -> list[dict[str, Any]]:
    """Every problem SendGrid would report for this v3 payload, per the documented limits."""
    if not isinstance(body, dict):
        return [_problem("The request body must be a JSON object.", None)]
    problems: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(_problem("The personalizations field is required.", "personalizations"))
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(_problem("Too many personalizations (at most 1000).", "personalizations"))
    seen: set[str] = set()
    recipients = 0
    has_template = bool(body.get("template_id"))
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(p, dict) or not p.get("to"):
            problems.append(_problem("The to array is required.", f"{where}.to"))
            continue
        for kind in ("to", "cc", "bcc"):
            for address in p.get(kind, []):
                email = str(address.get("email", "")).lower() if isinstance(address, dict) else ""
                recipients += 1
                if "@" not in email:
                    problems.append(_problem("Invalid email address.", f"{where}.{kind}"))
                elif email in seen:
                    problems.append(
                        _problem("Each email address must be unique.", f"{where}.{kind}")
                    )
                seen.add(email)
        if not (has_template or body.get("subject") or p.get("subject")):
            problems.append(_problem("The subject is required.", "subject"))
        problems += _check_custom_args(p.get("custom_args"), f"{where}.custom_args")
        problems += _check_substitutions(p.get("substitutions"), has_template, where)
        if "dynamic_template_data" in p and not isinstance(p["dynamic_template_data"], dict):
            problems.append(
                _problem(
                    "dynamic_template_data must be an object.", f"{where}.dynamic_template_data"
                )
            )
        problems += _check_send_at(p.get("send_at"), f"{where}.send_at")
    if recipients > MAX_RECIPIENTS:
        problems.append(_problem("Too many recipients (at most 1000).", "personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        problems.append(_problem("The from email is required.", "from.email"))
    content = body.get("content")
    if not has_template:
        if not isinstance(content, list) or not content:
            problems.append(_problem("The content field is required.", "content"))
        elif any(not isinstance(c, dict) or not c.get("value") for c in content):
            problems.append(_problem("Content values must be non-empty strings.", "content"))
    categories = body.get("categories", [])
    if not isinstance(categories, list) or len(categories) > MAX_CATEGORIES:
        problems.append(_problem("Too many categories (at most 10).", "categories"))
    elif any(not isinstance(c, str) for c in categories):
        problems.append(_problem("Categories must be strings.", "categories"))
    problems += _check_custom_args(body.get("custom_args"), "custom_args")
    problems += _check_send_at(body.get("send_at"), "send_at")
    return problems


def _check_custom_args(args: Any, where: str) -> list[dict[str, Any]]:
    if args is None:
        return []
    if not isinstance(args, dict):
        return [_problem("custom_args must be an object.", where)]
    if any(not isinstance(v, str) for v in args.values()):
        return [_problem("custom_args values must be strings.", where)]
    if len(json.dumps(args).encode()) >= MAX_CUSTOM_ARGS_BYTES:
        return [_problem("custom_args must be under 10,000 bytes.", where)]
    return []


def _check_substitutions(subs: Any, has_template: bool, where: str) -> list[dict[str, Any]]:
    if subs is None:
        return []
    where = f"{where}.substitutions"
    if has_template:
        return [_problem("Substitutions may not be used with dynamic templating.", where)]
    if not isinstance(subs, dict) or any(not isinstance(v, str) for v in subs.values()):
        return [_problem("substitutions must be an object of strings.", where)]
    if sum(len(k.encode()) + len(v.encode()) for k, v in subs.items()) > MAX_SUBSTITUTION_BYTES:
        return [_problem("substitutions must be at most 10,000 bytes.", where)]
    return []


def apply_substitutions(text: str, substitutions: Mapping[str, str]) -> str:
    """``text`` with every tag replaced by its value in one pass, longest tag first (as
    SendGrid does for a personalization's ``substitutions``)."""
    if not substitutions:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(substitutions, key=len)[::-1]))
    return pattern.sub(lambda m: substitutions[m.group(0)], text)


def _check_send_at(send_at: Any, where: str) -> list[dict[str, Any]]:
    if send_at is None:
        return []
    limit = datetime.now(UTC) + MAX_SEND_AHEAD
    if not isinstance(send_at, int) or datetime.fromtimestamp(send_at, UTC) > limit:
        return [_problem("send_at must be a unix time at most 72 hours ahead.", where)]
    return []


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins handler threads: no stray sockets
    fake: FakeSendGrid

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the script, not a server bug.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw: bytes | None
        if length > MAX_BYTES:
            raw = None
            self.close_connection = True  # do not read 30 MB just to refuse it
        else:
            raw = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, answer, body = fake._respond(method, self.path, headers, raw)
        accepted_id = extra.pop(_ACCEPTED, None)
        if status == 202:
            accepted_id = extra.get("X-Message-Id")
        payload = b"" if answer is None else json.dumps(answer).encode()
        fake._record(
            RecordedRequest(
                method=method,
                path=self.path,
                headers=headers,
                body=body,
                status=status,
                message_id=accepted_id,
                client_port=self.client_address[1],
                accepted=accepted_id is not None,
            )
        )
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
