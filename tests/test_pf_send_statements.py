"""The email send path's statements: a batch job's claim, send and record take a fixed
handful of statements whatever its size, and an email sent on its own a fixed few; a query
per email (an N+1) coming back into either path fails here, without any timing."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors import SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import Guardrails
from tests.support import statements
from tests.test_batch_guardrails import SALE, _world
from tests.test_broadcast import KEY, add_contacts


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


def _sent_with(tmp_path: Path, fake: FakeSendGrid, count: int, *, batch_size: int) -> list[str]:
    """The statements the workers ran to send a broadcast's ``count`` emails."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    worlds = _world(tmp_path, fake, [SALE], Guardrails())
    runtime, _clock = next(worlds)
    try:
        runtime.email.close()
        runtime.email = SendGridEmailConnector(
            api_key=KEY, host=fake.url, timeout_s=30.0, batch_size=batch_size
        )
        before = len(fake.requests)
        add_contacts(runtime, count, prefix="p", timezone="Europe/London")
        runtime.broadcast("spring_sale")
        with statements(runtime.db) as seen:
            runtime.drain()
        assert sum(len(r.body["personalizations"]) for r in fake.requests[before:]) == count
        return seen
    finally:
        next(worlds, None)


def test_a_batch_costs_the_same_statements_for_ten_emails_as_for_forty(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    ten = _sent_with(tmp_path / "ten", fake, 10, batch_size=1000)
    forty = _sent_with(tmp_path / "forty", fake, 40, batch_size=1000)
    shapes = collections.Counter(s[:70] for s in forty)
    assert len(forty) == len(ten), shapes
    # Two transactions (claim, record): the claim's reads of the actions, their contacts,
    # the enrollments' withdrawal marks and the contacts' other emails, its UPDATE; the
    # record's UPDATE. Eight with the BEGINs.
    assert len(forty) <= 8, shapes


def test_an_email_sent_on_its_own_costs_a_few_statements(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    seen = _sent_with(tmp_path, fake, 20, batch_size=1)
    shapes = collections.Counter(s[:70] for s in seen)
    # Per email: the claim (action, contact, suppression), the withdrawal mark, the
    # contact's other emails, the claim's UPDATE; the job's BEGINs and sent UPDATEs besides.
    assert len(seen) <= 20 * 4 + 6, shapes
