"""The container setup, checked statically (no Docker engine runs on the test machines)."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).parent.parent / "docker"


def test_the_image_runs_as_a_non_root_user_on_a_slim_base() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"


def test_compose_has_every_part_with_health_checks_and_a_one_shot_migration() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "worker", "scheduler"}
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["journeyline", "db", "upgrade"]
    for name in ("api", "worker", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["JOURNEYLINE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["JOURNEYLINE_BROKER_URL"].startswith("redis://")
