"""URLs fit for a terminal or a log: the password of a database or broker URL never shown
(``redact_url``: the CLI's messages, the broker's refusal of a URL it cannot use), and only
the origin of an outgoing webhook's URL, which may carry its credential anywhere
(``url_origin``)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

UNPARSABLE = "<a URL that cannot be parsed: not shown>"


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: fit for a terminal or a log.
    Parsed as SQLAlchemy parses it (a password may hold an unescaped ``/``, ``?`` or ``@``,
    which ``urlsplit`` would misread); a URL neither can parse is not shown at all."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None:
        if parsed.host and "@" in parsed.host:  # an unescaped @ in the password
            return UNPARSABLE
        return parsed.render_as_string(hide_password=True)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return UNPARSABLE
    if password is None:
        return url if "@" not in url else UNPARSABLE
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, with ``/…`` when it goes on: fit for an error
    message that is logged and stored. A webhook URL often carries its credential (a
    password, a ``?token=``, or a secret path as Slack's and Teams' incoming webhooks do), so
    nothing after the host is shown; a URL that cannot be parsed is not shown at all."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return UNPARSABLE
    if not parts.scheme or not host:
        return UNPARSABLE
    shown_host = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme}://{shown_host}" + (f":{port}" if port is not None else "")
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return origin + ("/…" if rest else "")
