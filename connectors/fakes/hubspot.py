"""A local fake of HubSpot's CRM v3 API, served over real HTTP on 127.0.0.1.

Point ``HubSpotConnector(base_url=fake.url)`` at it::

    with FakeHubSpot(token="pat-test") as fake:
        crm = HubSpotConnector(token="pat-test", base_url=fake.url)
        crm.upsert_contact("ada@example.com", {"firstname": "Ada"})
        assert fake.contact("ada@example.com")["firstname"] == "Ada"

What it serves: contacts (create, read and update by id or ``?idProperty=email``; batch
upsert by email, batch read and batch update by id or email, at most 100 inputs a call,
a duplicate id refusing the batch), tasks and notes with their association to a contact.
Batch answers follow HubSpot: a validation error anywhere fails the whole batch with 400 and
applies nothing; ids it does not know make a 207 multi-status answer (``errors`` with
``OBJECT_NOT_FOUND`` and ``context.ids``) while the rest are read or updated.
:meth:`FakeHubSpot.refuse_contact` makes one contact's writes fail validation, to test
that one bad input does not fail its batch; :meth:`FakeHubSpot.after_next` lets another
writer act between two of the client's calls, to test races; :meth:`FakeHubSpot.request_counts`
counts the requests per endpoint, to test batching.

It checks the Bearer token, keeps a rolling rate window (100 requests per 10 s unless told
otherwise; a 429 ``RATE_LIMIT`` / ``TEN_SECONDLY_ROLLING`` when full) and puts the
``X-HubSpot-RateLimit-*`` headers on every answer.

``lifecyclestage`` only moves forward. This fake answers a backward set with **400
VALIDATION_ERROR** (for a batch, the whole batch), so a connector that forgets to clear the
value first fails loudly in tests; setting ``""`` first, then the earlier value, works.
Errors use HubSpot's body: ``{"status":"error","message",..,"correlationId","category"}``.

:func:`send_webhook` posts a signed batch of webhook events (v3, or v1/v2) to a URL, as
HubSpot would, for testing a webhook receiver.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from connectors.webhooks.signatures import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_SIGNATURE_VERSION_HEADER,
    sign_hubspot_v3,
)

BATCH_LIMIT = 100
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
TASK_TO_CONTACT = 204
NOTE_TO_CONTACT = 202
_ASSOCIATION_TYPES = {"tasks": TASK_TO_CONTACT, "notes": NOTE_TO_CONTACT}
_CONTACTS = "/crm/v3/objects/contacts"
_DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate")


@dataclass(frozen=True)
class _Script:
    status: int
    headers: dict[str, str]
    body: Any  # the answer; for a delay, the seconds
    method: str | None
    path: str | None
    after_accepting: bool = False  # do the request, then answer the failure

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


def _take(scripts: deque[_Script], method: str, path: str) -> _Script | None:
    for script in scripts:
        if script.matches(method, path):
            scripts.remove(script)
            return script
    return None


@dataclass(frozen=True)
class HubSpotRequest:
    method: str
    path: str  # without the query string
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    status: int
    client_port: int  # the same port across requests means one kept-alive connection


@dataclass(frozen=True)
class HubSpotEngagement:
    """A task or a note, with the ids of the contacts it is associated with."""

    id: str
    kind: Literal["task", "note"]
    properties: Mapping[str, str]
    contact_ids: tuple[str, ...]


class HubSpotError(Exception):
    """Raised inside the fake to answer an error; never leaves it."""

    def __init__(self, status: int, message: str, category: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        }


class FakeHubSpot:
    """An in-thread HubSpot; use as a context manager (or call ``start`` / ``close``).

    ``max_per_interval=None`` turns the rate window off. ``monotonic`` is the window's clock:
    share a fake clock with the connector's limiter to test pacing without sleeping.
    """

    def __init__(
        self,
        *,
        token: str = "pat-fake-token",
        max_per_interval: int | None = 100,
        interval_s: float = 10.0,
        daily_limit: int = 250_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.max_per_interval = max_per_interval
        self.interval_s = interval_s
        self.daily_limit = daily_limit
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self._ids = itertools.count(101)
        self._window: deque[float] = deque()
        self._daily_used = 0
        self._contacts: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        self._history: dict[tuple[str, str], list[str]] = {}
        self._engagements: dict[str, HubSpotEngagement] = {}
        self._refused: dict[str, str] = {}  # email -> the validation message its writes get
        self._requests: list[HubSpotRequest] = []
        self._failures: deque[_Script] = deque()
        self._delays: deque[_Script] = deque()
        self._after: deque[_Script] = deque()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, host: str = "127.0.0.1", port: int = 0) -> FakeHubSpot:
        """Serve on ``host:port`` (port 0: any free port; read it back from ``url``)."""
        server = _Server((host, port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHubSpot is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # wake handler threads parked on kept-alive connections
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        assert self._thread is not None
        self._thread.join()
        self._server = None

    def __enter__(self) -> FakeHubSpot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        method: str | None = None,
        path: str | None = None,
        after_accepting: bool = False,
    ) -> None:
        """Answer the next ``count`` authenticated requests (those with this ``method`` and
        a path starting with ``path``, if given) with ``status``. A 429 gets HubSpot's
        RATE_LIMIT body; the rate-limit headers are added as usual. With
        ``after_accepting`` the request is done first (a task is created, a contact
        updated) and only its answer is lost, as behind a gateway that timed out."""
        if body is None:
            if status == 429:
                body = _rate_limit_body()
            else:
                category = "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR"
                body = HubSpotError(status, f"scripted failure {status}", category).body
        script = _Script(status, dict(headers or {}), body, method, path, after_accepting)
        with self._lock:
            self._failures.extend(script for _ in range(count))

    def delay_next(
        self, seconds: float, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Stall the next request (matching ``method`` / ``path`` prefix, if given)
        ``seconds`` before answering it; it is still processed."""
        with self._lock:
            self._delays.append(_Script(0, {}, seconds, method, path))

    def after_next(
        self,
        action: Callable[[FakeHubSpot], object],
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Run ``action(fake)`` once the next request (matching ``method`` / ``path`` prefix,
        if given) has been processed, before it is answered: another writer changing HubSpot
        between that call and the client's next one (e.g. ``fake.add_contact(...)``)."""
        with self._lock:
            self._after.append(_Script(0, {}, action, method, path))

    def refuse_contact(self, email: str, message: str = "") -> None:
        """Fail validation for every write naming this contact (by email or id) from now on,
        as HubSpot does for a value it will not take: a batch containing it fails whole."""
        with self._lock:
            self._refused[email.lower()] = message or f"Property values were not valid for {email}"

    def add_contact(self, email: str, **properties: str) -> str:
        """Seed a contact (no request recorded, no rate limit); return its id."""
        with self._lock:
            contact, _ = self._upsert(email.lower(), properties)
            return str(contact["id"])

    # -- inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[HubSpotRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, *, timeout_s: float = 5.0) -> list[HubSpotRequest]:
        """The recorded requests once there are at least ``count`` (a request is recorded
        when answered, so one the client gave up on shows up later)."""
        with self._recorded:
            self._recorded.wait_for(lambda: len(self._requests) >= count, timeout=timeout_s)
            return list(self._requests)

    def contact(self, email: str) -> dict[str, Any] | None:
        """The properties of the contact with this email, or None."""
        with self._lock:
            contact_id = self._by_email.get(email.lower())
            return None if contact_id is None else dict(self._contacts[contact_id]["properties"])

    def request_counts(self) -> dict[str, int]:
        """How many requests reached each endpoint, e.g. ``{"POST batch/upsert": 3}``
        (``contacts/{id}`` for a single contact; 429s and scripted failures included)."""
        counts: dict[str, int] = {}
        for request in self.requests:
            name = f"{request.method} {_endpoint(request.path)}"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def contact_count(self) -> int:
        with self._lock:
            return len(self._contacts)

    def history(self, email: str, name: str) -> list[str]:
        """Every value ``name`` was set to on this contact, oldest first (``""`` = cleared)."""
        with self._lock:
            contact_id = self._by_email.get(email.lower(), "")
            return list(self._history.get((contact_id, name), []))

    def tasks(self) -> list[HubSpotEngagement]:
        with self._lock:
            return [e for e in self._engagements.values() if e.kind == "task"]

    def notes(self) -> list[HubSpotEngagement]:
        with self._lock:
            return [e for e in self._engagements.values() if e.kind == "note"]

    # -- called from handler threads ---------------------------------------------------------

    def _respond(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any, Any]:
        """(status, headers, response body, parsed request body) for one request."""
        answer = self._answer(method, target, headers, raw)
        with self._lock:
            after = _take(self._after, method, urlsplit(target).path)
        if after is not None:
            after.body(self)
        return answer

    def _answer(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any, Any]:
        parts = urlsplit(target)
        path = parts.path
        with self._lock:
            delay = _take(self._delays, method, path)
        if delay is not None:
            self._stopping.wait(delay.body)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                error = HubSpotError(400, "Invalid input JSON", "VALIDATION_ERROR")
                return 400, {}, error.body, None
        if headers.get("authorization") != f"Bearer {self.token}":
            error = HubSpotError(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            )
            return 401, {}, error.body, body
        with self._lock:
            script = _take(self._failures, method, path)
            if script is None and not self._take_slot():
                return 429, self._limit_headers(), _rate_limit_body(), body
            limit_headers = self._limit_headers()
        if script is not None:
            if script.after_accepting:
                with contextlib.suppress(HubSpotError), self._lock:
                    self._route(method, path, query, body)
            return script.status, {**limit_headers, **script.headers}, script.body, body
        try:
            with self._lock:
                status, answer = self._route(method, path, query, body)
        except HubSpotError as error:
            return error.status, limit_headers, error.body, body
        return status, limit_headers, answer, body

    def _record(self, request: HubSpotRequest) -> None:
        with self._recorded:
            self._requests.append(request)
            self._recorded.notify_all()

    # -- rate window (under the lock) -------------------------------------------------------

    def _take_slot(self) -> bool:
        self._daily_used += 1
        if self.max_per_interval is None:
            return True
        now = self._monotonic()
        while self._window and self._window[0] <= now - self.interval_s:
            self._window.popleft()
        if len(self._window) >= self.max_per_interval:
            self._daily_used -= 1  # a refused request is not counted
            return False
        self._window.append(now)
        return True

    def _limit_headers(self) -> dict[str, str]:
        limit = self.max_per_interval if self.max_per_interval is not None else 10**9
        return {
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, limit - len(self._window))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.interval_s * 1000)),
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily_used)),
        }

    # -- the API (under the lock) -------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if segments[:3] != ["crm", "v3", "objects"] or len(segments) < 4:
            raise HubSpotError(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND")
        kind, rest = segments[3], segments[4:]
        if kind == "contacts":
            if rest == ["batch", "upsert"] and method == "POST":
                return 200, self._batch_upsert(body)
            if rest == ["batch", "read"] and method == "POST":
                return self._batch_read(body)
            if rest == ["batch", "update"] and method == "POST":
                return self._batch_update(body)
            if not rest and method == "POST":
                return 201, self._create_contact(body)
            if len(rest) == 1 and method in ("GET", "PATCH"):
                contact = self._find(rest[0], query.get("idProperty"))
                if method == "PATCH":
                    self._update(contact, _input_properties(body))
                    return 200, _contact_json(contact)
                wanted = query.get("properties")
                names = wanted.split(",") if wanted else list(_DEFAULT_PROPERTIES)
                return 200, _contact_json(contact, names)
        elif kind in _ASSOCIATION_TYPES:
            if not rest and method == "POST":
                return 201, self._create_engagement(kind, body)
            if len(rest) == 1 and method == "GET":
                found = self._engagements.get(rest[0])
                if found is None or f"{found.kind}s" != kind:
                    raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")
                return 200, _engagement_json(found)
        raise HubSpotError(405, f"{method} is not allowed on {path}", "METHOD_NOT_ALLOWED")

    def _find(self, key: str, id_property: str | None) -> dict[str, Any]:
        if id_property == "email":
            contact_id = self._by_email.get(key.lower())
        elif id_property in (None, "hs_object_id"):
            contact_id = key if key in self._contacts else None
        else:
            raise HubSpotError(400, f"Unsupported idProperty {id_property!r}", "VALIDATION_ERROR")
        if contact_id is None:
            raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")
        return self._contacts[contact_id]

    def _create_contact(self, body: Any) -> dict[str, Any]:
        properties = _input_properties(body)
        email = str(properties.get("email") or "").lower()
        if email and email in self._by_email:
            existing = self._by_email[email]
            raise HubSpotError(409, f"Contact already exists. Existing ID: {existing}", "CONFLICT")
        self._validate(None, properties)
        contact, _ = self._upsert(email or None, properties)
        return _contact_json(contact)

    def _batch_upsert(self, body: Any) -> dict[str, Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise HubSpotError(400, "inputs must be a non-empty array", "VALIDATION_ERROR")
        if len(inputs) > BATCH_LIMIT:
            raise HubSpotError(
                400,
                f"Batch input limit exceeded: {len(inputs)} inputs, at most {BATCH_LIMIT}",
                "VALIDATION_ERROR",
            )
        keys: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or item.get("idProperty") != "email":
                raise HubSpotError(400, "each input needs idProperty 'email'", "VALIDATION_ERROR")
            key = str(item.get("id") or "").lower()
            if "@" not in key:
                raise HubSpotError(400, f"Invalid email {key!r}", "VALIDATION_ERROR")
            keys.append(key)
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise HubSpotError(
                400, f"Duplicate IDs found in batch input: {duplicates}", "VALIDATION_ERROR"
            )
        # All or nothing: validate every input before applying any.
        for key, item in zip(keys, inputs, strict=True):
            existing = self._by_email.get(key)
            self._validate(
                self._contacts[existing] if existing else None,
                {**_input_properties(item), "email": key},
            )
        started = _now_iso()
        results = []
        for key, item in zip(keys, inputs, strict=True):
            contact, new = self._upsert(key, _input_properties(item))
            results.append({**_contact_json(contact), "new": new})
        return {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": _now_iso(),
        }

    def _batch_read(self, body: Any) -> tuple[int, dict[str, Any]]:
        inputs = _batch_inputs(body)
        id_property = body.get("idProperty")
        keys = [str((item or {}).get("id") or "") for item in inputs]
        _refuse_duplicates([k.lower() if id_property == "email" else k for k in keys])
        wanted = body.get("properties") or list(_DEFAULT_PROPERTIES)
        started = _now_iso()
        results, unknown = [], []
        for key in keys:
            try:
                results.append(_contact_json(self._find(key, id_property), wanted))
            except HubSpotError as error:
                if error.status != 404:
                    raise
                unknown.append(key)
        return _batch_answer(results, unknown, started, "get")

    def _batch_update(self, body: Any) -> tuple[int, dict[str, Any]]:
        inputs = _batch_inputs(body)
        found: list[tuple[dict[str, Any], dict[str, str]]] = []
        unknown: list[str] = []
        keys = []
        for item in inputs:
            if not isinstance(item, dict):
                raise HubSpotError(400, "each input must be an object", "VALIDATION_ERROR")
            id_property = item.get("idProperty")
            key = str(item.get("id") or "")
            keys.append(key.lower() if id_property == "email" else key)
            try:
                contact = self._find(key, id_property)
            except HubSpotError as error:
                if error.status != 404:
                    raise
                unknown.append(key)
                continue
            found.append((contact, _input_properties(item)))
        _refuse_duplicates(keys)
        # All or nothing for what it can validate: every input before any is applied.
        for contact, properties in found:
            self._validate(contact, properties)
        started = _now_iso()
        for contact, properties in found:
            self._update(contact, properties, validated=True)
        results = [_contact_json(contact) for contact, _ in found]
        return _batch_answer(results, unknown, started, "update")

    def _upsert(self, email: str | None, properties: Mapping[str, str]) -> tuple[dict, bool]:
        contact_id = self._by_email.get(email) if email else None
        if contact_id is not None:
            contact = self._contacts[contact_id]
            self._update(contact, properties, validated=True)
            return contact, False
        contact_id = str(next(self._ids))
        now = _now_iso()
        contact = {
            "id": contact_id,
            "properties": {"hs_object_id": contact_id, "createdate": now},
            "createdAt": now,
            "updatedAt": now,
        }
        self._contacts[contact_id] = contact
        if email:
            properties = {**properties, "email": email}  # _update indexes it
        self._update(contact, properties, validated=True)
        return contact, True

    def _update(
        self, contact: dict[str, Any], properties: Mapping[str, str], *, validated: bool = False
    ) -> None:
        if not validated:
            self._validate(contact, properties)
        email = properties.get("email")
        if email and email.lower() != contact["properties"].get("email"):
            if email.lower() in self._by_email:
                raise HubSpotError(409, "A contact with this email already exists", "CONFLICT")
            self._by_email.pop(contact["properties"].get("email") or "", None)
            self._by_email[email.lower()] = contact["id"]
        now = _now_iso()
        for name, value in properties.items():
            value = value.lower() if name == "email" else value
            contact["properties"][name] = value
            self._history.setdefault((contact["id"], name), []).append(value)
        contact["properties"]["lastmodifieddate"] = now
        contact["updatedAt"] = now

    def _validate(self, contact: dict[str, Any] | None, properties: Mapping[str, str]) -> None:
        email = str(
            (contact or {}).get("properties", {}).get("email") or properties.get("email") or ""
        ).lower()
        if email in self._refused:
            raise HubSpotError(400, self._refused[email], "VALIDATION_ERROR")
        stage = properties.get("lifecyclestage")
        if stage is None or stage == "":
            return
        if stage not in LIFECYCLE_STAGES:
            raise HubSpotError(
                400,
                f"Property values were not valid: {stage!r} was not one of the allowed "
                f"options for lifecyclestage: {list(LIFECYCLE_STAGES)}",
                "VALIDATION_ERROR",
            )
        current = (contact or {}).get("properties", {}).get("lifecyclestage") or ""
        if current and LIFECYCLE_STAGES.index(stage) < LIFECYCLE_STAGES.index(current):
            raise HubSpotError(
                400,
                f"Property values were not valid: lifecyclestage cannot move backward from "
                f"{current!r} to {stage!r}; set it to '' first",
                "VALIDATION_ERROR",
            )

    def _create_engagement(self, kind: str, body: Any) -> dict[str, Any]:
        properties = _input_properties(body)
        if not properties.get("hs_timestamp"):
            raise HubSpotError(400, "hs_timestamp is required", "VALIDATION_ERROR")
        contact_ids: list[str] = []
        for association in body.get("associations") or []:
            target = str((association.get("to") or {}).get("id", ""))
            types = association.get("types") or []
            expected = _ASSOCIATION_TYPES[kind]
            if not any(t.get("associationTypeId") == expected for t in types):
                raise HubSpotError(
                    400,
                    f"{kind} to contacts needs associationTypeId {expected}",
                    "VALIDATION_ERROR",
                )
            if target not in self._contacts:
                raise HubSpotError(
                    400, f"No contact with id {target} to associate", "VALIDATION_ERROR"
                )
            contact_ids.append(target)
        engagement = HubSpotEngagement(
            id=str(next(self._ids)),
            kind="task" if kind == "tasks" else "note",
            properties=dict(properties),
            contact_ids=tuple(contact_ids),
        )
        self._engagements[engagement.id] = engagement
        return _engagement_json(engagement)


def _batch_inputs(body: Any) -> list[Any]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise HubSpotError(400, "inputs must be a non-empty array", "VALIDATION_ERROR")
    if len(inputs) > BATCH_LIMIT:
        raise HubSpotError(
            400,
            f"Batch input limit exceeded: {len(inputs)} inputs, at most {BATCH_LIMIT}",
            "VALIDATION_ERROR",
        )
    return inputs


def _refuse_duplicates(keys: Sequence[str]) -> None:
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise HubSpotError(
            400, f"Duplicate IDs found in batch input: {duplicates}", "VALIDATION_ERROR"
        )


def _batch_answer(
    results: list[dict[str, Any]], unknown: list[str], started: str, verb: str
) -> tuple[int, dict[str, Any]]:
    """200 when every input was found, else 207 multi-status naming the unknown ids."""
    answer: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": _now_iso(),
    }
    if not unknown:
        return 200, answer
    answer["numErrors"] = 1
    answer["errors"] = [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not {verb} some CONTACT objects, they may be deleted or not "
            "exist. Check that ids are valid.",
            "context": {"ids": unknown},
        }
    ]
    return 207, answer


