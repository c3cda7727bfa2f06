"""Signature checks for inbound webhooks, as pure functions of the request's parts.

Every ``verify_*`` function returns ``None`` when the request is authentic and fresh, and
raises :class:`SignatureError` otherwise; its ``reason`` tells an HTTP layer what to answer::

    JourneylineError
    └── SignatureError     reason: "missing" | "malformed" | "mismatch" | "stale"

Misconfiguration (an empty secret, a public key that does not parse) is not the caller's
request's fault and raises :class:`engine.errors.ConfigurationError` instead, so it is never
answered as a 401 and silently ignored.

The signature is checked before the timestamp's freshness: ``"stale"`` therefore always means
an authentic request replayed or delayed, never a forgery, which is what an operator reading
the logs needs to know.

Schemes
-------
SendGrid Event Webhook
    ``X-Twilio-Email-Event-Webhook-Signature``: base64 DER ECDSA P-256 / SHA-256 signature of
    ``timestamp + body``; ``X-Twilio-Email-Event-Webhook-Timestamp``: unix seconds. Verified by
    the ``sendgrid`` package's own helper; the freshness window is ours (the helper has none).

HubSpot
    v3 (preferred when present): ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256(client
    secret, ``method + URI + body + timestamp``), ``X-HubSpot-Request-Timestamp`` in
    milliseconds. v1 / v2 (``X-HubSpot-Signature-Version``, ``X-HubSpot-Signature``): hex
    SHA-256 of ``secret + body`` / ``secret + method + URI + body``. v1 and v2 carry no
    timestamp, so they cannot be protected against replay: prefer v3.

Journeyline generic HMAC (other CRMs, and our own outgoing webhooks)
    One header, ``X-Journeyline-Signature: t=<unix seconds>,v1=<hex>``, where ``<hex>`` is
    the lowercase hex HMAC-SHA256, keyed with the shared secret (UTF-8), of the bytes
    ``b"<t>." + body``. Several ``v1=`` entries may be given (a sender rotating its secret
    signs with both); any match passes. Unknown keys are ignored, so a future ``v2=`` can be
    added without breaking receivers. The timestamp may instead come from a separate header
    (``timestamp=`` argument); if both are given they must agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sendgrid.helpers.eventwebhook import EventWebhook

from engine.errors import ConfigurationError, JourneylineError

__all__ = [
    "HUBSPOT_SIGNATURE_HEADER",
    "HUBSPOT_SIGNATURE_V3_HEADER",
    "HUBSPOT_SIGNATURE_VERSION_HEADER",
    "HUBSPOT_TIMESTAMP_HEADER",
    "JOURNEYLINE_SIGNATURE_HEADER",
    "SENDGRID_SIGNATURE_HEADER",
    "SENDGRID_TIMESTAMP_HEADER",
    "SignatureError",
    "SignatureFailure",
    "generate_sendgrid_key_pair",
    "sign_hmac",
    "sign_hubspot_v3",
    "sign_sendgrid",
    "verify_hmac",
    "verify_hubspot",
    "verify_sendgrid",
]

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
HUBSPOT_SIGNATURE_V3_HEADER = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
HUBSPOT_SIGNATURE_HEADER = "X-HubSpot-Signature"
HUBSPOT_SIGNATURE_VERSION_HEADER = "X-HubSpot-Signature-Version"
JOURNEYLINE_SIGNATURE_HEADER = "X-Journeyline-Signature"

DEFAULT_TOLERANCE = timedelta(minutes=5)

SignatureFailure = Literal["missing", "malformed", "mismatch", "stale"]


class SignatureError(JourneylineError):
    """An inbound webhook failed authentication.

    ``reason`` is one of ``"missing"`` (no signature or timestamp), ``"malformed"`` (present
    but unparseable), ``"mismatch"`` (well formed, wrong) and ``"stale"`` (authentic, but its
    timestamp is outside the tolerance window, in either direction). ``scheme`` names the
    signature scheme that was checked.
    """

    def __init__(self, message: str, *, reason: SignatureFailure, scheme: str) -> None:
        super().__init__(message)
        self.reason: SignatureFailure = reason
        self.scheme = scheme


# --- shared helpers ------------------------------------------------------------------------


def _require_aware(now: datetime) -> None:
    # A naive datetime's .timestamp() is read as local time: a silent offset of hours.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _parse_int(value: str, *, what: str, scheme: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise SignatureError(
            f"{what} is not an unsigned integer", reason="malformed", scheme=scheme
        )
    return int(text)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_FAR = timedelta(days=366)
"""A timestamp further than this from now is called out of range, not counted in seconds."""


def _check_fresh(signed_at_ms: int, *, now: datetime, tolerance: timedelta, scheme: str) -> None:
    _require_aware(now)
    # Integers throughout: a float would print 99999999998203527168 s for 10**20 - now.
    skew_ms = (now - _EPOCH) // _MILLISECOND - signed_at_ms
    tolerance_s = tolerance // timedelta(seconds=1)
    if abs(skew_ms) <= tolerance // _MILLISECOND:
        return
    direction = "old" if skew_ms > 0 else "in the future"
    if abs(skew_ms) > _FAR // _MILLISECOND:
        message = f"timestamp is out of range: over a year {direction}"
    else:
        message = f"timestamp is {abs(skew_ms) // 1000} s {direction}"
    raise SignatureError(f"{message} (tolerance {tolerance_s} s)", reason="stale", scheme=scheme)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _b64decode_strict(value: str, *, what: str, scheme: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(
            f"{what} is not valid base64", reason="malformed", scheme=scheme
        ) from exc


def _hex_digest_bytes(value: str, *, what: str, scheme: str) -> bytes:
    text = value.strip()
    if len(text) != 64:
        raise SignatureError(
            f"{what} is not a SHA-256 hex digest", reason="malformed", scheme=scheme
        )
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise SignatureError(
            f"{what} is not a SHA-256 hex digest", reason="malformed", scheme=scheme
        ) from exc


# --- SendGrid ------------------------------------------------------------------------------

_SENDGRID = "sendgrid"


@lru_cache(maxsize=16)
def _sendgrid_verifier(public_key_b64: str) -> EventWebhook:
    # Parsing the key costs more than verifying; webhooks arrive in bursts with the same key.
    try:
        verifier = EventWebhook(public_key_b64.strip())
    except ValueError as exc:
        raise ConfigurationError(
            "the SendGrid Event Webhook verification key is not a base64 public key"
        ) from exc
    if not isinstance(verifier.public_key, ec.EllipticCurvePublicKey):
        raise ConfigurationError("the SendGrid Event Webhook verification key is not an EC key")
    return verifier


def verify_sendgrid(
    *,
    public_key_b64: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check a SendGrid Event Webhook request; raise :class:`SignatureError` if it fails.

    ``public_key_b64`` is the verification key shown in SendGrid's Mail Settings (base64 DER).
    ``body`` must be the raw request body exactly as received: re-serialised JSON will not
    verify. ``signature`` and ``timestamp`` are the values of
    ``X-Twilio-Email-Event-Webhook-Signature`` and ``-Timestamp`` (unix seconds).
    """
    if not public_key_b64 or not public_key_b64.strip():
        raise ConfigurationError("no SendGrid Event Webhook verification key is configured")
    verifier = _sendgrid_verifier(public_key_b64)
    if not signature or not signature.strip():
        raise SignatureError("no SendGrid signature header", reason="missing", scheme=_SENDGRID)
    if not timestamp or not timestamp.strip():
        raise SignatureError("no SendGrid timestamp header", reason="missing", scheme=_SENDGRID)
    signed_at = _parse_int(timestamp, what="SendGrid timestamp", scheme=_SENDGRID)
    # The helper decodes leniently (it drops stray characters); refuse junk up front so that
    # "malformed" means malformed, then let the helper do the verification itself.
    der = _b64decode_strict(signature, what="SendGrid signature", scheme=_SENDGRID)
    try:
        decode_dss_signature(der)
    except ValueError as exc:
        raise SignatureError(
            "SendGrid signature is not a DER ECDSA signature", reason="malformed", scheme=_SENDGRID
        ) from exc
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # SendGrid posts JSON, always UTF-8; the helper only takes str.
        raise SignatureError(
            "SendGrid body is not UTF-8", reason="malformed", scheme=_SENDGRID
        ) from exc
    try:
        valid = verifier.verify_signature(payload, signature.strip(), timestamp)
    except ValueError as exc:
        raise SignatureError(
            "SendGrid signature is not valid base64", reason="malformed", scheme=_SENDGRID
        ) from exc
    if not valid:
        raise SignatureError(
            "SendGrid signature does not match the body", reason="mismatch", scheme=_SENDGRID
        )
    _check_fresh(signed_at * 1000, now=now, tolerance=tolerance, scheme=_SENDGRID)


