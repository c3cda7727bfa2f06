"""An erased address coming back in a batch starts unsubscribed on PostgreSQL too, where a
batch's new contacts go as one ``json_to_recordset`` insert whose columns are the first
row's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import contact, make_runtime
from tests.test_api import Api, event, serve


@pytest.fixture
def pg_api(pg_db_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(pg_db_url)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _erase(api: Api, email: str) -> None:
    assert api.http.delete(f"/v1/contacts/{email}", headers=api.auth()).status_code == 204


@pytest.mark.parametrize("erased_first", [True, False], ids=["erased-first", "erased-second"])
def test_a_batch_on_postgres_brings_back_an_erased_address_unsubscribed(
    pg_api: Api, erased_first: bool
) -> None:
    # Given Cy, known and then erased on her request
    assert pg_api.post_events(event("cy@example.com")).status_code == 202
    pg_api.runtime.drain()
    _erase(pg_api, "cy@example.com")
    # When her address comes back in a batch beside a newcomer, first or second
    pair = [event("cy@example.com", "trial.started"), event("dee@example.com")]
    batch = {"events": pair if erased_first else pair[::-1]}
    answer = pg_api.post_events(batch)
    # Then the batch is taken, she is unsubscribed, and the newcomer is subscribed
    assert answer.status_code == 202, answer.text
    pg_api.runtime.drain()
    assert contact(pg_api.runtime, "cy@example.com").subscription_status == "unsubscribed"
    assert contact(pg_api.runtime, "dee@example.com").subscription_status == "subscribed"
