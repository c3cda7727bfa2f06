"""`journeyline fake sendgrid|hubspot` serve the fakes as standalone processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

JOURNEYLINE = str(Path(sys.executable).parent / "journeyline")


TIMEOUT = httpx.Timeout(60.0)


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [JOURNEYLINE, "fake", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", first)
    if found is None:
        proc.kill()
        pytest.fail(f"no URL in the first line: {first!r}")
    return proc, found.group(0)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)  # generous: CI machines can be loaded
    assert proc.returncode == 0, out
    return out


def test_the_fake_sendgrid_serves_accepts_a_valid_send_and_logs_each_request() -> None:
    proc, url = _start("sendgrid", "--api-key", "SG.cli")
    try:
        mail = {
            "personalizations": [{"to": [{"email": "ana@example.com"}]}],
            "from": {"email": "hello@journeyline.example"},
            "subject": "Hi",
            "content": [{"type": "text/plain", "value": "Hello"}],
        }
        ok = httpx.post(
            timeout=TIMEOUT,
            url=f"{url}/v3/mail/send",
            json=mail,
            headers={"Authorization": "Bearer SG.cli"},
        )
        bad_key = httpx.post(
            timeout=TIMEOUT,
            url=f"{url}/v3/mail/send",
            json=mail,
            headers={"Authorization": "Bearer x"},
        )
    finally:
        out = _stop(proc)
    assert (ok.status_code, bad_key.status_code) == (202, 401)
    assert "POST /v3/mail/send -> 202" in out
    assert "POST /v3/mail/send -> 401" in out


def test_the_fake_hubspot_serves_and_checks_its_token() -> None:
    proc, url = _start("hubspot", "--token", "pat-cli")
    try:
        created = httpx.post(
            timeout=TIMEOUT,
            url=f"{url}/crm/v3/objects/contacts",
            json={"properties": {"email": "ana@example.com"}},
            headers={"Authorization": "Bearer pat-cli"},
        )
        refused = httpx.get(
            timeout=TIMEOUT,
            url=f"{url}/crm/v3/objects/contacts/1",
            headers={"Authorization": "Bearer no"},
        )
    finally:
        out = _stop(proc)
    assert created.status_code == 201, created.text
    assert refused.status_code == 401
    assert "POST /crm/v3/objects/contacts -> 201" in out
