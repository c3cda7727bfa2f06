"""Performers: how each kind of action reaches its connector.

A performer turns a claimed action row into one call of a connector. ``prepare`` runs inside
the claim's transaction (render the template, read what it needs) and returns the call to
make outside it; the call returns the provider's id, or a :class:`Performed` when there is
more to keep on the row. ``dedupes`` says whether repeating the call with the same
idempotency key is harmless (see actions.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from connectors.crm import CRMConnector, LifecycleUpdate
from connectors.email import EmailConnector, EmailMessage
from connectors.webhooks.outgoing import WebhookSender
from engine.errors import PermanentConnectorError, TransientConnectorError
from engine.models import Action, Contact
from engine.registry import Registry
from engine.templates import render_html_text, render_text
from engine.unsubscribe import UnsubscribeLinks


@dataclasses.dataclass(frozen=True)
class Performed:
    """A call's result when it has more to say than the provider's id: ``notes`` are merged
    into the action's ``reason`` (``skipped``: a part of the action the connector did not do,
    shown by ``journeyline actions`` and the contact timeline)."""

    provider_id: str
    notes: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Call = Callable[[], "str | Performed"]


def lifecycle_skipped_note(reason: str) -> dict[str, str]:
    """The ``reason`` note of a ``crm.update`` whose lifecycle move the CRM did not make."""
    return {"skipped": f"lifecyclestage not moved: {reason}"}


class Performer(Protocol):
    name: str
    dedupes: bool

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call: ...


class EmailPerformer:
    def __init__(
        self,
        connector: EmailConnector,
        registry: Registry,
        *,
        sender: str,
        links: UnsubscribeLinks | None = None,
    ) -> None:
        self.connector = connector
        self.registry = registry
        self.sender = sender
        self.links = links
        self.name = f"email ({connector.name})"
        self.dedupes = connector.dedupes

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call:
        message = build_message(
            self.registry, action, contact, now=now, sender=self.sender, links=self.links
        )
        return lambda: self.connector.send(message).provider_id


def contact_view(contact: Contact) -> dict[str, Any]:
    """What a template sees as ``contact``: the attributes, plus email, stage and score."""
    return {
        **contact.attributes,
        "email": contact.email,
        "stage": contact.stage,
        "score": contact.score,
    }


def message_fields(
    action: Action,
    contact: Contact,
    *,
    now: datetime,
    sender: str,
    links: UnsubscribeLinks | None = None,
) -> dict[str, Any]:
    """Everything of ``action``'s email to ``contact`` but its content (subject, bodies,
    SendGrid template): who, why, the keys that tie deliveries back to the action, and for
    marketing email with ``links`` configured the contact's unsubscribe link."""
    template = action.payload["template"]
    workflow = str(action.reason.get("workflow", "manual"))
    step = str(action.reason.get("step", template))
    marketing = bool(action.payload.get("marketing", True))
    return {
        "to": contact.email,
        "sender": sender,
        "idempotency_key": action.idempotency_key,
        "sent_at": now,
        "categories": (workflow, f"{workflow}:{step}"),
        "custom_args": {"jl_action_id": str(action.id), "jl_contact_id": str(contact.id)},
        "headers": {"X-Journeyline-Template": template},
        "marketing": marketing,
        "unsubscribe_url": links.url(contact.id, contact.email)
        if links and marketing and contact.id
        else "",
    }


def build_message(
    registry: Registry,
    action: Action,
    contact: Contact,
    *,
    now: datetime,
    sender: str,
    view: dict[str, Any] | None = None,
    links: UnsubscribeLinks | None = None,
    link_as: str | None = None,
) -> EmailMessage:
    """The email ``action`` sends ``contact``; ``view`` is ``contact_view(contact)`` when the
    caller has it already. With ``links``, a marketing email carries the contact's
    unsubscribe link, which the template sees as ``unsubscribe_url`` (``link_as`` instead,
    when given: a batch's substitution tag, engine/batch_send.py)."""
    template = action.payload["template"]
    view = contact_view(contact) if view is None else view
    data = dict(action.payload.get("data", {}))
    common = message_fields(action, contact, now=now, sender=sender, links=links)
    link = common["unsubscribe_url"]
    hosted = action.payload.get("sendgrid_template")
    if hosted:
        # SendGrid renders it: send the contact's fields flat (``{{first_name}}`` in its
        # editor), the step's data on top, and the unsubscribe link when there is one.
        return EmailMessage(
            subject="",
            text="",
            html="",
            template_id=str(hosted),
            # Always ours: a contact attribute named unsubscribe_url must not stand in for
            # the link (empty when the email has none).
            template_data={**view, **data, "unsubscribe_url": link},
            **common,
        )
    shown = link if not link or link_as is None else link_as
    rendered = registry.templates.render(template, contact=view, data=data, unsubscribe_url=shown)
    return EmailMessage(subject=rendered.subject, text=rendered.text, html=rendered.html, **common)


class WebhookPerformer:
    """``call_webhook`` steps: POST the step's payload plus who and why, signed."""

    name = "webhook"

    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender
        self.dedupes = sender.dedupes

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call:
        url = str(action.payload["url"])
        body = {
            "action_id": action.id,
            "contact": {
                "email": contact.email,
                "stage": contact.stage,
                "score": contact.score,
                "attributes": contact.attributes,
            },
            "workflow": action.reason.get("workflow"),
            "step": action.reason.get("step"),
            "sent_at": now.isoformat(),
            "data": dict(action.payload.get("payload", {})),
        }
        return lambda: self.sender.post(url, body, idempotency_key=action.idempotency_key)


