"""Rendering a batch's emails: the same content once for everyone it is the same for.

``BatchRenders`` gives the message of each email action a batch claims (engine/batch_claim.py),
rendering a template that never reads ``contact`` once per batch and, where the connector
takes substitution tags (SendGrid), a personalised one as a shared skeleton plus each
contact's values (engine/substitutions.py), so that such emails share requests
(engine/batch_send.py). Each marketing email's unsubscribe link goes in per recipient, in
place of ``UNSUBSCRIBE_TAG``. The batch never sends one contact another contact's text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from connectors.email import EmailMessage
from connectors.email.sendgrid import MAX_SUBSTITUTION_BYTES, substitutions_size
from engine.performers import build_message, contact_view, message_fields
from engine.registry import Registry
from engine.substitutions import Skeleton, fill, skeleton, substitutions_for, values_for
from engine.template_facts import TemplateFacts, facts_of
from engine.templates import RenderedEmail
from engine.unsubscribe import UnsubscribeLinks


class BatchRenders:
    """Messages for a batch. A template that never reads ``contact`` renders the same for
    everyone: it is rendered once per (template, data, workflow, step) and addressed per
    action; any other template is rendered for each contact, exactly as the single path.
    With ``substitute`` (the connector takes substitution tags), a contact's rendering that
    is a skeleton with their own values put in goes out as that skeleton plus the values
    (engine/substitutions.py), so that such emails share requests.

    With ``links``, each marketing email carries its contact's unsubscribe link. Templates
    then render with ``UNSUBSCRIBE_TAG`` as ``unsubscribe_url`` (the same for everyone, so
    content is still shared), and the link goes in as one more substitution of the
    contact's personalization, or is put in here when the connector takes none (then that
    email's content is its own)."""

    def __init__(
        self,
        registry: Registry,
        *,
        sender: str,
        now: datetime,
        substitute: bool = False,
        links: UnsubscribeLinks | None = None,
    ) -> None:
        self.registry = registry
        self.sender = sender
        self.now = now
        self.substitute = substitute
        self.links = links
        self._shared: dict[tuple, EmailMessage] = {}
        self._skeleton_messages: dict[tuple, EmailMessage] = {}
        self._facts: dict[str, TemplateFacts] = {}
        self._tagged: dict[tuple, Any] = {}  # renderings with UNSUBSCRIBE_TAG, this batch

    def facts(self, template: str) -> TemplateFacts:
        """``template_facts.facts_of``, once per template and batch (looking up the loaded
        template checks its file)."""
        found = self._facts.get(template)
        if found is None:
            found = self._facts[template] = facts_of(self.registry, template)
        return found

    def message(self, action: Any, contact: Any) -> tuple[EmailMessage, Mapping[str, str]]:
        """The message for ``action`` and, when it is a skeleton, this contact's values."""
        message, substitutions = self._message(action, contact)
        return self._with_link(message, substitutions)

    def _message(self, action: Any, contact: Any) -> tuple[EmailMessage, Mapping[str, str]]:
        template = str(action.payload["template"])
        # A SendGrid dynamic template is not rendered here: its per-contact data is the message.
        if action.payload.get("sendgrid_template"):
            return self._own(action, contact), {}
        data = json.dumps(action.payload.get("data", {}), sort_keys=True, default=str)
        linked = self._linked(action)
        key = (template, data, action.reason.get("workflow"), action.reason.get("step"), linked)
        if self.facts(template).reads_contact:
            if not self.substitute:
                return self._own(action, contact), {}
            return self._personalised(action, contact, key)
        shared = self._shared.get(key)
        if shared is None:
            if linked:
                content = self._rendered_for_all(template, data, action.payload.get("data", {}))
            else:
                content = self.facts(template).rendered_for_all(
                    self.registry, template, data_key=data, data=action.payload.get("data", {})
                )
            shared = self._around(content, action, contact)
            self._shared[key] = shared
        return self._addressed(shared, action, contact), {}

    def _linked(self, action: Any) -> bool:
        """Whether ``action``'s email carries an unsubscribe link (and renders the tag)."""
        return self.links is not None and bool(action.payload.get("marketing", True))

    def _rendered_for_all(self, template: str, data_key: str, data: Any) -> RenderedEmail:
        """``TemplateFacts.rendered_for_all`` with the unsubscribe tag, once per batch."""
        key = ("all", template, data_key)
        if key not in self._tagged:
            self._tagged[key] = self.registry.templates.render(
                template, contact={}, data=dict(data), unsubscribe_url=UNSUBSCRIBE_TAG
            )
        rendered: RenderedEmail = self._tagged[key]
        return rendered

    def _skeleton(
        self, template: str, data_key: str, data: Any, fields: tuple[str, ...]
    ) -> Skeleton | None:
        """``TemplateFacts.skeleton`` with the unsubscribe tag, once per batch."""
        key = ("skeleton", template, data_key, fields)
        if key not in self._tagged:
            render = self.registry.templates.render
            self._tagged[key] = skeleton(
                lambda tagged: render(
                    template, contact=tagged, data=dict(data), unsubscribe_url=UNSUBSCRIBE_TAG
                ),
                fields,
            )
        found: Skeleton | None = self._tagged[key]
        return found

    def _with_link(
        self, message: EmailMessage, substitutions: Mapping[str, str]
    ) -> tuple[EmailMessage, Mapping[str, str]]:
        """Put the contact's unsubscribe link where its content has the tag: as one more
        substitution when the connector takes them and SendGrid's size limit allows, else
        into the content itself (the contact's values with it)."""
        link = message.unsubscribe_url
        if not link or not any(
            UNSUBSCRIBE_TAG in part for part in (message.subject, message.text, message.html)
        ):
            return message, substitutions
        with_link = {**substitutions, UNSUBSCRIBE_TAG: link}
        if self.substitute and substitutions_size(with_link) <= MAX_SUBSTITUTION_BYTES:
            return message, with_link
        return replace(
            message,
            subject=_filled(message.subject, substitutions, link),
            text=_filled(message.text, substitutions, link),
            html=_filled(message.html, substitutions, link),
        ), {}

    def _around(self, content: RenderedEmail, action: Any, contact: Any) -> EmailMessage:
        """The email of ``action`` to ``contact`` with ``content`` already rendered."""
        return EmailMessage(
            subject=content.subject,
            text=content.text,
            html=content.html,
            **message_fields(action, contact, now=self.now, sender=self.sender, links=self.links),
        )

    def _own(self, action: Any, contact: Any, view: dict[str, Any] | None = None) -> EmailMessage:
        return build_message(
            self.registry,
            action,
            contact,
            now=self.now,
            sender=self.sender,
            view=view,
            links=self.links,
            link_as=UNSUBSCRIBE_TAG,
        )

    def _personalised(
        self, action: Any, contact: Any, key: tuple
    ) -> tuple[EmailMessage, Mapping[str, str]]:
        view = contact_view(contact)
        fields = tuple(sorted(view))
        shape = (*key, fields)
        template = str(action.payload["template"])
        facts = self.facts(template)
        if self._linked(action):
            shaped = self._skeleton(template, key[1], action.payload.get("data", {}), fields)
        else:
            shaped = facts.skeleton(
                self.registry,
                template,
                data_key=key[1],
                data=action.payload.get("data", {}),
                fields=fields,
            )
        if shaped is not None and facts.prints_fields_only:
            # Exact by the template's syntax: the skeleton plus these values is what
            # rendering for this contact would give, so it is not rendered to compare.
            values = values_for(shaped, view)
            if values is not None:
                base = self._skeleton_messages.get(shape)
                if base is None:
                    base = self._around(shaped.rendered, action, contact)
                    self._skeleton_messages[shape] = base
                return self._addressed(base, action, contact), values
        own = self._own(action, contact, view)
        if shaped is None:
            return own, {}
        real = RenderedEmail(own.subject, own.text, own.html)
        values = substitutions_for(shaped, view, real)
        if values is None:
            return own, {}
        content = shaped.rendered
        return replace(own, subject=content.subject, text=content.text, html=content.html), values

    def _addressed(self, shared: EmailMessage, action: Any, contact: Any) -> EmailMessage:
        return replace(
            shared,
            to=contact.email,
            idempotency_key=action.idempotency_key,
            custom_args={"jl_action_id": str(action.id), "jl_contact_id": str(contact.id)},
            unsubscribe_url=(
                self.links.url(contact.id, contact.email)
                if self.links is not None and shared.unsubscribe_url
                else ""
            ),
        )


UNSUBSCRIBE_TAG = "-jlunsub-"
"""What templates print as ``unsubscribe_url`` in a batch, replaced per recipient by their
link. Not shaped like a contact field's tag (engine/substitutions.py), and without anything
HTML escapes, like the link itself (``JOURNEYLINE_PUBLIC_URL`` is checked for that)."""


def _filled(text: str, substitutions: Mapping[str, str], link: str) -> str:
    """``text`` as the contact gets it: their values and their unsubscribe link put in."""
    return fill(text, substitutions).replace(UNSUBSCRIBE_TAG, link)
