"""Connectors of a user's own, loaded by name (``JOURNEYLINE_CRM_CONNECTOR=
tests.plugin_connectors:crm``) by tests/test_connector_plugins.py, in process and in a
``journeyline`` subprocess. What they did goes to files named by variables of their own."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from connectors import (
    CRMConnector,
    CRMRecord,
    EmailConnector,
    EmailMessage,
    LifecycleUpdate,
    PropertyValue,
    SendResult,
)
from engine.settings import Settings


def _log(variable: str, **entry: object) -> None:
    with Path(os.environ[variable]).open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, default=str) + "\n")


class FileCRM(CRMConnector):
    """A CRM that writes each call as a JSON line to ``$PLUGIN_CRM_LOG``."""

    name = "file crm"

    def __init__(self, *, break_after: str = "") -> None:
        self.break_after = break_after  # a method that acts, then fails reading the reply

    def _call(self, method: str, **entry: object) -> None:
        _log("PLUGIN_CRM_LOG", method=method, **entry)
        if method == self.break_after:
            raise KeyError("id")

    def upsert_contact(self, email: str, properties: Mapping[str, PropertyValue]) -> CRMRecord:
        self._call("upsert_contact", email=email, properties=dict(properties))
        return CRMRecord(id=f"c-{email}", email=email)

    def set_lifecycle_stage(
        self, email: str, stage: str, *, allow_backward: bool = False
    ) -> LifecycleUpdate:
        self._call("set_lifecycle_stage", email=email, stage=stage)
        return LifecycleUpdate(email, stage, stage, "", "set")

    def create_task(
        self,
        email: str,
        subject: str,
        body: str,
        *,
        due: datetime | None = None,
        owner_id: str | None = None,
    ) -> str:
        self._call("create_task", email=email, subject=subject)
        return f"t-{email}"

    def create_note(self, email: str, body: str) -> str:
        self._call("create_note", email=email, body=body)
        return f"n-{email}"


class FileEmail(EmailConnector):
    """Email that writes each message as a JSON line to ``$PLUGIN_EMAIL_LOG``."""

    name = "file email"

    def send(self, message: EmailMessage) -> SendResult:
        _log("PLUGIN_EMAIL_LOG", to=message.to, subject=message.subject)
        return SendResult(f"e-{message.to}")


def crm(settings: Settings) -> CRMConnector:
    return FileCRM()


def crm_whose_tasks_break(settings: Settings) -> CRMConnector:
    return FileCRM(break_after="create_task")


def crm_whose_updates_break(settings: Settings) -> CRMConnector:
    return FileCRM(break_after="upsert_contact")


def email(settings: Settings) -> EmailConnector:
    return FileEmail()


def needs_a_token(settings: Settings) -> CRMConnector:
    raise RuntimeError("PIPEDRIVE_TOKEN is not set")


def not_a_connector(settings: Settings) -> object:
    return {"a": "dict"}


NOT_CALLABLE = 3
