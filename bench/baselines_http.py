"""The ingest benchmark's baseline: a bare FastAPI app whose ``POST /v1/events`` only parses
the same body (the same pydantic models as the real route) and answers 202.

``uvicorn bench.baselines_http:app`` serves it, as ``journeyline serve`` serves the real app:
the gap between the two is what authentication, validation, storage and enqueueing cost.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, FastAPI

from engine.api.events import EventsBody

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/events", status_code=202)
def post_events(body: Annotated[EventsBody, Body()]) -> dict[str, int]:
    events = getattr(body, "events", None)
    return {"accepted": len(events) if events is not None else 1}
