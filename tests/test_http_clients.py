"""Connectors give each worker thread its own pooled client (connectors/http_clients.py)."""

from __future__ import annotations

import threading

import httpx

from connectors import SendGridEmailConnector
from connectors.http_clients import ClientPerThread


def _in_thread(get: ClientPerThread) -> httpx.Client:
    found: list[httpx.Client] = []
    thread = threading.Thread(target=lambda: found.append(get.get()))
    thread.start()
    thread.join()
    return found[0]


def test_each_thread_keeps_its_own_client_and_close_closes_them_all() -> None:
    clients = ClientPerThread(httpx.Client)
    mine = clients.get()
    assert clients.get() is mine  # kept between requests: connections stay alive
    other = _in_thread(clients)
    assert other is not mine
    clients.close()
    assert mine.is_closed and other.is_closed
    assert clients.get() is not mine  # a closed one is replaced on next use
    clients.close()


def test_a_client_passed_in_is_shared_by_every_thread_and_left_open() -> None:
    shared = httpx.Client()
    clients = ClientPerThread(httpx.Client, shared=shared)
    assert clients.get() is shared and _in_thread(clients) is shared
    clients.close()
    assert not shared.is_closed
    shared.close()


def test_the_sendgrid_connector_uses_a_client_per_thread() -> None:
    connector = SendGridEmailConnector(api_key="SG.test", host="http://127.0.0.1:9")
    try:
        mine = connector.client
        other: list[httpx.Client] = []
        thread = threading.Thread(target=lambda: other.append(connector.client))
        thread.start()
        thread.join()
        assert other[0] is not mine
    finally:
        connector.close()
    assert mine.is_closed and other[0].is_closed
