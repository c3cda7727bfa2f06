"""The container setup, checked statically (no Docker engine runs on the test machines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.api import ApiSettings
from engine.settings import Settings, env_var

DOCKER = Path(__file__).parent.parent / "docker"


def test_the_image_runs_as_a_non_root_user_on_a_slim_base() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"


def test_every_volume_the_services_write_is_a_folder_of_the_image_they_own() -> None:
    """A named volume takes the owner of the image's folder it is mounted on; a folder the
    image lacks is created for root, and the non-root services could not write to it."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")][-1]
    mounted = {
        volume.split(":")[1]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str)
        and volume.split(":")[0] in (compose.get("volumes") or {})
        and volume.split(":")[1].startswith("/app")
    }
    assert mounted, "the compose file mounts no volume under /app"
    for folder in mounted:
        assert f"mkdir -p {folder}" in dockerfile, folder
        assert f"chown {user}:{user} {folder}" in dockerfile, folder


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


def compose_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


LONG_RUNNING = ("postgres", "redis", "api", "worker", "scheduler")


def test_long_running_services_come_back_after_they_die_and_the_migration_does_not() -> None:
    # A worker whose child process is killed (OOM) stops as a whole: only a restart policy
    # brings it back.
    services = compose_file()["services"]
    for name in LONG_RUNNING:
        assert services[name].get("restart") in ("unless-stopped", "always"), name
    assert services["migrate"]["restart"] == "no"


FIXED = {
    "JOURNEYLINE_DATABASE_URL": "postgresql+psycopg://",
    "JOURNEYLINE_BROKER_URL": "redis://",
}
"""Settings the compose file sets itself, and how their values start."""

NOT_PASSED = {
    "JOURNEYLINE_OUTBOX_DIR": "the image sets it: the outbox volume",
    "JOURNEYLINE_CRM_OUTBOX_DIR": "<outbox>/crm, inside the outbox volume",
    "JOURNEYLINE_WORKER_THREADS": "the in-process worker's (stub://); `worker` takes --threads",
}
"""Settings the compose file leaves alone, and why."""


def every_setting() -> set[str]:
    return {env_var(name) for name in Settings.model_fields} | {
        env_var(name, ApiSettings) for name in ApiSettings.model_fields
    }


def test_compose_passes_every_setting_a_deployment_needs_through_from_the_shell() -> None:
    compose = compose_file()
    shared = compose["x-journeyline"]["environment"]
    # Every setting is passed through, fixed here, or left alone for a stated reason
    settings = every_setting()
    assert NOT_PASSED.keys() <= settings, "a setting left alone no longer exists"
    assert set(shared) == settings - NOT_PASSED.keys(), (
        "compose.yaml's environment and engine/settings.py disagree: pass the new setting "
        "through (or say in NOT_PASSED why not)"
    )
    # The webhook endpoints' keys among them (without them they answer 503)
    assert {
        "JOURNEYLINE_SENDGRID_WEBHOOK_PUBLIC_KEY",
        "JOURNEYLINE_INBOUND_WEBHOOK_SECRETS",
        "JOURNEYLINE_HUBSPOT_CLIENT_SECRET",
    } <= set(shared)
    # A passed-through one has no value of its own: unset in the shell, it stays unset in
    # the container and the engine's default applies (an empty string would not parse as a
    # number or as JSON)
    for name, value in shared.items():
        if name in FIXED:
            assert value.startswith(FIXED[name]), name
        else:
            assert value is None, f"{name}: {value!r}"
    # Every Journeyline service gets the whole list; the image places the outbox
    for name in ("migrate", "api", "worker", "scheduler"):
        assert compose["services"][name]["environment"] == shared, name
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "JOURNEYLINE_OUTBOX_DIR=/app/outbox" in dockerfile


def test_workers_and_the_scheduler_get_time_to_finish_what_they_are_doing() -> None:
    # Docker's default is 10 s before SIGKILL: a worker killed in the middle of a batched
    # SendGrid request (10 s timeout) leaves its actions unknown, never sent again.
    services = compose_file()["services"]
    for name in ("worker", "scheduler"):
        grace = services[name].get("stop_grace_period", "10s")
        assert grace.endswith("s") and int(grace[:-1]) >= 60, name
