"""The dashboard page (``GET /v1/reports.html``) is business data shown in a browser: it is
never cached on the way, never framed by another site, and runs nothing but its own inline
styles, whatever a workflow or an event type ever manages to put in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import make_runtime
from tests.test_api import Api, add_key, serve


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        for served in serve(runtime, clock, email):
            served.keys["analyst"] = add_key(runtime, "analyst", "reports:read")
            yield served
    finally:
        runtime.close()


def test_the_dashboard_page_is_not_cached_framed_or_scripted(api: Api) -> None:
    # When an analyst opens the dashboard
    page = api.http.get("/v1/reports.html", headers=api.auth("analyst"))
    # Then it says so to every cache, browser and frame on the way
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # nothing may run: the page has no script


def test_the_json_report_is_not_cached_either(api: Api) -> None:
    answer = api.http.get("/v1/reports", headers=api.auth("analyst"))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
