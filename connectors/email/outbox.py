"""The embedded default: every email becomes an ``.eml`` file in a folder.

Files are named from the recipient and a hash of the idempotency key and created atomically
(written to a temporary name, then hard-linked into place), so sending the same message
twice leaves one file: ``dedupes`` is True.

A message naming a provider template (a SendGrid dynamic template) cannot be rendered here:
its file says so in a plain-text body, with the template id and the JSON data that would be
sent, and carries the id in an ``X-Journeyline-SendGrid-Template`` header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from connectors.email.base import EmailConnector, EmailMessage, SendResult
from engine.errors import PermanentConnectorError, TransientConnectorError


def _header(value: str) -> Any:
    # RFC 2047-encode only what needs it; plain ASCII stays readable in the file.
    # Any: a compat32 message takes a Header wherever it takes a str, which typeshed's
    # ``Message.__setitem__`` (str only) does not express.
    return value if value.isascii() else Header(value, "utf-8")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


class OutboxEmailConnector(EmailConnector):
    name = "outbox"
    dedupes = True

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, message: EmailMessage) -> Path:
        return self.path_of(message.to, message.idempotency_key)

    def path_of(self, to: str, idempotency_key: str) -> Path:
        """The file of the email to ``to`` with this key (an erasure removes hers)."""
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        return self.directory / f"{_slug(to)}-{digest}.eml"

    def send(self, message: EmailMessage) -> SendResult:
        path = self.path_for(message)
        if path.exists():
            return SendResult(provider_id=path.name)
        if not message.has_content:
            raise PermanentConnectorError("an email needs a text or an html body, or a template")
        # The compat32 MIME classes build a message ~4x faster than email.message.EmailMessage,
        # which matters when the demo writes thousands of files.
        parts: list[MIMENonMultipart] = []
        if message.template_id:
            parts.append(MIMEText(_template_note(message), "plain", "utf-8"))
        if message.text:
            parts.append(MIMEText(message.text, "plain", "utf-8"))
        if message.html:
            parts.append(MIMEText(message.html, "html", "utf-8"))
        mime: MIMENonMultipart | MIMEMultipart
        if len(parts) == 1:
            mime = parts[0]
        else:
            mime = MIMEMultipart("alternative")
            for part in parts:
                mime.attach(part)
        mime["From"] = _header(message.sender)
        mime["To"] = _header(message.to)
        subject = message.subject or f"(SendGrid dynamic template {message.template_id})"
        mime["Subject"] = _header(subject)
        mime["Date"] = format_datetime(message.sent_at)
        mime["Message-ID"] = make_msgid(domain="journeyline.local")
        mime["X-Journeyline-Idempotency-Key"] = message.idempotency_key
        if message.template_id:
            mime["X-Journeyline-SendGrid-Template"] = message.template_id
        if message.categories:
            mime["X-Journeyline-Categories"] = ", ".join(message.categories)
        for key, value in message.custom_args.items():
            mime[f"X-Journeyline-Arg-{key}"] = _header(value)
        for key, value in message.headers_to_send.items():
            mime[key] = _header(value)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(mime.as_bytes())
                # A concurrent or earlier send of the same message may have won the race.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise TransientConnectorError(
                f"cannot write to outbox {self.directory}: {exc}"
            ) from exc
        return SendResult(provider_id=path.name)


def _template_note(message: EmailMessage) -> str:
    data = json.dumps(dict(message.template_data), indent=2, sort_keys=True, default=str)
    return (
        f"Not rendered: SendGrid renders dynamic template {message.template_id} itself.\n"
        "This message would be sent with that template_id and this dynamic_template_data:\n\n"
        f"{data}\n"
    )
