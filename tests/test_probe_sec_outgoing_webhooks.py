"""Outgoing webhooks against a hostile or broken receiver: what the worker reads of the
answer, how long it waits for it, and what its errors (logged, stored on the action row,
shown by ``journeyline actions --failed``) say about the URL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from connectors.webhooks.outgoing import MAX_DETAIL_BYTES, WebhookSender
from engine.errors import PermanentConnectorError, TransientConnectorError
from engine.urls import url_origin

MIB = 1024 * 1024


class Endless:
    """A response body as good as endless (64 MiB, so that a sender reading it all fails
    the test rather than the machine): counts the chunks anyone read of it."""

    def __init__(self) -> None:
        self.chunks = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(64):
            self.chunks += 1
            yield b"x" * MIB


def _sender(handler: httpx.MockTransport, **options: object) -> WebhookSender:
    return WebhookSender(secret="s", client=httpx.Client(transport=handler), **options)  # type: ignore[arg-type]


def test_a_success_is_read_no_further_than_its_first_bytes() -> None:
    # Given a receiver that answers 200 with a body that never ends
    body = Endless()
    sender = _sender(httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    # When the webhook is posted
    outcome = sender.post("https://hooks.example.com/x", {"a": 1}, idempotency_key="k")
    # Then the status decides, and the rest of the body is left unread
    assert outcome == "200"
    assert body.chunks <= MAX_DETAIL_BYTES // MIB + 1


def test_a_success_dripped_slowly_is_given_up_at_the_timeout() -> None:
    now = [0.0]

    def drip() -> Iterator[bytes]:
        for _ in range(MAX_DETAIL_BYTES):
            now[0] += 1.0
            yield b"x"

    sender = _sender(
        httpx.MockTransport(lambda request: httpx.Response(200, content=drip())),
        timeout_s=10.0,
        clock=lambda: now[0],
    )
    assert sender.post("https://hooks.example.com/x", {}, idempotency_key="k") == "200"
    assert now[0] <= 11.0


def test_an_error_reads_only_the_first_bytes_of_a_huge_answer() -> None:
    # Given a receiver that answers 500 with an endless body
    body = Endless()
    sender = _sender(httpx.MockTransport(lambda request: httpx.Response(500, content=body)))
    # When the webhook is posted
    with pytest.raises(TransientConnectorError) as raised:
        sender.post("https://hooks.example.com/x", {"a": 1}, idempotency_key="k")
    # Then a bounded start of the answer is kept, not the whole of it in memory
    assert body.chunks <= MAX_DETAIL_BYTES // MIB + 1
    assert "answered 500" in str(raised.value)


def test_reading_an_error_stops_at_the_timeout_however_slowly_it_drips() -> None:
    # Given a receiver that drips its error answer one byte at a time, each byte just
    # inside the read timeout (a per-read timeout never fires)
    now = [0.0]

    def drip() -> Iterator[bytes]:
        for _ in range(MAX_DETAIL_BYTES):
            now[0] += 1.0  # a second per byte, on the sender's clock
            yield b"x"

    sender = _sender(
        httpx.MockTransport(lambda request: httpx.Response(503, content=drip())),
        timeout_s=10.0,
        clock=lambda: now[0],
    )
    # When the webhook is posted
    with pytest.raises(TransientConnectorError):
        sender.post("https://hooks.example.com/x", {}, idempotency_key="k")
    # Then the sender stops reading at its timeout, not after 4,096 seconds
    assert now[0] <= 11.0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://files.example.com/x", "http://[::1"])
def test_a_url_no_request_can_be_made_to_is_a_permanent_failure(url: str) -> None:
    # Given a webhook step whose URL httpx cannot request at all
    sender = WebhookSender(secret="s")
    try:
        # When it is posted, Then retrying would fail the same way every time
        with pytest.raises(PermanentConnectorError):
            sender.post(url, {}, idempotency_key="k")
    finally:
        sender.close()


def test_errors_name_the_receiver_without_its_credentials() -> None:
    # Given a webhook URL carrying a password, a token in its query and a secret path
    # (Slack-style: https://hooks.slack.com/services/T0/B0/XXXX)
    url = "https://user:pa55word@hooks.example.com/services/T0/B0/s3cretpath?token=t0ken"
    sender = _sender(httpx.MockTransport(lambda request: httpx.Response(404, text="no")))
    # When the receiver refuses it
    with pytest.raises(PermanentConnectorError) as raised:
        sender.post(url, {}, idempotency_key="k")
    # Then the error (logged, stored on the action) names the host only
    message = str(raised.value)
    assert "https://hooks.example.com" in message
    for secret in ("pa55word", "user", "t0ken", "s3cretpath"):
        assert secret not in message


def test_a_refused_connection_names_the_receiver_without_its_credentials() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sender = _sender(httpx.MockTransport(refuse))
    with pytest.raises(TransientConnectorError) as raised:
        sender.post("http://u:pw@127.0.0.1:9/x?key=abc", {}, idempotency_key="k")
    assert "pw" not in str(raised.value) and "abc" not in str(raised.value)
    assert "http://127.0.0.1:9" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T0/B0/XXX", "https://hooks.example.com/…"),
        ("https://a:b@example.com:8443/?q=1", "https://example.com:8443/…"),
        ("http://example.com", "http://example.com"),
        ("http://example.com/", "http://example.com"),
        ("http://[::1]:8080/x", "http://[::1]:8080/…"),
        ("not a url", "<a URL that cannot be parsed: not shown>"),
        ("http://[::1", "<a URL that cannot be parsed: not shown>"),
    ],
)
def test_url_origin_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert url_origin(url) == shown
