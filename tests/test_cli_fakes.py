"""`journeyline fake sendgrid|hubspot` serve the fakes as standalone processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.settings import Settings

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


def _banner(proc: subprocess.Popen[str]) -> list[str]:
    """The lines a fake prints before it waits for requests."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "Ctrl-C to stop":
        line = proc.stdout.readline()
        assert line, f"the banner ended early: {lines}"
        lines.append(line.strip())
    return lines


@pytest.mark.parametrize(
    ("fake", "credential", "expected"),
    [
        (
            ["sendgrid", "--api-key", "SG.cli key"],
            "SG.cli key",
            {"email_connector": "sendgrid", "sendgrid_api_key": "SG.cli key"},
        ),
        (
            ["hubspot", "--token", "pat-cli"],
            "pat-cli",
            {"crm_connector": "hubspot", "hubspot_token": "pat-cli"},
        ),
    ],
)
def test_the_banner_exports_everything_the_connector_needs_to_use_the_fake(
    fake: list[str],
    credential: str,
    expected: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given a fake started from the command line
    proc, url = _start(*fake)
    try:
        banner = _banner(proc)
    finally:
        _stop(proc)
    # When its export lines are run in a shell, as a user pastes them
    exports = [line for line in banner if line.startswith("export ")]
    script = "\n".join([*exports, "env"])
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env={})
    found = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    # Then the settings they make point the connector at the fake, with its credential
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in found.items():
        if name.startswith("JOURNEYLINE_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    for name, value in expected.items():
        assert getattr(settings, name) == value, banner
    host = settings.sendgrid_host if fake[0] == "sendgrid" else settings.hubspot_base_url
    assert host == url
    assert any(credential in line for line in exports)
