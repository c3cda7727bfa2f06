"""URLs fit for a terminal or a log: the password of a database or broker URL never shown.
Used by the CLI's messages and by the broker's refusal of a URL it cannot use."""

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
