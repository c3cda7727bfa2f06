"""Inbound webhook signatures and dedupe keys: each scheme accepts what its provider signs and
refuses, with the right reason, what it did not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.webhooks import (
    SignatureError,
    generate_sendgrid_key_pair,
    hubspot_event_key,
    sendgrid_event_key,
    sign_hmac,
    sign_hubspot_v3,
    sign_sendgrid,
    verify_hmac,
    verify_hubspot,
    verify_sendgrid,
)
from engine.errors import ConfigurationError, JourneylineError, ValidationError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
NOW_MS = NOW_S * 1000
BODY = json.dumps(
    [{"email": "ada@example.com", "event": "open", "sg_event_id": "e1", "note": "café ✓"}],
    ensure_ascii=False,
).encode("utf-8")


def reason_of(excinfo: pytest.ExceptionInfo[SignatureError]) -> str:
    return excinfo.value.reason


# --- SendGrid ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return generate_sendgrid_key_pair()


def sendgrid_check(
    public_key: str,
    *,
    body: bytes = BODY,
    signature: str | None,
    timestamp: str | None = str(NOW_S),
    now: datetime = NOW,
) -> None:
    verify_sendgrid(
        public_key_b64=public_key, body=body, signature=signature, timestamp=timestamp, now=now
    )


def test_sendgrid_valid_signature_passes(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    sendgrid_check(public, signature=sign_sendgrid(private, BODY, NOW_S))


def test_sendgrid_accepts_a_signature_made_independently_of_our_signer(
    sendgrid_keys: Any,
) -> None:
    # Given a signature made the way SendGrid documents it, not through sign_sendgrid
    private, public = sendgrid_keys
    der = private.sign(str(NOW_S).encode() + BODY, ec.ECDSA(hashes.SHA256()))
    # Then it verifies
    sendgrid_check(public, signature=base64.b64encode(der).decode())


def test_sendgrid_refuses_tampered_body(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    signature = sign_sendgrid(private, BODY, NOW_S)
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, body=BODY.replace(b"open", b"click"), signature=signature)
    assert reason_of(excinfo) == "mismatch"
    assert excinfo.value.scheme == "sendgrid"
    assert isinstance(excinfo.value, JourneylineError)


def test_sendgrid_refuses_reserialised_body(sendgrid_keys: Any) -> None:
    # The body must be used as received: the same JSON re-dumped differently fails.
    private, public = sendgrid_keys
    signature = sign_sendgrid(private, BODY, NOW_S)
    redumped = json.dumps(json.loads(BODY)).encode()
    assert redumped != BODY
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, body=redumped, signature=signature)
    assert reason_of(excinfo) == "mismatch"


def test_sendgrid_refuses_signature_over_another_timestamp(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    signature = sign_sendgrid(private, BODY, NOW_S - 1)
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=signature, timestamp=str(NOW_S))
    assert reason_of(excinfo) == "mismatch"


def test_sendgrid_refuses_other_key(sendgrid_keys: Any) -> None:
    _, public = sendgrid_keys
    other_private, _ = generate_sendgrid_key_pair()
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=sign_sendgrid(other_private, BODY, NOW_S))
    assert reason_of(excinfo) == "mismatch"


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [(None, str(NOW_S)), ("", str(NOW_S)), ("SIG", None), ("SIG", "")],
)
def test_sendgrid_refuses_missing_headers(
    sendgrid_keys: Any, signature: str | None, timestamp: str | None
) -> None:
    private, public = sendgrid_keys
    if signature == "SIG":
        signature = sign_sendgrid(private, BODY, NOW_S)
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=signature, timestamp=timestamp)
    assert reason_of(excinfo) == "missing"


@pytest.mark.parametrize(
    "signature",
    [
        "not base64 !!",
        "abc",  # bad padding: the helper itself would raise ValueError
        base64.b64encode(b"\x30\x02not-der").decode(),  # base64, but not a DER signature
    ],
)
def test_sendgrid_refuses_malformed_signature(sendgrid_keys: Any, signature: str) -> None:
    _, public = sendgrid_keys
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=signature)
    assert reason_of(excinfo) == "malformed"


def test_sendgrid_refuses_malformed_timestamp(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=sign_sendgrid(private, BODY, "soon"), timestamp="soon")
    assert reason_of(excinfo) == "malformed"


def test_sendgrid_refuses_body_that_is_not_utf8(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    body = b"\xff\xfe[]"
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, body=body, signature=sign_sendgrid(private, body, NOW_S))
    assert reason_of(excinfo) == "malformed"


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_sendgrid_refuses_stale_and_future_timestamps(
    sendgrid_keys: Any, offset: timedelta
) -> None:
    private, public = sendgrid_keys
    signed_at = int((NOW + offset).timestamp())
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(
            public,
            signature=sign_sendgrid(private, BODY, signed_at),
            timestamp=str(signed_at),
        )
    assert reason_of(excinfo) == "stale"


@pytest.mark.parametrize("offset", [timedelta(minutes=-4, seconds=-59), timedelta(minutes=4)])
def test_sendgrid_accepts_timestamps_inside_the_window(
    sendgrid_keys: Any, offset: timedelta
) -> None:
    private, public = sendgrid_keys
    signed_at = int((NOW + offset).timestamp())
    sendgrid_check(
        public, signature=sign_sendgrid(private, BODY, signed_at), timestamp=str(signed_at)
    )


def test_sendgrid_bad_public_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        sendgrid_check("not-a-key", signature="AAAA")


def test_naive_now_is_refused(sendgrid_keys: Any) -> None:
    private, public = sendgrid_keys
    with pytest.raises(ValueError, match="timezone-aware"):
        sendgrid_check(
            public, signature=sign_sendgrid(private, BODY, NOW_S), now=NOW.replace(tzinfo=None)
        )


# --- HubSpot -------------------------------------------------------------------------------

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URI = "https://hooks.example.com/hubspot?portal=62515&x=1"
HS_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)


def hubspot_check(
    headers: dict[str, str],
    *,
    body: bytes = HS_BODY,
    method: str = "POST",
    uri: str = URI,
    secret: str = SECRET,
    now: datetime = NOW,
    accept_v1_v2: bool = True,
) -> None:
    verify_hubspot(
        client_secret=secret,
        method=method,
        uri=uri,
        body=body,
        headers=headers,
        now=now,
        accept_v1_v2=accept_v1_v2,
    )


def v3_headers(*, timestamp_ms: int = NOW_MS, body: bytes = HS_BODY) -> dict[str, str]:
    return sign_hubspot_v3(
        client_secret=SECRET, method="POST", uri=URI, body=body, timestamp_ms=timestamp_ms
    )


def test_hubspot_v3_valid_passes() -> None:
    hubspot_check(v3_headers())


def test_hubspot_v3_matches_an_independent_computation() -> None:
    source = b"POST" + URI.encode() + HS_BODY + str(NOW_MS).encode()
    expected = base64.b64encode(hmac.new(SECRET.encode(), source, hashlib.sha256).digest())
    assert v3_headers()["X-HubSpot-Signature-v3"] == expected.decode()
    hubspot_check(
        {"x-hubspot-signature-v3": expected.decode(), "x-hubspot-request-timestamp": str(NOW_MS)}
    )


def test_hubspot_headers_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in v3_headers().items()}
    hubspot_check(headers)


def test_hubspot_v3_tolerates_plus_turned_into_space() -> None:
    headers = v3_headers()
    signature = headers["X-HubSpot-Signature-v3"]
    # find a timestamp whose signature contains "+", so the test always exercises the case
    ts = NOW_MS
    while "+" not in signature:
        ts -= 1
        headers = v3_headers(timestamp_ms=ts)
        signature = headers["X-HubSpot-Signature-v3"]
    headers["X-HubSpot-Signature-v3"] = signature.replace("+", " ")
    hubspot_check(headers)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("body", HS_BODY.replace(b"123", b"124")),
        ("method", "PUT"),
        ("uri", URI.replace("x=1", "x=2")),
        ("secret", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
    ],
)
def test_hubspot_v3_refuses_any_change(change: str, value: Any) -> None:
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(v3_headers(), **{change: value})
    assert reason_of(excinfo) == "mismatch"
    assert excinfo.value.scheme == "hubspot-v3"


def test_hubspot_v3_refuses_signature_over_another_timestamp() -> None:
    headers = v3_headers(timestamp_ms=NOW_MS - 1)
    headers["X-HubSpot-Request-Timestamp"] = str(NOW_MS)
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers)
    assert reason_of(excinfo) == "mismatch"


def test_hubspot_v3_missing_timestamp() -> None:
    headers = v3_headers()
    del headers["X-HubSpot-Request-Timestamp"]
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers)
    assert reason_of(excinfo) == "missing"


def test_hubspot_no_signature_at_all() -> None:
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check({"Content-Type": "application/json"})
    assert reason_of(excinfo) == "missing"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-HubSpot-Signature-v3": "@@@", "X-HubSpot-Request-Timestamp": str(NOW_MS)},
        {"X-HubSpot-Signature-v3": "AAAA", "X-HubSpot-Request-Timestamp": str(NOW_MS)},
        {"X-HubSpot-Signature-v3": "A" * 44, "X-HubSpot-Request-Timestamp": "yesterday"},
        {"X-HubSpot-Signature": "a" * 64, "X-HubSpot-Signature-Version": "v9"},
        {"X-HubSpot-Signature": "a" * 64},
        {"X-HubSpot-Signature": "zz" * 32, "X-HubSpot-Signature-Version": "v1"},
        {"X-HubSpot-Signature": "abc", "X-HubSpot-Signature-Version": "v2"},
    ],
)
def test_hubspot_malformed(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers)
    assert reason_of(excinfo) == "malformed"


@pytest.mark.parametrize("offset", [timedelta(minutes=-5, milliseconds=-1), timedelta(minutes=6)])
def test_hubspot_v3_refuses_stale_and_future(offset: timedelta) -> None:
    ts = int((NOW + offset).timestamp() * 1000)
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(v3_headers(timestamp_ms=ts))
    assert reason_of(excinfo) == "stale"


def test_hubspot_v3_accepts_exactly_the_tolerance() -> None:
    hubspot_check(v3_headers(timestamp_ms=NOW_MS - 5 * 60 * 1000))


def test_hubspot_v1_known_answer_from_hubspot_docs() -> None:
    # HubSpot's published v1 example: secret + body hashes to this digest.
    digest = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    hubspot_check({"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v1"})
    hubspot_check({"x-hubspot-signature": digest.upper(), "x-hubspot-signature-version": "V1"})


def test_hubspot_v2_known_answer_from_hubspot_docs() -> None:
    # HubSpot's published v2 example: a GET with no body.
    digest = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    hubspot_check(
        {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v2"},
        method="GET",
        uri="https://www.example.com/webhook_uri",
        body=b"",
    )


def test_hubspot_v2_covers_method_uri_and_body() -> None:
    digest = hashlib.sha256((SECRET + "POST" + URI).encode() + HS_BODY).hexdigest()
    headers = {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v2"}
    hubspot_check(headers)
    for change in ({"method": "PUT"}, {"uri": URI + "&y=2"}, {"body": HS_BODY + b" "}):
        with pytest.raises(SignatureError) as excinfo:
            hubspot_check(headers, **change)  # type: ignore[arg-type]
        assert reason_of(excinfo) == "mismatch"
        assert excinfo.value.scheme == "hubspot-v2"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hubspot_v1_v2_are_refused_unless_accepted(version: str) -> None:
    """They sign no time: a request signed with them replays for ever (its v3 headers
    taken off). Only a deployment that opts in takes them."""
    source = SECRET + ("POST" + URI if version == "v2" else "")
    digest = hashlib.sha256(source.encode() + HS_BODY).hexdigest()
    headers = {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": version}
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers, accept_v1_v2=False)
    assert reason_of(excinfo) == "missing"
    assert "JOURNEYLINE_HUBSPOT_ACCEPT_V1_V2" in str(excinfo.value)
    assert "signs no time" in str(excinfo.value)
    hubspot_check(headers, accept_v1_v2=True)
    # v3 needs no opting in
    hubspot_check(v3_headers(), accept_v1_v2=False)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hubspot_v1_v2_refuse_wrong_secret_and_tampered_body(version: str) -> None:
    source = SECRET + ("POST" + URI if version == "v2" else "")
    digest = hashlib.sha256(source.encode() + HS_BODY).hexdigest()
    headers = {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": version}
    hubspot_check(headers)
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers, secret="other")
    assert reason_of(excinfo) == "mismatch"
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers, body=HS_BODY.replace(b"CRM", b"API"))
    assert reason_of(excinfo) == "mismatch"


def test_hubspot_prefers_v3_over_older_headers() -> None:
    # Given a correct v3 signature and a wrong v1 one, the request passes on v3
    headers = v3_headers() | {"X-HubSpot-Signature": "0" * 64, "X-HubSpot-Signature-Version": "v1"}
    hubspot_check(headers)
    # and given a wrong v3 and a correct v1, it fails: v3 is not downgraded
    v1 = hashlib.sha256(SECRET.encode() + HS_BODY).hexdigest()
    headers = {
        "X-HubSpot-Signature-v3": v3_headers(body=b"other")["X-HubSpot-Signature-v3"],
        "X-HubSpot-Request-Timestamp": str(NOW_MS),
        "X-HubSpot-Signature": v1,
        "X-HubSpot-Signature-Version": "v1",
    }
    with pytest.raises(SignatureError) as excinfo:
        hubspot_check(headers)
    assert reason_of(excinfo) == "mismatch"


def test_hubspot_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        hubspot_check(v3_headers(), secret="")


# --- generic HMAC --------------------------------------------------------------------------

HMAC_SECRET = "whsec_test"


def hmac_check(
    signature: str | None,
    *,
    body: bytes = BODY,
    timestamp: str | None = None,
    secret: str = HMAC_SECRET,
) -> None:
    verify_hmac(secret=secret, body=body, signature=signature, timestamp=timestamp, now=NOW)


def test_hmac_header_format_matches_the_documented_scheme() -> None:
    expected = hmac.new(HMAC_SECRET.encode(), f"{NOW_S}.".encode() + BODY, hashlib.sha256)
    assert sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S) == (
        f"t={NOW_S},v1={expected.hexdigest()}"
    )


def test_hmac_valid_passes() -> None:
    hmac_check(sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S))


def test_hmac_timestamp_may_come_from_its_own_header() -> None:
    header = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S)
    v1_only = header.split(",", 1)[1]
    hmac_check(v1_only, timestamp=str(NOW_S))
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(v1_only)
    assert reason_of(excinfo) == "missing"
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(header, timestamp=str(NOW_S + 1))
    assert reason_of(excinfo) == "malformed"


def test_hmac_any_of_several_v1_passes_for_secret_rotation() -> None:
    old = sign_hmac(secret="old-secret", body=BODY, timestamp=NOW_S)
    new = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S)
    header = old + "," + new.split(",", 1)[1] + ",v0=ignored"
    hmac_check(header)
    hmac_check(header, secret="old-secret")


@pytest.mark.parametrize(
    ("change", "value"),
    [("body", BODY + b" "), ("secret", "whsec_other")],
)
def test_hmac_refuses_tampered_body_and_wrong_secret(change: str, value: Any) -> None:
    header = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S)
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(header, **{change: value})
    assert reason_of(excinfo) == "mismatch"
    assert excinfo.value.scheme == "hmac"


def test_hmac_refuses_moved_timestamp() -> None:
    header = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S)
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(header.replace(f"t={NOW_S}", f"t={NOW_S + 1}"))
    assert reason_of(excinfo) == "mismatch"


@pytest.mark.parametrize("signature", [None, "", "  "])
def test_hmac_missing(signature: str | None) -> None:
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(signature)
    assert reason_of(excinfo) == "missing"


@pytest.mark.parametrize(
    "signature",
    [
        "garbage",
        f"t={NOW_S}",
        f"t={NOW_S},v1=xyz",
        f"t={NOW_S},v1={'g' * 64}",
        f"t=now,v1={'a' * 64}",
        f"t={NOW_S},t={NOW_S},v1={'a' * 64}",
        f"t=-{NOW_S},v1={'a' * 64}",
    ],
)
def test_hmac_malformed(signature: str) -> None:
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(signature)
    assert reason_of(excinfo) == "malformed"


@pytest.mark.parametrize("offset_s", [-301, 301, -86_400])
def test_hmac_refuses_stale_and_future(offset_s: int) -> None:
    header = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S + offset_s)
    with pytest.raises(SignatureError) as excinfo:
        hmac_check(header)
    assert reason_of(excinfo) == "stale"


def test_hmac_tolerance_is_configurable() -> None:
    header = sign_hmac(secret=HMAC_SECRET, body=BODY, timestamp=NOW_S - 600)
    verify_hmac(
        secret=HMAC_SECRET,
        body=BODY,
        signature=header,
        now=NOW,
        tolerance=timedelta(minutes=15),
    )


def test_hmac_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        hmac_check("t=1,v1=" + "a" * 64, secret="")
    with pytest.raises(ConfigurationError):
        sign_hmac(secret="", body=BODY, timestamp=NOW_S)


# --- dedupe keys ---------------------------------------------------------------------------

SG_EVENT: dict[str, Any] = {
    "email": "ada@example.com",
    "timestamp": 1_740_830_400,
    "event": "click",
    "sg_event_id": "ZGVsaXZlcmVk",
    "sg_message_id": "msg-1.filter",
    "url": "https://example.com/a",
}


def without(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in names}


def test_sendgrid_key_is_stable_and_uses_sg_event_id() -> None:
    key = sendgrid_event_key(SG_EVENT)
    assert key == sendgrid_event_key(dict(SG_EVENT))
    assert key.startswith("sendgrid:id:")
    # other fields do not matter once sg_event_id is known
    assert key == sendgrid_event_key(SG_EVENT | {"event": "open", "url": None})
    assert key != sendgrid_event_key(SG_EVENT | {"sg_event_id": "other"})


def test_sendgrid_fallback_key() -> None:
    base = without(SG_EVENT, "sg_event_id")
    key = sendgrid_event_key(base)
    assert key.startswith("sendgrid:msg:")
    assert key == sendgrid_event_key(base | {"timestamp": str(base["timestamp"])})
    assert key == sendgrid_event_key(base | {"email": "other@example.com", "category": ["x"]})
    distinct = {
        key,
        sendgrid_event_key(base | {"url": "https://example.com/b"}),
        sendgrid_event_key(without(base, "url")),
        sendgrid_event_key(base | {"event": "open"}),
        sendgrid_event_key(base | {"timestamp": base["timestamp"] + 1}),
        sendgrid_event_key(base | {"sg_message_id": "msg-2.filter"}),
        sendgrid_event_key(SG_EVENT),
    }
    assert len(distinct) == 7


def test_sendgrid_key_fields_cannot_be_forged_by_joining() -> None:
    a = without(SG_EVENT, "sg_event_id") | {"sg_message_id": "m|open", "event": "x"}
    b = without(SG_EVENT, "sg_event_id") | {"sg_message_id": "m", "event": "open|x"}
    assert sendgrid_event_key(a) != sendgrid_event_key(b)


def test_sendgrid_key_needs_an_identity() -> None:
    with pytest.raises(ValidationError) as excinfo:
        sendgrid_event_key(without(SG_EVENT, "sg_event_id", "sg_message_id"))
    assert excinfo.value.field == "sg_message_id"


HS_EVENT: dict[str, Any] = {
    "eventId": 100,
    "subscriptionId": 12345,
    "portalId": 62515,
    "appId": 54321,
    "occurredAt": 1_740_830_400_000,
    "subscriptionType": "contact.propertyChange",
    "attemptNumber": 0,
    "objectId": 123,
    "propertyName": "lifecyclestage",
    "propertyValue": "customer",
    "changeSource": "CRM",
}


def test_hubspot_key_is_stable_across_retries() -> None:
    key = hubspot_event_key(HS_EVENT)
    assert key.startswith("hubspot:evt:")
    assert key == hubspot_event_key(HS_EVENT | {"attemptNumber": 3})
    assert key == hubspot_event_key(HS_EVENT | {"objectId": "123"})


@pytest.mark.parametrize(
    "change",
    [
        {"eventId": 101},
        {"portalId": 99},
        {"occurredAt": 1_740_830_400_001},
        {"subscriptionType": "deal.propertyChange"},
        {"objectId": 124},
        {"propertyName": "email"},
        {"propertyValue": "lead"},
    ],
)
def test_hubspot_key_distinguishes_events(change: dict[str, Any]) -> None:
    assert hubspot_event_key(HS_EVENT | change) != hubspot_event_key(HS_EVENT)


def test_hubspot_same_event_id_on_different_events_gives_different_keys() -> None:
    # eventId is not guaranteed unique: two changes sharing it must not be merged
    a = HS_EVENT | {"propertyValue": "lead"}
    b = HS_EVENT | {"propertyValue": "customer", "occurredAt": HS_EVENT["occurredAt"] + 5}
    assert hubspot_event_key(a) != hubspot_event_key(b)


def test_hubspot_creation_without_property_fields() -> None:
    creation = without(HS_EVENT, "propertyName", "propertyValue") | {
        "subscriptionType": "contact.creation"
    }
    assert hubspot_event_key(creation) == hubspot_event_key(dict(creation))


def test_hubspot_key_needs_what_and_when() -> None:
    with pytest.raises(ValidationError) as excinfo:
        hubspot_event_key(without(HS_EVENT, "occurredAt"))
    assert excinfo.value.field == "occurredAt"


@pytest.mark.parametrize(
    "signed_uri",
    [
        "https://hooks.example.com/hs?next=https%3A%2F%2Fexample.com%2Fa",  # as received
        "https://hooks.example.com/hs?next=https://example.com/a",  # escapes decoded
    ],
)
def test_hubspot_v3_accepts_the_uri_as_received_or_with_escapes_decoded(
    signed_uri: str,
) -> None:
    received_uri = "https://hooks.example.com/hs?next=https%3A%2F%2Fexample.com%2Fa"
    headers = sign_hubspot_v3(
        client_secret=SECRET, method="POST", uri=signed_uri, body=HS_BODY, timestamp_ms=NOW_MS
    )
    hubspot_check(headers, uri=received_uri)
    with pytest.raises(SignatureError):
        hubspot_check(headers, uri=received_uri.replace("%2Fa", "%2Fb"))


def test_webhooks_exports() -> None:
    import connectors.webhooks

    assert sorted(connectors.webhooks.__all__) == sorted(
        [
            "HUBSPOT_SIGNATURE_HEADER",
            "HUBSPOT_SIGNATURE_V3_HEADER",
            "HUBSPOT_SIGNATURE_VERSION_HEADER",
            "HUBSPOT_TIMESTAMP_HEADER",
            "JOURNEYLINE_SIGNATURE_HEADER",
            "SENDGRID_SIGNATURE_HEADER",
            "SENDGRID_TIMESTAMP_HEADER",
            "SignatureError",
            "SignatureFailure",
            "WebhookSender",
            "generate_sendgrid_key_pair",
            "hubspot_event_key",
            "sendgrid_event_key",
            "sign_hmac",
            "sign_hubspot_v3",
            "sign_sendgrid",
            "verify_hmac",
            "verify_hubspot",
            "verify_sendgrid",
        ]
    )
    for name in connectors.webhooks.__all__:
        assert getattr(connectors.webhooks, name) is not None


@pytest.mark.parametrize(
    ("stamp", "said"),
    [
        (str(NOW_S - 301), "timestamp is 301 s old (tolerance 300 s)"),
        (str(NOW_S + 1_000), "timestamp is 1000 s in the future (tolerance 300 s)"),
        ("9" * 20, "timestamp is out of range: over a year in the future (tolerance 300 s)"),
        ("0", "timestamp is out of range: over a year old (tolerance 300 s)"),
    ],
)
def test_a_stale_timestamp_is_told_in_whole_seconds_or_as_out_of_range(
    sendgrid_keys: Any, stamp: str, said: str
) -> None:
    # Given a correctly signed request stamped far from now
    private, public = sendgrid_keys
    # When it is checked
    with pytest.raises(SignatureError) as excinfo:
        sendgrid_check(public, signature=sign_sendgrid(private, BODY, stamp), timestamp=stamp)
    # Then it is stale, and the message is exact (no float artefacts like 99999999998203527168)
    assert reason_of(excinfo) == "stale"
    assert str(excinfo.value) == said