def _endpoint(path: str) -> str:
    rest = path.removeprefix(_CONTACTS).strip("/")
    if path.startswith(_CONTACTS) and rest and not rest.startswith("batch/"):
        return "contacts/{id}"
    return rest if path.startswith(_CONTACTS) and rest else path


def _input_properties(body: Any) -> dict[str, str]:
    properties = body.get("properties") if isinstance(body, dict) else None
    if not isinstance(properties, dict):
        raise HubSpotError(400, "properties must be an object", "VALIDATION_ERROR")
    return {str(k): "" if v is None else str(v) for k, v in properties.items()}


def _contact_json(contact: Mapping[str, Any], names: Sequence[str] | None = None) -> dict:
    properties = contact["properties"]
    shown = dict(properties) if names is None else {n: properties.get(n) for n in names}
    return {
        "id": contact["id"],
        "properties": shown,
        "createdAt": contact["createdAt"],
        "updatedAt": contact["updatedAt"],
        "archived": False,
    }


def _engagement_json(engagement: HubSpotEngagement) -> dict[str, Any]:
    now = _now_iso()
    return {
        "id": engagement.id,
        "properties": dict(engagement.properties),
        "createdAt": now,
        "updatedAt": now,
        "archived": False,
    }


def _rate_limit_body() -> dict[str, Any]:
    return {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": "TEN_SECONDLY_ROLLING",
        "groupName": "api-calls-tensecondly",
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- webhooks ---------------------------------------------------------------------------------


def webhook_event(
    subscription_type: str,
    object_id: int | str,
    *,
    property_name: str | None = None,
    property_value: str | None = None,
    occurred_at_ms: int | None = None,
    event_id: int | None = None,
    change_source: str = "CRM",
    portal_id: int = 1234567,
    app_id: int = 7654321,
    subscription_id: int = 1,
    attempt_number: int = 0,
) -> dict[str, Any]:
    """One event in HubSpot's webhook shape, e.g. ``webhook_event("contact.propertyChange",
    101, property_name="lifecyclestage", property_value="customer")``."""
    event: dict[str, Any] = {
        "eventId": event_id if event_id is not None else uuid.uuid4().int % 10**10,
        "subscriptionId": subscription_id,
        "portalId": portal_id,
        "appId": app_id,
        "occurredAt": occurred_at_ms if occurred_at_ms is not None else int(time.time() * 1000),
        "subscriptionType": subscription_type,
        "attemptNumber": attempt_number,
        "objectId": int(object_id),
        "changeSource": change_source,
    }
    if property_name is not None:
        event["propertyName"] = property_name
        event["propertyValue"] = property_value
    return event


def send_webhook(
    url: str,
    events: Iterable[Mapping[str, Any]],
    *,
    client_secret: str,
    signature_version: Literal["v1", "v2", "v3"] = "v3",
    timestamp_ms: int | None = None,
    client: httpx.Client | None = None,
    timeout_s: float = 5.0,
    max_attempts: int = 1,
    duplicates: int = 0,
) -> httpx.Response:
    """POST ``events`` to ``url`` as one HubSpot webhook batch, signed with ``client_secret``.

    The body is the compact JSON array; the signed URI is ``url`` as it goes on the wire.
    ``timestamp_ms`` (v3 only) defaults to now; pass an old one to test replay protection.
    As HubSpot does, a 4xx or 5xx answer is retried (immediately here, up to ``max_attempts``
    POSTs in all) with each event's ``attemptNumber`` raised by one and signed anew; after a
    2xx, ``duplicates`` more identical deliveries follow. Returns the last answer.
    """
    batch = [dict(event) for event in events]
    response = _post_webhook(
        url, batch, client_secret, signature_version, timestamp_ms, client, timeout_s
    )
    for _ in range(max_attempts - 1):
        if response.is_success:
            break
        for event in batch:
            event["attemptNumber"] = int(event.get("attemptNumber", 0)) + 1
        response = _post_webhook(
            url, batch, client_secret, signature_version, timestamp_ms, client, timeout_s
        )
    if response.is_success:
        for _ in range(duplicates):
            response = _post_webhook(
                url, batch, client_secret, signature_version, timestamp_ms, client, timeout_s
            )
    return response


def _post_webhook(
    url: str,
    events: list[dict[str, Any]],
    client_secret: str,
    signature_version: str,
    timestamp_ms: int | None,
    client: httpx.Client | None,
    timeout_s: float,
) -> httpx.Response:
    body = json.dumps(events, separators=(",", ":")).encode("utf-8")
    target = httpx.URL(url)
    uri = str(target)
    headers = {"Content-Type": "application/json"}
    if signature_version == "v3":
        stamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        headers.update(
            sign_hubspot_v3(
                client_secret=client_secret, method="POST", uri=uri, body=body, timestamp_ms=stamp
            )
        )
    elif signature_version in ("v1", "v2"):
        prefix = client_secret if signature_version == "v1" else client_secret + "POST" + uri
        headers[HUBSPOT_SIGNATURE_HEADER] = hashlib.sha256(prefix.encode() + body).hexdigest()
        headers[HUBSPOT_SIGNATURE_VERSION_HEADER] = signature_version
    else:
        raise ValueError(f"unknown HubSpot signature version {signature_version!r}")
    if client is not None:
        return client.post(target, content=body, headers=headers, timeout=timeout_s)
    with httpx.Client(timeout=timeout_s) as own:
        return own.post(target, content=body, headers=headers)


# -- the server -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins handler threads: no stray sockets
    fake: FakeHubSpot

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the script, not a server bug.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    # Buffer the answer and send it in one segment: headers and body written separately
    # meet the client's delayed ACK (Nagle), ~40 ms a request on a kept-alive connection.
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake._sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, answer, body = fake._respond(method, self.path, headers, raw)
        payload = b"" if answer is None else json.dumps(answer).encode()
        parts = urlsplit(self.path)
        fake._record(
            HubSpotRequest(
                method=method,
                path=parts.path,
                query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                headers=headers,
                body=body,
                status=status,
                client_port=self.client_address[1],
            )
        )
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
