"""Settings, read from ``JOURNEYLINE_*`` environment variables (and a ``.env`` file).

Every field here is documented in README.md under "Configuration".
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from engine.urls import redact_url

WORKER_POLL_MS = 100
"""``Settings.worker_poll_ms``'s default. Dramatiq's Redis consumer backs off up to its worker
timeout (1 s) while a queue is empty; at moderate load that wait dominated the latency from an
event to its email (bench.end_to_end, 50% load: p50 618 -> 152 ms with 100)."""


CONTACTS_PER_JOB = 100
"""``Settings.contacts_per_job``'s default: contacts per ``process_contacts`` job when a batch
of events is enqueued. A track API batch of 100 is one job: bench.end_to_end (10,000 events)
sustained 263 events/s with 10 per job and 431 with 100, p99 at 50% load 152 -> 777 ms."""


WORKER_THREADS = 4
"""Threads per worker process, for ``journeyline worker`` and the in-process worker. The jobs
are mostly CPU-bound Python: a few threads keep a core busy while others wait on the
database or an HTTP call; more contend for the GIL. bench.end_to_end on 2 cores, 2
processes: 2, 3, 4 and 6 threads 1,086-1,147 events/s, 8 threads 744-921 (one run 1,067)."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

API_SETTINGS = ("JOURNEYLINE_API_MAX_BODY_BYTES", "JOURNEYLINE_API_PUBLIC_URL")
"""The HTTP service's settings (``engine.api.app.ApiSettings``, not imported here: it would
load the web framework into every command); a test keeps the two lists equal."""
NOT_SETTINGS_PREFIXES = ("JOURNEYLINE_TEST_",)
"""Variables of this project that are not settings: the test suite's service URLs."""
NOT_SETTINGS = frozenset({"JOURNEYLINE_UPDATE_GOLDEN"})
"""The test harness's "accept the new golden journeys" switch."""


