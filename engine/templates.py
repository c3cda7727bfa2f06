"""Email templates: one Jinja2 file per template with ``subject``, ``text`` and ``html`` blocks.

    {# workflows/templates/welcome.j2 #}
    {% block subject %}Welcome, {{ contact.first_name | default("there") }}{% endblock %}
    {% block text %}Hi {{ contact.first_name | default("there") }}, ...{% endblock %}
    {% block html %}<p>Hi {{ contact.first_name | default("there") }}, ...</p>{% endblock %}

``contact`` is the contact's attributes plus ``email``, ``stage`` and ``score``; ``data`` is
the step's own data; ``unsubscribe_url`` the contact's one-click unsubscribe link in a
marketing email when links are configured (``engine/unsubscribe.py``), else empty: write
``{% if unsubscribe_url %}...{% endif %}`` so the template renders either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Template, TemplateNotFound, select_autoescape
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.runtime import Context

from engine.errors import PermanentConnectorError

REQUIRED_BLOCKS = ("subject",)
BODY_BLOCKS = ("text", "html")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class TemplateRenderer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._env = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("j2", "html"), default=True),
            keep_trailing_newline=False,
        )
        # The subject and the text body are plain text: a contact named O'Brien must not
        # read "O&#39;Brien" there. They come from the same file compiled without escaping.
        self._plain_env = self._env.overlay(autoescape=False)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.j2"))

    def problems(self, name: str) -> list[str]:
        """What is wrong with template ``name`` (empty when it can be rendered)."""
        try:
            template = self._env.get_template(f"{name}.j2")
        except TemplateNotFound:
            return [f"template {name!r} not found in {self.directory} (expected {name}.j2)"]
        except JinjaTemplateError as exc:
            return [f"template {name!r} does not parse: {exc}"]
        found = [
            f"template {name!r} has no {{% block {b} %}}"
            for b in REQUIRED_BLOCKS
            if b not in template.blocks
        ]
        if not any(b in template.blocks for b in BODY_BLOCKS):
            found.append(f"template {name!r} needs a text or html block")
        return found

    def revision(self, name: str) -> object | None:
        """The compiled template ``name`` as loaded now: the same object until its file
        changes on disk (Jinja reloads it then), so a key for what is derived from it. None
        when it cannot be loaded (missing, or it does not parse)."""
        try:
            return self._env.get_template(f"{name}.j2")
        except JinjaTemplateError:
            return None

    def render(
        self,
        name: str,
        *,
        contact: dict[str, Any],
        data: dict[str, Any],
        unsubscribe_url: str = "",
    ) -> RenderedEmail:
        variables = {"contact": contact, "data": data, "unsubscribe_url": unsubscribe_url}
        try:
            html = self._env.get_template(f"{name}.j2")
            plain = self._plain_env.get_template(f"{name}.j2")
            # One context per compiled template, shared by its blocks.
            plain_context = plain.new_context(variables)
            parts = {
                "subject": _block(plain, "subject", plain_context),
                "text": _block(plain, "text", plain_context),
                "html": _block(html, "html", html.new_context(variables)),
            }
        except JinjaTemplateError as exc:
            raise PermanentConnectorError(f"template {name!r} failed to render: {exc}") from exc
        # A subject is one line, whatever the template's whitespace.
        subject = " ".join(parts["subject"].split())
        return RenderedEmail(subject=subject, text=parts["text"], html=parts["html"])


def _block(template: Template, block: str, context: Context) -> str:
    """One block of ``template`` rendered in ``context`` ("" when it has none)."""
    if block not in template.blocks:
        return ""
    return "".join(template.blocks[block](context)).strip()