def rendered_texts(action: Action, contact: Contact, *, html_body: bool = False) -> dict[str, str]:
    """A CRM task's subject and body, or a note's body, rendered for ``contact``: they may
    print its fields (``Call {{ contact.first_name }}``) as email templates do. Rendered when
    the action is performed, so they read the contact as it is then. ``html_body``: the CRM
    shows the body as HTML (``CRMConnector.html_bodies``), so what it prints is escaped; a
    subject is always plain text."""
    if action.kind not in ("crm.task", "crm.note"):
        return {}
    view = contact_view(contact)
    texts = {}
    for name in ("subject", "body"):
        if action.payload.get(name) is not None:
            render = render_html_text if html_body and name == "body" else render_text
            texts[name] = render(str(action.payload[name]), contact=view, data={})
    return texts


class CRMOutboxPerformer:
    """The embedded default for CRM steps: each update or task becomes a JSON file in
    ``<directory>``, named by its kind, idempotency key and contact (``path_for``) and
    created atomically (so it dedupes)."""

    dedupes = True

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.name = f"crm outbox ({self.directory})"

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call:
        record = {
            "kind": action.kind,
            "email": contact.email,
            "external_ids": contact.external_ids,
            "payload": {**action.payload, **rendered_texts(action, contact)},
            "workflow": action.reason.get("workflow"),
            "step": action.reason.get("step"),
            "at": now.isoformat(),
            "idempotency_key": action.idempotency_key,
        }
        path = self.path_for(action.kind, action.idempotency_key, contact.email)
        return lambda: _write_once(path, json.dumps(record, indent=2, sort_keys=True))

    def path_for(self, kind: str, idempotency_key: str, email: str) -> Path:
        """The file of one CRM step. Its address is in the name's digest with the key: on
        SQLite a newcomer can be given an erased contact's ids, and with them her keys; by
        the key alone, his step found her file and was taken as written."""
        named = f"{email}\x00{idempotency_key}".encode()
        return self.directory / f"{kind}-{hashlib.sha256(named).hexdigest()[:16]}.json"


def _write_once(path: Path, text: str) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by its owner only, as the email outbox's files (they hold addresses).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        pass  # written by an earlier attempt: the same record, once
    except OSError as exc:
        raise TransientConnectorError(f"cannot write {path}: {exc}") from exc
    return path.name


class CRMPerformer:
    """CRM steps through a ``CRMConnector`` (HubSpot): ``crm.update`` upserts the contact with
    the step's properties, plus our score and the workflow in the properties named by
    ``mirrored`` (an empty name skips one), and mirrors our stage into the CRM's lifecycle
    stage (forward only); ``crm.task`` creates a task and ``crm.note`` a note on the contact.
    An upsert is idempotent; a task or a note is not (a timeout leaves it ``unknown``).
    A lifecycle move backwards is skipped unless ``allow_backward`` (then the CRM's value is
    cleared first); a skipped move is noted in the action's ``reason["skipped"]``. Many
    ``crm.update`` actions due together go through HubSpot's batch endpoints instead
    (engine/crm_batch.py), with the same properties and stage rules."""

    def __init__(
        self,
        connector: CRMConnector,
        kind: str,
        *,
        mirrored: Mapping[str, str] | None = None,
        allow_backward: bool = False,
    ) -> None:
        self.connector = connector
        self.kind = kind
        self.mirrored = {k: v for k, v in (mirrored or {}).items() if v}
        self.allow_backward = allow_backward
        self.name = f"{kind} ({connector.name})"
        self.dedupes = kind == "crm.update"

    def update_of(self, payload: Mapping[str, Any], stage: str) -> tuple[str, dict[str, Any]]:
        """A ``crm.update`` action's stage to mirror and the properties to write: the step's,
        plus our score and the workflow in the ``mirrored`` properties."""
        properties = dict(payload.get("properties", {}))
        for field, name in self.mirrored.items():
            if payload.get(field) is not None:
                properties.setdefault(name, payload[field])
        return str(payload.get("stage") or stage), properties

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call:
        email, payload = contact.email, dict(action.payload)
        if self.kind == "crm.update":
            stage, properties = self.update_of(payload, contact.stage)

            def update() -> str | Performed:
                record = self.connector.upsert_contact(email, properties)
                moved = self.connector.set_lifecycle_stage(
                    email, stage, allow_backward=self.allow_backward
                )
                if _backward_skipped(moved):
                    return Performed(record.id, lifecycle_skipped_note(moved.reason))
                return record.id

            return update
        texts = rendered_texts(action, contact, html_body=self.connector.html_bodies)
        if self.kind == "crm.note":
            return lambda: self.connector.create_note(email, texts["body"])
        due = datetime.fromisoformat(payload["due_at"]) if payload.get("due_at") else None
        return lambda: self.connector.create_task(
            email, texts["subject"], texts.get("body", ""), due=due
        )


def _backward_skipped(moved: LifecycleUpdate) -> bool:
    # A stage mapped to "" (not mirrored) is skipped by configuration: nothing to explain.
    return moved.skipped and bool(moved.value)


class Unconfigured:
    """Stands in for a kind of action no connector is configured for: fails it clearly."""

    dedupes = True

    def __init__(self, kind: str, setting: str) -> None:
        self.name = f"{kind} (not configured)"
        self.kind = kind
        self.setting = setting

    def prepare(self, action: Action, contact: Contact, *, now: datetime) -> Call:
        raise PermanentConnectorError(
            f"no connector is configured for {self.kind} actions: set {self.setting}"
        )
