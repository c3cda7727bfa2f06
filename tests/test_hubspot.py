"""The HubSpot CRM connector against the shipped fake, over real HTTP on 127.0.0.1.

Time is a fake clock shared by the connector's rate limiter and, where pacing is tested, by
the fake server's rate window: waits are booked on the clock, never slept through.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from connectors.crm import HubSpotConnector, HubSpotRateLimiter, RollingWindow
from connectors.fakes import FakeHubSpot, hubspot_webhook_event, send_hubspot_webhook
from connectors.webhooks import SignatureError, verify_hubspot
from engine import (
    ConfigurationError,
    DeliveryUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

TOKEN = "pat-test-token"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"


class FakeClock:
    """``monotonic`` and ``sleep`` for the limiter: sleeping moves the clock, instantly."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(token=TOKEN) as server:
        yield server


def make_connector(fake: FakeHubSpot, clock: FakeClock, **options: Any) -> HubSpotConnector:
    limiter = options.pop("limiter", None) or HubSpotRateLimiter(
        monotonic=clock.monotonic, sleep=clock.sleep
    )
    options.setdefault("token", TOKEN)
    options.setdefault("timeout_s", 2.0)
    return HubSpotConnector(base_url=fake.url, limiter=limiter, jitter=lambda: 0.0, **options)


@pytest.fixture
def crm(fake: FakeHubSpot, clock: FakeClock) -> Iterator[HubSpotConnector]:
    connector = make_connector(fake, clock)
    yield connector
    connector.close()


# -- contacts ---------------------------------------------------------------------------------


