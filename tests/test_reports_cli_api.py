"""``journeyline report`` and ``GET /v1/reports``: the known history of ``test_reports``
shown as tables, JSON and a page of charts, from the command line and over HTTP, behind the
``reports:read`` scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api_keys import SCOPES
from tests.cli_support import invoke
from tests.test_api import Api, add_key, serve
from tests.test_reports import History, lived, report_of


@pytest.fixture
def history(sqlite_url: str, tmp_path: Path) -> Iterator[History]:
    with lived(sqlite_url, tmp_path) as history:
        yield history


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report's JSON without what depends on who made it: when, and (the CLI loads the
    shipped playbook, not the test's workflows) whether each workflow has a goal."""
    found = {k: v for k, v in report.items() if k not in ("generated_at", "since", "until")}
    found["goals"] = {
        **report["goals"],
        "workflows": [{**w, "has_goal": None} for w in report["goals"]["workflows"]],
    }
    return found


# --- the CLI ----------------------------------------------------------------------------------


def test_the_cli_json_is_the_report(
    history: History, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("--database-url", sqlite_url, "report", "--json", "--until", "2026-02-02")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["until"] == "2026-02-03T00:00:00Z"
    expected = report_of(history, until="2026-02-02").model_dump(mode="json")
    assert comparable(printed)["funnel"] == expected["funnel"]
    assert comparable(printed)["emails"] == expected["emails"]
    assert printed["nps"] == expected["nps"]
    assert printed["retention"] == expected["retention"]
    assert printed["revenue"] == expected["revenue"]
    # The CLI loads the shipped playbook, which has none of the test's workflows
    assert {w["has_goal"] for w in printed["goals"]["workflows"]} == {None}
    assert comparable(printed) == comparable(expected)


def test_the_cli_prints_tables_that_say_what_they_are_computed_from(
    history: History, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "220")
    html = tmp_path / "report.html"
    result = invoke("--database-url", sqlite_url, "report", "--html", str(html))
    assert result.exit_code == 0, result.output
    out = result.output
    for title in (
        "Funnel: contacts reaching each stage",
        "Email performance per workflow step (% of sent)",
        "Goal conversions per workflow",
        "A/B variants",
        "NPS",
        "Retention and churn",
        "Revenue and revenue per customer",
    ):
        assert title in out, title
    assert "From stage_transitions" in out and "From order.completed events" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert [c.strip() for c in rows["awareness"].split("│")[2:7]] == ["5", "5", "-", "1.0", "3"]
    assert [c.strip() for c in rows["purchase"].split("│")[2:5]] == ["2", "2", "67%"]
    # Emails: each workflow heads its steps; a step's row is sent, then shares of it
    emails = out.split("(% of sent)")[1].split("From email")[0].splitlines()
    assert any(line.split("│")[0].strip() == "welcome_series" for line in emails)
    (welcome,) = [line for line in emails if line.split("│")[0].strip() == "welcome"]
    cells = [c.strip() for c in welcome.split("│")]
    assert cells == ["welcome", "5", "40%", "20%", "0%", "0%", "0%", "20%"]
    assert [c.strip() for c in rows["EUR"].split("│")[2:6]] == ["3", "230.00", "2", "115.00"]
    assert "+25" in out
    assert f"HTML report: {html}" in out
    # And the page holds the charts a person would rather look at
    page = html.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") >= 3  # funnel, emails per step, NPS
    assert "aria-label='Funnel: contacts reaching each stage'" in page
    assert "welcome_series:welcome" in page and "too few to tell" in page


def test_the_cli_says_no_data_for_an_empty_period(
    history: History, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "--database-url", sqlite_url, "report", "--since", "2025-01-01", "--until", "2025-02-01"
    )
    assert result.exit_code == 0, result.output
    assert "No data in this period (2025-01-01 00:00 to 2025-02-02 00:00 UTC)" in result.output
    assert "Funnel" not in result.output


def test_the_cli_refuses_a_bad_since_naming_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("--database-url", sqlite_url, "report", "--since", "last week")
    assert result.exit_code == 2
    assert "--since" in result.output and "'last week'" in result.output
    backwards = invoke(
        "--database-url", sqlite_url, "report", "--since", "2026-02-01", "--until", "2026-01-01"
    )
    assert backwards.exit_code == 2 and "--until" in backwards.output


# --- the HTTP API -----------------------------------------------------------------------------


@pytest.fixture
def api(history: History) -> Iterator[Api]:
    runtime = history.runtime
    for served in serve(runtime, history.clock, None):  # type: ignore[arg-type]
        served.keys["analyst"] = add_key(runtime, "analyst", "reports:read")
        yield served


def test_reports_read_is_a_scope_a_key_may_hold() -> None:
    assert "reports:read" in SCOPES


def test_the_api_serves_the_report_to_a_key_with_the_scope(api: Api, history: History) -> None:
    # Without a key: 401; with a key lacking reports:read: 403 naming it
    assert api.http.get("/v1/reports").status_code == 401
    refused = api.http.get("/v1/reports", headers=api.auth("all"))
    assert refused.status_code == 403, refused.text
    assert "reports:read" in refused.json()["error"]["message"]
    # With it: the report, the same JSON the library gives
    answered = api.http.get(
        "/v1/reports",
        params={"since": "2026-01-08", "until": "2026-01-09"},
        headers=api.auth("analyst"),
    )
    assert answered.status_code == 200, answered.text
    expected = report_of(history, since="2026-01-08", until="2026-01-09").model_dump(mode="json")
    body = answered.json()
    assert body["since"] == "2026-01-08T00:00:00Z" and body["until"] == "2026-01-10T00:00:00Z"
    assert {k: v for k, v in body.items() if k != "generated_at"} == {
        k: v for k, v in expected.items() if k != "generated_at"
    }
    # And the dashboard page, under the same scope
    assert api.http.get("/v1/reports.html", headers=api.auth("all")).status_code == 403
    page = api.http.get("/v1/reports.html", headers=api.auth("analyst"))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and "Journeyline report" in page.text


def test_a_bad_since_is_422_naming_it(api: Api) -> None:
    bad = api.http.get("/v1/reports", params={"since": "yesterday"}, headers=api.auth("analyst"))
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "since"
    assert "'yesterday'" in bad.json()["error"]["message"]
    backwards = api.http.get(
        "/v1/reports",
        params={"since": "2026-02-01", "until": "2026-01-01"},
        headers=api.auth("analyst"),
    )
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "until"
    # A bad value without a key is still 401: the key comes first
    assert api.http.get("/v1/reports", params={"since": "yesterday"}).status_code == 401


def test_the_openapi_document_describes_the_endpoint(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    operation = schema["paths"]["/v1/reports"]["get"]
    assert operation["security"] == [{"ApiKey": []}]
    assert {p["name"] for p in operation["parameters"]} == {"since", "until"}
    assert {"401", "403", "422"} <= set(operation["responses"])
    report = schema["components"]["schemas"]["Report"]
    assert {"funnel", "emails", "goals", "nps", "retention", "revenue"} <= set(report["properties"])
    assert "reports:read" in schema["info"]["description"]
    assert "/v1/reports.html" in schema["paths"]
