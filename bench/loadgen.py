"""An HTTP load generator for ``POST /v1/events``, run in its own process.

``python -m bench.loadgen`` reads a JSON spec on stdin and writes a JSON result on stdout,
so the process posting events never shares a GIL with the server it measures. ``run`` starts
it and returns the parsed result. Two shapes of load:

- ``closed``: ``connections`` clients each post the next batch as soon as the previous one
  was answered, until ``count`` events are posted (the most the server accepts);
- ``open``: a batch every ``tick_ms`` at a fixed ``rate`` events/s for ``seconds``, whatever
  the server's answers (open loop: a slow server does not slow the load down).

Events are ``{"email": "<prefix><i>@bench.example", "type": <type>}`` for consecutive ``i``
from ``start``. Every request is recorded as ``[sent, answered, first_i, n, status]``
(``time.time()`` seconds, comparable with other processes on this machine).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.services import REPO


def email(prefix: str, i: int) -> str:
    return f"{prefix}{i}@bench.example"


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by ``spec`` in a child process; its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        cwd=REPO,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _events(spec: dict[str, Any], first: int, n: int) -> dict[str, Any]:
    return {
        "events": [
            {"email": email(spec["prefix"], i), "type": spec["type"]}
            for i in range(first, first + n)
        ]
    }


async def _post(
    client: httpx.AsyncClient, spec: dict[str, Any], first: int, n: int, log: list[list[Any]]
) -> None:
    sent = time.time()
    status: int | str
    try:
        response = await client.post(spec["path"], json=_events(spec, first, n))
        status = response.status_code
    except httpx.HTTPError as exc:
        status = f"{type(exc).__name__}: {exc}"
    log.append([sent, time.time(), first, n, status])


async def _closed(spec: dict[str, Any], client: httpx.AsyncClient) -> list[list[Any]]:
    log: list[list[Any]] = []
    end = spec["start"] + spec["count"]
    cursor = spec["start"]

    async def one_connection() -> None:
        nonlocal cursor
        while cursor < end:
            first, n = cursor, min(spec["batch"], end - cursor)
            cursor += n
            await _post(client, spec, first, n, log)

    await asyncio.gather(*(one_connection() for _ in range(spec["connections"])))
    return log


async def _open(spec: dict[str, Any], client: httpx.AsyncClient) -> list[list[Any]]:
    log: list[list[Any]] = []
    tick_s = spec["tick_ms"] / 1000
    total = int(spec["rate"] * spec["seconds"])
    cursor, owed, tasks = spec["start"], 0.0, []
    start = time.monotonic()
    ticks = 0
    while cursor < spec["start"] + total:
        owed += spec["rate"] * tick_s
        n = min(int(owed), spec["start"] + total - cursor)
        if n:
            owed -= n
            tasks.append(asyncio.create_task(_post(client, spec, cursor, n, log)))
            cursor += n
        ticks += 1
        await asyncio.sleep(max(0.0, start + ticks * tick_s - time.monotonic()))
    await asyncio.gather(*tasks)
    return log


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=spec["connections"], max_keepalive_connections=64)
    headers = {"Authorization": f"Bearer {spec['key']}"} if spec.get("key") else {}
    async with httpx.AsyncClient(
        base_url=spec["url"], headers=headers, limits=limits, timeout=120
    ) as client:
        started = time.time()
        log = await (_open if spec["mode"] == "open" else _closed)(spec, client)
    return {"started": started, "requests": sorted(log)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(json.load(sys.stdin)))))
