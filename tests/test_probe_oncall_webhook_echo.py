"""A receiver that echoes the request's path or URL in its error answer (Express's default
404 page says ``Cannot POST /hooks/<secret path>``; many APIs quote a rejected token) must not
make the worker store and log the credential the URL carries: the error quotes the start of
the answer, and the receiver is otherwise named by its origin only. Found probing workers
against a receiver of our own that echoed ``token=…`` into the action row, the contact's
timeline (API and CLI) and the worker's log."""

from __future__ import annotations

import httpx
import pytest

from connectors.webhooks.outgoing import WebhookSender
from engine.errors import PermanentConnectorError, TransientConnectorError

URL = (
    "https://alice:Pa55wordSecret@hooks.example.com/services/T000/B000/PathSecret123"
    "?token=QuerySecret456&channel=ops"
)
SECRETS = ("Pa55wordSecret", "PathSecret123", "QuerySecret456")


def _echoing(status: int, echo: str) -> WebhookSender:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, text=echo.format(url=request.url, path=request.url.raw_path.decode())
        )

    return WebhookSender(secret="s", client=httpx.Client(transport=httpx.MockTransport(answer)))


@pytest.mark.parametrize(
    ("status", "echo", "error"),
    [
        (404, "<pre>Cannot POST {path}</pre>", PermanentConnectorError),
        (400, "invalid request to {url}", PermanentConnectorError),
        (401, "bad token QuerySecret456 for user alice:Pa55wordSecret", PermanentConnectorError),
        (503, "upstream of /services/T000/B000/PathSecret123 down", TransientConnectorError),
        (404, "no such hook: /services/T000/B000/PathSecret123%3F", PermanentConnectorError),
    ],
)
def test_an_error_answer_echoing_the_url_does_not_carry_its_credential(
    status: int, echo: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        _echoing(status, echo).post(URL, {"a": 1}, idempotency_key="k")
    message = str(raised.value)
    for secret in SECRETS:
        assert secret not in message
    assert f"answered {status}" in message  # the status and the rest still say what went on


def test_an_answer_without_the_url_is_quoted_as_it_was() -> None:
    with pytest.raises(PermanentConnectorError) as raised:
        _echoing(400, "field 'email' is required").post(URL, {}, idempotency_key="k")
    assert "field 'email' is required" in str(raised.value)
