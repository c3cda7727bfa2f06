"""A pooled ``httpx.Client`` per worker thread, for connectors shared by a worker's threads.

One client shared by the threads of a Dramatiq worker hits a race in httpcore 1.0.9's
connection pool (encode/httpcore#1110, open): a pass run by one thread can close an idle
connection the pool has just handed to another thread's request, and that request then
fails mid-flight (seen here: ``ReadError('[Errno 9] Bad file descriptor')`` once in a
million emails of ``bench.memory``, 8 threads per worker) or hangs until its read timeout.
A failure after the request went out is ``DeliveryUnknownError``: the email is not resent,
but an operator has to reconcile it. With a client per thread no pool is ever shared, and
each thread still keeps its connections alive between requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx


class ClientPerThread:
    """``get()`` returns the calling thread's client, made by ``make`` on first use; a
    client passed in (tests, a caller's own transport) is shared by every thread instead.
    ``close()`` closes every client made here."""

    def __init__(self, make: Callable[[], httpx.Client], shared: httpx.Client | None = None):
        self._make = make
        self._shared = shared
        self._local = threading.local()
        self._made: list[httpx.Client] = []
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        if self._shared is not None:
            return self._shared
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None or client.is_closed:
            client = self._make()
            self._local.client = client
            with self._lock:
                self._made.append(client)
        return client

    def close(self) -> None:
        """Close the clients made here (never a shared one: its owner closes it)."""
        with self._lock:
            made, self._made = self._made, []
        for client in made:
            client.close()
