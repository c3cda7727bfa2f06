"""Settings an operator gets wrong are named, not ignored: a misspelt ``JOURNEYLINE_*``
variable (which would leave the default, e.g. the outbox connector, in production) and a log
level that is not one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from engine.api.app import ApiSettings
from engine.settings import (
    API_SETTINGS,
    Settings,
    describe_settings_error,
    env_var,
    environment_problems,
)


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings()
    return describe_settings_error(refused.value)


def test_a_misspelt_variable_is_refused_with_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOURNEYLINE_EMAIL_CONECTOR", "sendgrid")
    assert environment_problems(tmp_path / ".env") == [
        "unknown setting JOURNEYLINE_EMAIL_CONECTOR (did you mean "
        "JOURNEYLINE_EMAIL_CONNECTOR?); README.md, Configuration, lists them"
    ]


def test_an_unknown_variable_unlike_any_setting_is_refused_without_a_guess(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOURNEYLINE_COLOUR", "blue")
    (found,) = environment_problems(tmp_path / ".env")
    assert found.startswith("unknown setting JOURNEYLINE_COLOUR;")


def test_a_misspelt_line_of_the_env_file_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nJOURNEYLINE_LOG_LEVEL=INFO\nexport JOURNEYLINE_MAX_ATEMPTS=3\n")
    (found,) = environment_problems(env_file)
    assert "JOURNEYLINE_MAX_ATEMPTS (did you mean JOURNEYLINE_MAX_ATTEMPTS?)" in found


def test_the_settings_model_itself_takes_other_variables_so_a_library_user_is_not_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNEYLINE_DEPLOY_ENV", "staging")
    assert Settings().log_level == "INFO"


def test_the_commands_refuse_an_unknown_variable(tmp_path: Path) -> None:
    env = {**os.environ, "JOURNEYLINE_EMAIL_CONECTOR": "sendgrid"}
    for command in (
        [sys.executable, "-m", "engine.cli", "actions"],
        [sys.executable, "-c", "import engine.worker"],
    ):
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert "JOURNEYLINE_EMAIL_CONNECTOR?" in " ".join(done.stderr.split())


def test_a_refused_value_never_echoes_the_other_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYLINE_SENDGRID_API_KEY", "SG.topsecret")
    monkeypatch.setenv("JOURNEYLINE_MAX_ATTEMPTS", "abc")
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings()
    assert "topsecret" not in str(refused.value)
    assert describe_settings_error(refused.value) == [
        "JOURNEYLINE_MAX_ATTEMPTS='abc': must be an integer"
    ]


def test_the_test_suites_variables_and_the_http_services_settings_are_not_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOURNEYLINE_TEST_POSTGRES_URL", "postgresql://x")
    monkeypatch.setenv("JOURNEYLINE_UPDATE_GOLDEN", "1")
    monkeypatch.setenv("JOURNEYLINE_API_MAX_BODY_BYTES", "2048")
    assert environment_problems(tmp_path / ".env") == []


def test_the_http_services_settings_are_all_known() -> None:
    assert set(API_SETTINGS) == {env_var(f, ApiSettings) for f in ApiSettings.model_fields}


def test_a_log_level_must_be_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _problems(monkeypatch, JOURNEYLINE_LOG_LEVEL="LOUD") == [
        "JOURNEYLINE_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    ]
    monkeypatch.setenv("JOURNEYLINE_LOG_LEVEL", "warning")
    assert Settings().log_level == "WARNING"


def test_a_worker_follows_the_log_level(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOURNEYLINE_DATABASE_URL": f"sqlite:///{tmp_path}/jl.db",
        "JOURNEYLINE_BROKER_URL": "inline://",
        "JOURNEYLINE_LOG_LEVEL": "ERROR",
    }
    script = (
        "import logging, engine.worker; "
        "print(logging.getLogger('engine.pipeline').getEffectiveLevel())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(logging.ERROR)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("notaurl", "'notaurl' is not a database URL"),
        ("mysql://x/y", "'mysql://x/y' names a database Journeyline does not run on"),
    ],
)
def test_a_database_url_that_gives_no_database_is_one_line(url: str, why: str) -> None:
    env = {**os.environ, "JOURNEYLINE_DATABASE_URL": url, "JOURNEYLINE_BROKER_URL": "inline://"}
    for command in (
        [sys.executable, "-m", "engine.cli", "actions"],
        [sys.executable, "-c", "import engine.worker"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert why in " ".join(done.stderr.split())


def test_a_hubspot_lifecycle_override_for_no_stage_is_refused(tmp_path: Path) -> None:
    from engine.errors import ConfigurationError
    from engine.runtime import Runtime

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/jl.db",
        broker_url="inline://",
        crm_connector="hubspot",
        hubspot_token="x",
        hubspot_lifecycle_map={"decison": "opportunity"},
    )
    with pytest.raises(ConfigurationError) as refused:
        Runtime(settings)
    assert str(refused.value).startswith(
        "JOURNEYLINE_HUBSPOT_LIFECYCLE_MAP: 'decison' is not a stage of the journey; its "
        "stages: awareness, consideration, decision,"
    )


def test_settings_shown_in_a_log_or_a_traceback_hold_no_secret() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://jl:db-pass@db:5432/jl",
        broker_url="redis://:redis-pass@cache:6379/0",
        sendgrid_api_key="SG.secret-key",
        hubspot_token="pat-secret-token",
        hubspot_client_secret="client-secret",
        webhook_secret="hook-secret",
        unsubscribe_secret="u" * 32,
        inbound_webhook_secrets={"pipedrive": "inbound-secret"},
    )
    for shown in (repr(settings), str(settings)):
        for secret in ("db-pass", "redis-pass", "SG.secret-key", "pat-secret-token",
                       "client-secret", "hook-secret", "u" * 32, "inbound-secret"):  # fmt: skip
            assert secret not in shown
        assert "sendgrid_api_key='***'" in shown
        assert "db:5432/jl" in shown  # what is not a secret still shows