def generate_sendgrid_key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh P-256 key pair for fakes and tests: the private key, and the public key in
    the base64 DER form SendGrid shows (what :func:`verify_sendgrid` takes)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, base64.b64encode(der).decode("ascii")


def sign_sendgrid(
    private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | str
) -> str:
    """The ``X-Twilio-Email-Event-Webhook-Signature`` SendGrid would send for ``body``."""
    der = private_key.sign(str(timestamp).encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")


# --- HubSpot -------------------------------------------------------------------------------

# UNCONFIRMED: HubSpot's v3 instructions are reported to ask receivers to decode a few
# percent-escapes in the URI before signing. We accept the URI as given or with these decoded;
# trying two candidates does not weaken a 256-bit HMAC.
_HUBSPOT_URI_DECODES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def _hubspot_uri_candidates(uri: str) -> list[str]:
    decoded = uri
    for escape, char in _HUBSPOT_URI_DECODES.items():
        decoded = decoded.replace(escape, char).replace(escape.lower(), char)
    return [uri] if decoded == uri else [uri, decoded]


def _hubspot_v3_digest(
    client_secret: str, method: str, uri: str, body: bytes, timestamp: str
) -> bytes:
    message = method.encode("utf-8") + uri.encode("utf-8") + body + timestamp.encode("utf-8")
    return hmac.new(client_secret.encode("utf-8"), message, hashlib.sha256).digest()


def sign_hubspot_v3(
    *, client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: int
) -> dict[str, str]:
    """The v3 signature headers HubSpot would send for this request."""
    digest = _hubspot_v3_digest(client_secret, method, uri, body, str(timestamp_ms))
    return {
        HUBSPOT_SIGNATURE_V3_HEADER: base64.b64encode(digest).decode("ascii"),
        HUBSPOT_TIMESTAMP_HEADER: str(timestamp_ms),
    }


def verify_hubspot(
    *,
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    accept_v1_v2: bool = False,
) -> None:
    """Check a HubSpot webhook request; raise :class:`SignatureError` if it fails.

    ``method`` and ``uri`` must be what HubSpot requested: the method in capitals and the
    full URI with scheme, host, path and query string in their original order. ``headers``
    are looked up case-insensitively. v3 is used whenever its header is present (even if
    v1/v2 headers are also sent). v1 and v2 sign no time, so a request signed with them
    can be replayed at any time later (with its v3 headers taken off): they are refused
    unless ``accept_v1_v2`` (for senders that have nothing else), and then
    ``X-HubSpot-Signature-Version`` picks v1 or v2.
    """
    if not client_secret:
        raise ConfigurationError("no HubSpot client secret is configured")
    v3 = _header(headers, HUBSPOT_SIGNATURE_V3_HEADER)
    if v3 is not None and v3.strip():
        _verify_hubspot_v3(client_secret, method, uri, body, v3, headers, now, tolerance)
        return
    signature = _header(headers, HUBSPOT_SIGNATURE_HEADER)
    if not accept_v1_v2:
        why = "only a v1/v2 signature, which signs no time" if signature else "no signature"
        raise SignatureError(
            f"no HubSpot signature v3 ({HUBSPOT_SIGNATURE_V3_HEADER}): {why}; v1 and v2 are "
            "accepted only with JOURNEYLINE_HUBSPOT_ACCEPT_V1_V2=true",
            reason="missing",
            scheme="hubspot",
        )
    if signature is None or not signature.strip():
        raise SignatureError("no HubSpot signature header", reason="missing", scheme="hubspot")
    version = (_header(headers, HUBSPOT_SIGNATURE_VERSION_HEADER) or "").strip().lower()
    if version == "v1":
        source = client_secret.encode("utf-8") + body
    elif version == "v2":
        source = (client_secret + method + uri).encode("utf-8") + body
    else:
        raise SignatureError(
            f"unknown HubSpot signature version {version or '(none)'!r}",
            reason="malformed",
            scheme="hubspot",
        )
    scheme = f"hubspot-{version}"
    received = _hex_digest_bytes(signature, what="HubSpot signature", scheme=scheme)
    if not hmac.compare_digest(received, hashlib.sha256(source).digest()):
        raise SignatureError("HubSpot signature does not match", reason="mismatch", scheme=scheme)


def _verify_hubspot_v3(
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str,
    headers: Mapping[str, str],
    now: datetime,
    tolerance: timedelta,
) -> None:
    scheme = "hubspot-v3"
    timestamp = _header(headers, HUBSPOT_TIMESTAMP_HEADER)
    if timestamp is None or not timestamp.strip():
        raise SignatureError("no HubSpot request timestamp", reason="missing", scheme=scheme)
    timestamp = timestamp.strip()
    signed_at_ms = _parse_int(timestamp, what="HubSpot timestamp", scheme=scheme)
    # Base64 never contains spaces; one appears when a proxy or framework form-decoded the
    # header and turned "+" into " ". Undo that rather than refuse an authentic request.
    received = _b64decode_strict(
        signature.strip().replace(" ", "+"), what="HubSpot v3 signature", scheme=scheme
    )
    if len(received) != hashlib.sha256().digest_size:
        raise SignatureError(
            "HubSpot v3 signature is not a SHA-256 HMAC", reason="malformed", scheme=scheme
        )
    matched = False
    for candidate in _hubspot_uri_candidates(uri):
        expected = _hubspot_v3_digest(client_secret, method, candidate, body, timestamp)
        # No early exit: every candidate is compared, so timing says nothing about which.
        matched |= hmac.compare_digest(received, expected)
    if not matched:
        raise SignatureError(
            "HubSpot v3 signature does not match", reason="mismatch", scheme=scheme
        )
    _check_fresh(signed_at_ms, now=now, tolerance=tolerance, scheme=scheme)


# --- Journeyline generic HMAC --------------------------------------------------------------

_HMAC = "hmac"


def _hmac_hex(secret: str, body: bytes, timestamp: str) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_hmac(*, secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Journeyline-Signature`` header value for ``body`` sent at ``timestamp``
    (unix seconds): ``t=<timestamp>,v1=<hex>``."""
    if not secret:
        raise ConfigurationError("no webhook signing secret is configured")
    return f"t={timestamp},v1={_hmac_hex(secret, body, str(timestamp))}"


def verify_hmac(
    *,
    secret: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None = None,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check a request signed with the generic ``t=<unix>,v1=<hex>`` scheme.

    ``signature`` is the ``X-Journeyline-Signature`` header value. ``timestamp`` is only for
    senders that put the timestamp in a header of its own; when the signature also carries
    ``t=``, the two must agree.
    """
    if not secret:
        raise ConfigurationError("no webhook signing secret is configured")
    if not signature or not signature.strip():
        raise SignatureError("no signature header", reason="missing", scheme=_HMAC)
    header_t: str | None = None
    candidates: list[str] = []
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise SignatureError(
                "signature header is not a list of key=value", reason="malformed", scheme=_HMAC
            )
        if key == "t":
            if header_t is not None:
                raise SignatureError("two t= in signature", reason="malformed", scheme=_HMAC)
            header_t = value.strip()
        elif key == "v1":
            candidates.append(value.strip())
    if not candidates:
        raise SignatureError("no v1= in signature header", reason="malformed", scheme=_HMAC)
    separate_t = timestamp.strip() if timestamp and timestamp.strip() else None
    if header_t is not None and separate_t is not None and header_t != separate_t:
        raise SignatureError(
            "timestamp header disagrees with the signature's t=", reason="malformed", scheme=_HMAC
        )
    signed_t = header_t if header_t is not None else separate_t
    if signed_t is None:
        raise SignatureError("no signature timestamp", reason="missing", scheme=_HMAC)
    signed_at = _parse_int(signed_t, what="signature timestamp", scheme=_HMAC)
    received = [_hex_digest_bytes(c, what="v1 signature", scheme=_HMAC) for c in candidates]
    expected = bytes.fromhex(_hmac_hex(secret, body, signed_t))
    matched = False
    for digest in received:
        matched |= hmac.compare_digest(digest, expected)
    if not matched:
        raise SignatureError("signature does not match", reason="mismatch", scheme=_HMAC)
    _check_fresh(signed_at * 1000, now=now, tolerance=tolerance, scheme=_HMAC)
