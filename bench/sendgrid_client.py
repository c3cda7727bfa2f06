"""The ``sendgrid`` package's own client vs one pooled ``httpx.Client``, same payload.

``python -m bench.sendgrid_client [--requests 2000] [--smoke]``.

Both post the same ``Mail(...)`` (built once by the ``sendgrid`` package) to
``FakeSendGrid`` running in another process (``bench.services``), over local HTTP, one
request after another from one thread:

- baseline: ``SendGridAPIClient(api_key, host=...).send(mail)``, what the package offers (it
  uses stdlib ``urllib`` with a new opener per request and ``Connection: close``);
- value: ``httpx.Client`` created once, ``client.post(url, json=mail.get())``, as
  ``connectors/email/sendgrid.py`` does (keep-alive).

The ratio is requests/s of httpx over requests/s of the package: above 1 means the
connector's choice is the faster. Over HTTPS the gap grows (a TLS handshake and a CA bundle
load per request for the package), which a local plain-HTTP fake does not show.
"""

from __future__ import annotations

import argparse
import time

import httpx
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

from bench.common import Result, add_smoke_flag, print_results, run_cli, write_json
from bench.services import API_KEY, FakeSendGridProcess


def mail() -> Mail:
    message = Mail(
        from_email="hello@journeyline.example",
        to_emails="ada@example.com",
        subject="Spring sale: 20% off",
        plain_text_content="Everything is 20% off this week.",
        html_content="<p>Everything is 20% off this week.</p>",
    )
    return message


def package_client(url: str, n: int) -> float:
    """Requests/s through ``SendGridAPIClient`` (a new connection per request)."""
    client = SendGridAPIClient(api_key=API_KEY, host=url)
    client.client.timeout = 10
    message = mail()
    start = time.perf_counter()
    for _ in range(n):
        response = client.send(message)
        if response.status_code != 202:
            raise RuntimeError(f"package client got {response.status_code}")
    return n / (time.perf_counter() - start)


def pooled_httpx(url: str, n: int) -> float:
    """Requests/s through one long-lived ``httpx.Client`` posting ``Mail(...).get()``."""
    body = mail().get()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=10) as client:
        start = time.perf_counter()
        for _ in range(n):
            response = client.post(f"{url}/v3/mail/send", json=body, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"httpx client got {response.status_code}")
        return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.sendgrid_client", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per client")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    n = 20 if args.smoke else args.requests
    with FakeSendGridProcess() as fake:
        pooled_httpx(fake.url, min(n, 20))  # warm both paths (imports, first connection)
        package_client(fake.url, min(n, 20))
        package = package_client(fake.url, n)
        pooled = pooled_httpx(fake.url, n)
    rows = [Result.of("requests/s, pooled httpx vs sendgrid package", pooled, "req/s", package)]
    print_results(f"SendGrid client: {n} sequential requests each to FakeSendGrid", rows)
    write_json("sendgrid_client", rows, requests=n)
    return rows


if __name__ == "__main__":
    run_cli(main, "bench.sendgrid_client")