def test_upsert_creates_then_updates_the_same_contact(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    created = crm.upsert_contact("Ada@Example.com", {"firstname": "Ada", "score": 3})
    updated = crm.upsert_contact("ada@example.com", {"lastname": "Lovelace", "vip": True})

    assert created.created is True and updated.created is False
    assert created.id == updated.id and created.email == "ada@example.com"
    stored = fake.contact("ada@example.com")
    assert stored is not None
    assert (stored["firstname"], stored["lastname"], stored["score"], stored["vip"]) == (
        "Ada",
        "Lovelace",
        "3",
        "true",
    )
    first = fake.requests[0]
    assert (first.method, first.path) == ("POST", UPSERT)
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.body == {
        "inputs": [
            {
                "id": "ada@example.com",
                "idProperty": "email",
                "properties": {"firstname": "Ada", "score": "3"},
            }
        ]
    }


def test_a_batch_of_250_takes_three_calls_and_answers_in_input_order(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    contacts = [(f"user{i}@example.com", {"firstname": f"User {i}"}) for i in range(250)]

    records = crm.batch_upsert_contacts(contacts)

    assert [len(r.body["inputs"]) for r in fake.requests] == [100, 100, 50]
    assert [r.email for r in records] == [email for email, _ in contacts]
    assert len({r.id for r in records}) == 250 and fake.contact_count() == 250
    ports = {r.client_port for r in fake.requests}
    assert len(ports) == 1  # one kept-alive connection from the pooled client


def test_an_email_given_twice_in_a_batch_is_one_contact_with_merged_properties(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    records = crm.batch_upsert_contacts(
        [
            ("ada@example.com", {"firstname": "Ada", "city": "London"}),
            ("bob@example.com", {"firstname": "Bob"}),
            ("ADA@example.com", {"city": "Paris"}),
        ]
    )

    assert records[0].id == records[2].id != records[1].id
    assert fake.contact("ada@example.com") == {
        **(fake.contact("ada@example.com") or {}),
        "firstname": "Ada",
        "city": "Paris",
    }
    assert len(fake.requests[0].body["inputs"]) == 2


def test_property_values_are_sent_as_hubspot_strings(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    crm.upsert_contact(
        "ada@example.com",
        {
            "trial_ends": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "opted_in": False,
            "nickname": None,
        },
    )

    sent = fake.requests[0].body["inputs"][0]["properties"]
    assert sent == {"trial_ends": "1704164645000", "opted_in": "false", "nickname": ""}
    with pytest.raises(PermanentConnectorError, match="naive"):
        crm.upsert_contact("ada@example.com", {"trial_ends": datetime(2024, 1, 2)})
    with pytest.raises(PermanentConnectorError, match="not an email"):
        crm.upsert_contact("not-an-email", {})


# -- lifecycle stage --------------------------------------------------------------------------


def test_a_forward_move_sets_the_mapped_lifecycle_stage(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    fake.add_contact("ada@example.com", lifecyclestage="subscriber")

    update = crm.set_lifecycle_stage("ada@example.com", "purchase")

    assert (update.outcome, update.previous, update.value) == ("set", "subscriber", "customer")
    assert not update.cleared_first
    assert fake.history("ada@example.com", "lifecyclestage") == ["subscriber", "customer"]


def test_a_backward_move_is_skipped_with_the_reason(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    fake.add_contact("ada@example.com", lifecyclestage="customer")

    update = crm.set_lifecycle_stage("ada@example.com", "consideration")

    assert update.skipped and "backward" in update.reason
    assert (update.previous, update.value) == ("customer", "marketingqualifiedlead")
    assert fake.history("ada@example.com", "lifecyclestage") == ["customer"]
    assert [r.method for r in fake.requests] == ["GET"]  # nothing written


def test_allow_backward_clears_the_stage_first_then_sets_it(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    fake.add_contact("ada@example.com", lifecyclestage="customer")

    update = crm.set_lifecycle_stage("ada@example.com", "consideration", allow_backward=True)

    assert update.outcome == "set" and update.cleared_first
    assert fake.history("ada@example.com", "lifecyclestage") == [
        "customer",
        "",
        "marketingqualifiedlead",
    ]
    assert [r.method for r in fake.requests] == ["GET", "PATCH", "PATCH"]


def test_lifecycle_for_a_new_contact_an_unchanged_stage_and_an_unmirrored_one(
    fake: FakeHubSpot, clock: FakeClock
) -> None:
    crm = make_connector(fake, clock, lifecycle_map={"decision": "opportunity", "churned": ""})
    try:
        created = crm.set_lifecycle_stage("new@example.com", "decision")
        again = crm.set_lifecycle_stage("new@example.com", "decision")
        churned = crm.set_lifecycle_stage("new@example.com", "churned")
        with pytest.raises(PermanentConnectorError, match="lifecycle_map"):
            crm.set_lifecycle_stage("new@example.com", "no-such-stage")
    finally:
        crm.close()

    assert (created.outcome, created.previous, created.value) == ("set", "", "opportunity")
    assert created.contact_id
    assert again.outcome == "unchanged"
    assert churned.skipped and "not mirrored" in churned.reason
    assert (fake.contact("new@example.com") or {})["lifecyclestage"] == "opportunity"


def test_the_fake_refuses_a_backward_set_so_forgetting_to_clear_fails_loudly(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    fake.add_contact("ada@example.com", lifecyclestage="customer")

    with pytest.raises(PermanentConnectorError, match="cannot move backward") as caught:
        crm.upsert_contact("ada@example.com", {"lifecyclestage": "lead"})

    assert "(400)" in str(caught.value) and "VALIDATION_ERROR" in str(caught.value)


# -- tasks and notes --------------------------------------------------------------------------


def test_a_task_and_a_note_are_associated_with_the_contact(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    contact_id = crm.upsert_contact("ada@example.com", {}).id
    due = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

    task_id = crm.create_task(
        "ada@example.com", "Call Ada", "She asked for a demo", due=due, owner_id="42"
    )
    note_id = crm.create_note("ada@example.com", "Opened the pricing email 3 times")

    [task] = fake.tasks()
    [note] = fake.notes()
    assert (task.id, note.id) == (task_id, note_id)
    assert task.contact_ids == (contact_id,) and note.contact_ids == (contact_id,)
    assert task.properties["hs_task_subject"] == "Call Ada"
    assert task.properties["hs_task_body"] == "She asked for a demo"
    assert task.properties["hs_timestamp"] == str(int(due.timestamp() * 1000))
    assert task.properties["hubspot_owner_id"] == "42"
    assert note.properties["hs_note_body"] == "Opened the pricing email 3 times"
    lookup = fake.requests[1]
    assert (lookup.method, lookup.path) == ("GET", "/crm/v3/objects/contacts/ada@example.com")
    assert lookup.query == {"idProperty": "email"}


def test_a_task_for_an_unknown_contact_is_permanent(crm: HubSpotConnector) -> None:
    with pytest.raises(PermanentConnectorError, match="no contact with email"):
        crm.create_task("ghost@example.com", "Call", "")


# -- errors -----------------------------------------------------------------------------------


def test_a_429_is_retried_after_the_interval_header_then_succeeds(
    crm: HubSpotConnector, fake: FakeHubSpot, clock: FakeClock
) -> None:
    fake.fail_next(429, count=2)

    record = crm.upsert_contact("ada@example.com", {"firstname": "Ada"})

    assert record.created is True
    assert [r.status for r in fake.requests] == [429, 429, 200]
    assert clock.sleeps == [10.0, 10.0]  # X-HubSpot-RateLimit-Interval-Milliseconds: 10000


def test_a_429_with_retry_after_waits_that_long(
    crm: HubSpotConnector, fake: FakeHubSpot, clock: FakeClock
) -> None:
    fake.fail_next(429, headers={"Retry-After": "3"})

    crm.upsert_contact("ada@example.com", {})

    assert clock.sleeps == [3.0]


def test_a_persistent_429_becomes_transient_with_retry_after(
    crm: HubSpotConnector, fake: FakeHubSpot
) -> None:
    fake.fail_next(429, count=10)

    with pytest.raises(TransientConnectorError, match="rate limit") as caught:
        crm.upsert_contact("ada@example.com", {})

    assert caught.value.retry_after == timedelta(seconds=10)
    assert len(fake.requests) == 4  # the first try and max_retries=3


def test_a_daily_429_is_not_retried_here(crm: HubSpotConnector, fake: FakeHubSpot) -> None:
    body = {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY", "message": "x"}
    fake.fail_next(429, body=body)

    with pytest.raises(TransientConnectorError, match="daily") as caught:
        crm.upsert_contact("ada@example.com", {})

    assert caught.value.retry_after is not None and len(fake.requests) == 1


def test_a_400_is_permanent_with_hubspots_message(crm: HubSpotConnector, fake: FakeHubSpot) -> None:
    with pytest.raises(PermanentConnectorError, match="not one of the allowed options"):
        crm.upsert_contact("ada@example.com", {"lifecyclestage": "bogus"})
    assert len(fake.requests) == 1


def test_a_wrong_token_is_permanent_and_not_retried(fake: FakeHubSpot, clock: FakeClock) -> None:
    crm = make_connector(fake, clock, token="pat-wrong")
    try:
        with pytest.raises(PermanentConnectorError, match=r"401.*INVALID_AUTHENTICATION"):
            crm.upsert_contact("ada@example.com", {})
    finally:
        crm.close()
    assert len(fake.requests) == 1


def test_a_5xx_is_retried_for_upserts_but_not_for_creating_a_task(
    crm: HubSpotConnector, fake: FakeHubSpot, clock: FakeClock
) -> None:
    fake.fail_next(503)
    crm.upsert_contact("ada@example.com", {})
    assert [r.status for r in fake.requests] == [503, 200]
    assert clock.sleeps == [0.5]  # backoff 1 s with equal jitter (jitter fixed at 0)

    fake.fail_next(500, method="POST", path="/crm/v3/objects/tasks")
    with pytest.raises(TransientConnectorError, match="server error 500"):
        crm.create_task("ada@example.com", "Call", "")

    assert [(r.method, r.status) for r in fake.requests[2:]] == [("GET", 200), ("POST", 500)]
    assert fake.tasks() == []


def test_an_unreachable_hubspot_is_transient(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = HubSpotRateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)
    crm = HubSpotConnector(
        token=TOKEN, base_url=f"http://127.0.0.1:{port}", limiter=limiter, max_retries=2
    )
    try:
        with pytest.raises(TransientConnectorError, match="unreachable"):
            crm.upsert_contact("ada@example.com", {})
    finally:
        crm.close()
    assert len(clock.sleeps) == 2


def test_a_timeout_creating_a_task_is_unknown_but_an_upsert_is_retried(
    fake: FakeHubSpot, clock: FakeClock
) -> None:
    crm = make_connector(fake, clock, timeout_s=0.2)
    try:
        fake.delay_next(0.5)
        record = crm.upsert_contact("ada@example.com", {})  # idempotent: retried, succeeds
        fake.delay_next(0.5, method="POST", path="/crm/v3/objects/tasks")
        with pytest.raises(DeliveryUnknownError, match="may have been done"):
            crm.create_task("ada@example.com", "Call", "")
    finally:
        crm.close()

    assert record.created is not None
    requests = fake.wait_for_requests(4)  # upsert twice, lookup, the task POST
    assert [r.path for r in requests].count(UPSERT) == 2
    assert len(fake.tasks()) == 1  # it was created: hence "unknown", never "failed"


# -- pacing against the fake's rate window ----------------------------------------------------


def test_the_limiter_keeps_250_requests_inside_the_window_without_a_429(
    clock: FakeClock,
) -> None:
    with FakeHubSpot(token=TOKEN, monotonic=clock.monotonic) as fake:
        crm = make_connector(fake, clock)
        try:
            for i in range(250):
                crm.upsert_contact(f"user{i}@example.com", {})
        finally:
            crm.close()
        statuses = [r.status for r in fake.requests]

    assert statuses.count(429) == 0 and len(statuses) == 250
    assert clock.now - 1_000.0 == pytest.approx(20.0)  # 100 at t=0, 100 at t=10, 50 at t=20


def test_the_limiter_adopts_a_lower_server_limit_from_the_headers(clock: FakeClock) -> None:
    limiter = HubSpotRateLimiter(max_per_interval=190, monotonic=clock.monotonic, sleep=clock.sleep)
    with FakeHubSpot(token=TOKEN, monotonic=clock.monotonic, max_per_interval=50) as fake:
        crm = make_connector(fake, clock, limiter=limiter)
        try:
            for i in range(120):
                crm.upsert_contact(f"user{i}@example.com", {})
        finally:
            crm.close()
        statuses = [r.status for r in fake.requests]

    assert statuses.count(429) == 0 and limiter.general.limit == 50


def test_without_a_limiter_match_the_fake_answers_429_and_the_connector_recovers(
    clock: FakeClock,
) -> None:
    # Another process has used the whole window: the first answer is a 429.
    with FakeHubSpot(token=TOKEN, monotonic=clock.monotonic, max_per_interval=5) as fake:
        for i in range(5):
            fake_crm = make_connector(fake, clock)
            fake_crm.upsert_contact(f"other{i}@example.com", {})
            fake_crm.close()
        crm = make_connector(fake, clock)
        try:
            crm.upsert_contact("ada@example.com", {})
        finally:
            crm.close()
        last = fake.requests[-2:]

    assert [r.status for r in last] == [429, 200]


def test_the_fake_answers_429_in_hubspots_shape_with_headers(clock: FakeClock) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        FakeHubSpot(token=TOKEN, monotonic=clock.monotonic, max_per_interval=2) as fake,
        httpx.Client(base_url=fake.url, headers=auth) as c,
    ):
        answers = [c.get("/crm/v3/objects/contacts/1") for _ in range(3)]
        clock.now += 10.0
        after = c.get("/crm/v3/objects/contacts/1")
        too_many = c.post(UPSERT, json={"inputs": [{}] * 101})

    assert [a.status_code for a in answers] == [404, 404, 429]
    assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    body = answers[2].json()
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert answers[2].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert after.status_code == 404
    assert too_many.status_code == 400 and "at most 100" in too_many.json()["message"]


# -- the limiter alone ------------------------------------------------------------------------


def test_a_rolling_window_frees_a_slot_when_the_oldest_grant_leaves(clock: FakeClock) -> None:
    window = RollingWindow(max_requests=3, interval_s=10.0, monotonic=clock.monotonic)

    grants = [window.try_acquire() for _ in range(3)]
    clock.now += 4.0
    assert grants == [0.0, 0.0, 0.0]
    assert window.try_acquire() == pytest.approx(6.0)
    clock.now += 6.0
    assert window.try_acquire() == 0.0
    assert window.in_window() == 1


def test_the_limiter_waits_on_the_injected_clock(clock: FakeClock) -> None:
    limiter = HubSpotRateLimiter(
        max_per_interval=2, interval_s=10.0, monotonic=clock.monotonic, sleep=clock.sleep
    )

    waits = [limiter.acquire() for _ in range(5)]

    assert waits == [0.0, 0.0, 10.0, 0.0, 10.0]
    assert limiter.waited_s == 20.0


def test_search_has_its_own_five_per_second_window(clock: FakeClock) -> None:
    limiter = HubSpotRateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)

    waits = [limiter.acquire(search=True) for _ in range(6)]

    assert waits == [0.0] * 5 + [1.0]
    assert limiter.general.in_window() == 6  # searches count in the 10-second window too


def test_headers_book_requests_made_elsewhere_and_adopt_the_interval(clock: FakeClock) -> None:
    limiter = HubSpotRateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)
    limiter.acquire()

    limiter.observe(
        {
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "40",
            "X-HubSpot-RateLimit-Interval-Milliseconds": "5000",
        }
    )

    assert limiter.general.in_window() == 60 and limiter.general.interval_s == 5.0
    limiter.observe({"X-HubSpot-RateLimit-Remaining": "0"})
    assert limiter.general.in_window() == 100
    assert limiter.acquire() == pytest.approx(5.0)
    limiter.observe({"Content-Type": "application/json"})  # no headers: nothing changes


def test_pause_holds_every_caller_back(clock: FakeClock) -> None:
    limiter = HubSpotRateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)

    limiter.pause(7.5)

    assert limiter.acquire() == pytest.approx(7.5)


def test_the_window_is_thread_safe(clock: FakeClock) -> None:
    window = RollingWindow(max_requests=100, interval_s=10.0, monotonic=clock.monotonic)
    granted: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        granted.append(sum(1 for _ in range(100) if window.try_acquire() == 0.0))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(granted) == 100


# -- configuration ----------------------------------------------------------------------------


def test_configuration_problems_are_reported_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="access token"):
        HubSpotConnector(token=" ")
    with pytest.raises(ConfigurationError, match="'decision' -> 'deal'"):
        HubSpotConnector(token=TOKEN, lifecycle_map={"decision": "deal"})


# -- webhooks ---------------------------------------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    daemon_threads = False
    received: list[tuple[str, str, dict[str, str], bytes]]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        uri = f"http://{self.headers['Host']}{self.path}"
        self.server.received.append(("POST", uri, dict(self.headers.items()), body))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _ReceiverHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("version", ["v3", "v2", "v1"])
def test_send_webhook_posts_a_batch_that_verify_hubspot_accepts(
    receiver: _Receiver, version: str
) -> None:
    host, port = receiver.server_address[:2]
    url = f"http://{host!s}:{port}/webhooks/hubspot?portal=1234567"
    events = [
        hubspot_webhook_event(
            "contact.propertyChange",
            101,
            property_name="lifecyclestage",
            property_value="customer",
        ),
        hubspot_webhook_event("contact.creation", 102),
    ]

    response = send_hubspot_webhook(
        url,
        events,
        client_secret="shh",
        signature_version=version,  # type: ignore[arg-type]
    )

    assert response.status_code == 204
    [(method, uri, headers, body)] = receiver.received
    assert json.loads(body)[0]["propertyValue"] == "customer"
    now = datetime.now(UTC)
    verify_hubspot(
        client_secret="shh",
        method=method,
        uri=uri,
        body=body,
        headers=headers,
        now=now,
        accept_v1_v2=True,
    )
    with pytest.raises(SignatureError):
        verify_hubspot(
            client_secret="other",
            method=method,
            uri=uri,
            body=body,
            headers=headers,
            now=now,
            accept_v1_v2=True,
        )


def test_an_old_v3_webhook_is_refused_as_stale(receiver: _Receiver) -> None:
    host, port = receiver.server_address[:2]
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp() * 1000)

    send_hubspot_webhook(
        f"http://{host!s}:{port}/hooks", [hubspot_webhook_event("contact.deletion", 7)],
        client_secret="shh", timestamp_ms=old,
    )  # fmt: skip

    [(method, uri, headers, body)] = receiver.received
    with pytest.raises(SignatureError) as caught:
        verify_hubspot(
            client_secret="shh",
            method=method,
            uri=uri,
            body=body,
            headers=headers,
            now=datetime.now(UTC),
        )
    assert caught.value.reason == "stale"


# -- public API -------------------------------------------------------------------------------


def test_the_crm_package_and_the_fakes_export_these_names() -> None:
    import connectors.crm
    import connectors.fakes

    assert sorted(connectors.crm.__all__) == sorted(
        [
            "CRMBatchResult",
            "CRMConnector",
            "CRMRecord",
            "DEFAULT_LIFECYCLE_MAP",
            "HUBSPOT_LIFECYCLE_ORDER",
            "HubSpotConnector",
            "HubSpotRateLimiter",
            "LifecycleUpdate",
            "PropertyValue",
            "RollingWindow",
        ]
    )
    assert {
        "FakeHubSpot",
        "HubSpotEngagement",
        "HubSpotRequest",
        "hubspot_webhook_event",
        "send_hubspot_webhook",
    } <= set(connectors.fakes.__all__)
    for name in connectors.crm.__all__:
        assert getattr(connectors.crm, name) is not None