def environment_problems(env_file: Path = Path(".env")) -> list[str]:
    """The ``JOURNEYLINE_*`` names in the environment or in ``env_file`` that set nothing
    (``unknown_variables``). The commands and the workers refuse to start on them; the
    ``Settings`` model itself does not, so a library user's own variables never break it."""
    names = dict(os.environ)
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8", errors="replace").splitlines():
            name = line.strip().removeprefix("export ").split("=", 1)[0].strip()
            if name and not name.startswith("#") and "=" in line:
                names.setdefault(name, "")
    return unknown_variables(names)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``JOURNEYLINE_*`` variables that set nothing, each with the setting it was probably
    meant to be: a misspelt ``JOURNEYLINE_EMAIL_CONECTOR`` would otherwise leave the outbox
    connector in place, and emails "sent" to a folder in production."""
    known = {env_var(name) for name in Settings.model_fields} | set(API_SETTINGS)
    found = []
    for name in sorted(environ):
        if not name.startswith("JOURNEYLINE_") or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        found.append(f"unknown setting {name}{hint}; README.md, Configuration, lists them")
    return found


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value is named by its variable, never echoed with
    # every other setting (API keys, tokens) as pydantic's message would.
    model_config = SettingsConfigDict(
        env_prefix="JOURNEYLINE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        default="sqlite:///journeyline.db",
        description="SQLAlchemy URL. SQLite is the embedded default; use postgresql+psycopg:// "
        "in production.",
    )
    broker_url: str = Field(
        default="stub://",
        description="stub:// (in-process broker and worker threads), redis://..., amqp://...",
    )
    workflows: str = Field(
        default="workflows",
        description="Python module holding STAGES, RULES and WORKFLOWS.",
    )
    templates_dir: Path | None = Field(
        default=None,
        description="Folder of Jinja2 email templates; default: the templates/ folder beside "
        "the workflows module.",
    )
    email_connector: str = Field(
        default="outbox",
        description="outbox, recording, sendgrid, or module:factory (a callable taking these "
        "settings and returning an EmailConnector of your own).",
    )
    outbox_dir: Path = Field(default=Path("outbox"), description="Where the outbox writes .eml.")
    sendgrid_api_key: str | None = Field(
        default=None, description="SendGrid API key; required when email_connector=sendgrid."
    )
    sendgrid_host: str = Field(
        default="https://api.sendgrid.com", description="SendGrid API base URL (a fake in tests)."
    )
    sendgrid_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Per-request timeout; a read timeout marks a send unknown."
    )
    sendgrid_sandbox: bool = Field(
        default=False, description="Send with mail_settings.sandbox_mode: validated, not delivered."
    )
    sendgrid_batch_size: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Recipients per SendGrid request for broadcast sends (personalizations); "
        "1 turns batching off.",
    )
    sendgrid_substitutions: bool = Field(
        default=True,
        description="Personalised marketing emails of one step share batch requests, the "
        "contact's fields going in as substitution tags; false: a request per distinct "
        "rendering.",
    )
    sendgrid_unsubscribe_group: int | None = Field(
        default=None,
        ge=1,
        description="SendGrid unsubscribe group id (asm.group_id) put on marketing email only; "
        "transactional email never carries it.",
    )
    crm_connector: str = Field(
        default="outbox",
        description="outbox (CRM updates and tasks as JSON files), hubspot, none (CRM "
        "steps fail with a clear error), or module:factory (a callable taking these settings "
        "and returning a CRMConnector of your own).",
    )
    hubspot_token: str | None = Field(default=None, description="HubSpot private app token.")
    hubspot_base_url: str = Field(default="https://api.hubapi.com")
    hubspot_max_per_interval: int = Field(
        default=100, ge=1, description="Requests per 10 s (190 Pro/Enterprise, 250 add-on)."
    )
    hubspot_timeout_seconds: float = Field(default=10.0, gt=0)
    hubspot_max_retries: int = Field(default=3, ge=0)
    hubspot_lifecycle_map: dict[str, str] = Field(
        default_factory=dict,
        description='JSON overrides of stage -> lifecyclestage, e.g. {"decision":"opportunity"}.',
    )
    hubspot_batch_size: int = Field(
        default=100,
        ge=1,
        le=100,
        description="update_crm actions per HubSpot batch job (HubSpot takes 100 inputs a "
        "call); 1 turns batching off.",
    )
    hubspot_allow_backward: bool = Field(
        default=False,
        description="update_crm steps may move lifecyclestage backwards (cleared, then set); "
        "by default a backward move is skipped.",
    )
    hubspot_score_property: str = Field(
        default="journeyline_score",
        description="HubSpot contact property that mirrors our lead score ('' to skip).",
    )
    hubspot_workflow_property: str = Field(
        default="journeyline_last_workflow",
        description="HubSpot contact property naming the last workflow to update it ('' to skip).",
    )
    hubspot_client_secret: str | None = Field(
        default=None, description="HubSpot app client secret: verifies inbound webhooks."
    )
    hubspot_accept_v1_v2: bool = Field(
        default=False,
        description="Accept HubSpot webhook signatures v1 and v2 (no timestamp: replayable "
        "at any time) from senders that sign nothing else; app webhooks sign v3.",
    )
    hubspot_inbound_stage_map: dict[str, str] = Field(
        default_factory=dict,
        description="JSON overrides of HubSpot lifecyclestage value -> our stage, for inbound "
        'webhooks, e.g. {"customer":"purchase","trialuser":"decision"}.',
    )
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid Event Webhook verification key (base64, from Mail Settings): "
        "verifies POST /v1/webhooks/sendgrid.",
    )
    webhook_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        description="Signed inbound webhooks older or newer than this are refused as stale.",
    )
    inbound_sources: str | None = Field(
        default=None,
        description="Python module whose SOURCES declare generic inbound webhooks "
        "(POST /v1/webhooks/{source}); default: <workflows>.inbound, if it exists.",
    )
    inbound_webhook_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="JSON of source -> HMAC-SHA256 secret of generic inbound webhooks.",
    )
    crm_outbox_dir: Path | None = Field(
        default=None, description="Where the CRM outbox writes; default: <outbox_dir>/crm."
    )
    webhook_secret: str | None = Field(
        default=None, description="Shared secret that signs outgoing webhook steps."
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    from_email: str = Field(default="Journeyline <hello@journeyline.example>")
    public_url: str | None = Field(
        default=None,
        description="The service's public base URL (https://jl.example.com): with "
        "unsubscribe_secret, marketing email carries one-click unsubscribe links under it.",
    )
    unsubscribe_secret: str | None = Field(
        default=None,
        min_length=16,
        description="Signs one-click unsubscribe links (HMAC-SHA256); with public_url, every "
        "marketing email carries List-Unsubscribe headers and its template unsubscribe_url. "
        "Changing it invalidates the links already sent.",
    )
    worker_threads: int = Field(
        default=WORKER_THREADS, ge=1, description="Threads of the in-process worker."
    )
    worker_poll_ms: int = Field(
        default=WORKER_POLL_MS,
        ge=10,
        le=10_000,
        description="Longest pause between a `journeyline worker` consumer's polls of an empty "
        "queue (Dramatiq's worker timeout, 1,000 ms by default): a lightly loaded worker picks "
        "up a job within this.",
    )
    contacts_per_job: int = Field(
        default=CONTACTS_PER_JOB,
        ge=1,
        le=1000,
        description="Contacts per `process_contacts` job when the API or a CRM webhook enqueues "
        "a batch of events: more per job is fewer, larger transactions (throughput), fewer is "
        "more jobs in parallel (latency of the batch's last contact).",
    )
    max_attempts: int = Field(default=5, ge=1, description="Tries per action before 'failed'.")
    retry_backoff_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay; doubles per attempt (with jitter)."
    )
    action_lease_seconds: int = Field(
        default=300,
        ge=1,
        description="How long a worker owns an action or wake-up before the "
        "sweeper may hand it to another.",
    )
    scheduler_interval_seconds: float = Field(default=5.0, gt=0)
    scheduler_in_workers: bool = Field(
        default=False,
        description="Each worker process starts the periodic scheduler_tick job at boot, so no "
        "separate `journeyline scheduler` process is needed.",
    )
    scheduler_batch_size: int = Field(default=500, ge=1)
    log_level: str = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL, for every process."
    )

    @field_validator("log_level")
    @classmethod
    def _a_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """What ``repr`` and ``str`` show: secrets (a key, token, secret or password) as
        ``***`` and URLs without their password, so a settings object logged or printed in
        a traceback leaks none of them."""
        for name, value in super().__repr_args__():
            if name and value and any(part in name for part in _SECRET_PARTS):
                yield name, "***"
            elif name in ("database_url", "broker_url") and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value

    @field_validator("public_url", "unsubscribe_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("public_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        """An http(s) base URL without query or fragment, kept without its trailing slash.
        Nothing that HTML escapes changes: the link is printed as is in every body."""
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
            or any(c in value for c in "&<>\"' \\")
        ):
            raise ValueError(
                "must be the service's public base URL, http(s) without query or fragment, "
                "like https://jl.example.com"
            )
        return value.rstrip("/")


# --- reporting bad settings -----------------------------------------------------------------

_SECRET_PARTS = ("key", "token", "secret", "password")


def env_var(field: str, settings_cls: type[BaseSettings] = Settings) -> str:
    """The environment variable (or ``.env`` line) that sets ``field`` of ``settings_cls``."""
    return f"{settings_cls.model_config.get('env_prefix', '')}{field}".upper()


def describe_settings_error(
    exc: ValidationError | SettingsError, settings_cls: type[BaseSettings] = Settings
) -> list[str]:
    """One line per bad variable, named as the operator set it, e.g.
    ``JOURNEYLINE_MAX_ATTEMPTS='abc': must be an integer`` (pydantic names the field and
    links its docs; neither helps whoever edits a ``.env`` file)."""
    if isinstance(exc, SettingsError):  # a JSON field whose value does not even parse
        found = re.search(r'field "(\w+)"', str(exc))
        if found is None:
            return [str(exc)]
        name = env_var(found.group(1), settings_cls)
        why = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        return [f"{name}{_shown(name, os.environ.get(name))}: must be valid JSON{why}"]
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        if not loc:
            lines.append(_why(error))
            continue
        name = env_var(loc[0], settings_cls)
        if len(loc) > 1:  # inside a JSON value: name the key, not the whole value
            lines.append(f"{name}: {'.'.join(loc[1:])!r} {_why(error)}")
        else:
            lines.append(f"{name}{_shown(name, error.get('input'))}: {_why(error)}")
    return lines


def _shown(name: str, value: object) -> str:
    if value is None:
        return ""
    if any(part in name.lower() for part in _SECRET_PARTS):
        return "='***'"
    return f"={str(value)!r}"


def _why(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}

    def number(key: str) -> str:
        value = ctx.get(key)
        return f"{value:g}" if isinstance(value, float) else str(value)

    plain = {
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be an integer",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "dict_type": "must be a JSON object",
        "list_type": "must be a JSON list",
        "string_type": "must be a string",
        "json_invalid": "must be valid JSON",
        "greater_than": f"must be greater than {number('gt')}",
        "greater_than_equal": f"must be at least {number('ge')}",
        "less_than": f"must be less than {number('lt')}",
        "less_than_equal": f"must be at most {number('le')}",
        "string_too_short": f"must be at least {number('min_length')} characters long",
    }
    if kind in plain:
        return plain[kind]
    message = str(error["msg"]).removeprefix("Input ").removeprefix("Value error, ")
    return message[:1].lower() + message[1:]
