"""Email templates: one Jinja2 file per template with ``subject``, ``text`` and ``html`` blocks.

    {# workflows/templates/welcome.j2 #}
    {% block subject %}Welcome, {{ contact.first_name | default("there") }}{% endblock %}
    {% block text %}Hi {{ contact.first_name | default("there") }}, ...{% endblock %}
    {% block html %}<p>Hi {{ contact.first_name | default("there") }}, ...</p>{% endblock %}

``contact`` is the contact's attributes plus ``email``, ``stage`` and ``score``; ``data`` is
the step's own data; ``unsubscribe_url`` the contact's one-click unsubscribe link in a
marketing email when links are configured (``engine/unsubscribe.py``), else empty: write
``{% if unsubscribe_url %}...{% endif %}`` so the template renders either way.

A variable the contact or the step does not have (``{{ contact.first_name }}`` for a contact
without one) prints as empty, so an email never fails for a missing first name; it is logged
as a warning, once per template and variable in a process. ``| default("there")`` or
``{% if contact.first_name %}`` say it is optional and log nothing. A name other than
``contact``, ``data`` and ``unsubscribe_url`` (``{{ first_name }}``) is never set: loading the
workflows reports it as a problem of the template.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    ChainableUndefined,
    Environment,
    FileSystemLoader,
    Template,
    TemplateNotFound,
    Undefined,
    meta,
    select_autoescape,
)
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from engine.errors import PermanentConnectorError

log = logging.getLogger(__name__)

REQUIRED_BLOCKS = ("subject",)
BODY_BLOCKS = ("text", "html")
VARIABLES = ("contact", "data", "unsubscribe_url")
"""What every template is given (``TemplateRenderer.render``)."""


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
            undefined=_MissingVariable,
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
        found += [
            f"template {name!r} uses {{{{ {unknown} }}}}, which no email is given: templates "
            f"get {', '.join(VARIABLES)} (a contact's field is contact.{unknown})"
            for unknown in self._unknown_names(name)
        ]
        return found

    def _unknown_names(self, name: str) -> list[str]:
        """Top-level names the template reads that are neither given nor Jinja's own."""
        assert self._env.loader is not None
        try:
            source, _path, _uptodate = self._env.loader.get_source(self._env, f"{name}.j2")
            used = _names_read(source)
        except JinjaTemplateError:  # reported above, as it loaded
            return []
        return sorted(used - set(VARIABLES) - set(self._env.globals))

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
            with _rendering(self.directory, name, contact=contact, data=data):
                # One context per compiled template, shared by its blocks.
                plain_context = plain.new_context(variables)
                parts = {
                    "subject": _block(plain, "subject", plain_context),
                    "text": _block(plain, "text", plain_context),
                    "html": _block(html, "html", html.new_context(variables)),
                }
        except JinjaTemplateError as exc:
            raise PermanentConnectorError(f"template {name!r} failed to render: {exc}") from exc
        except Exception as exc:  # the template's own code raised (1 // 0, a filter): the
            # same email fails the same way on every attempt, so it is failed, not retried
            raise PermanentConnectorError(
                f"template {name!r} failed to render: {type(exc).__name__}: {exc}"
            ) from exc
        # A subject is one line, whatever the template's whitespace.
        subject = " ".join(parts["subject"].split())
        return RenderedEmail(subject=subject, text=parts["text"], html=parts["html"])


@lru_cache(maxsize=1024)
def _names_read(source: str) -> frozenset[str]:
    """The top-level names a template's source reads without setting them. Cached by
    source: every load of the workflows checks each step's template again."""
    return frozenset(meta.find_undeclared_variables(_PARSER.parse(source)))


_PARSER = Environment()


def _block(template: Template, block: str, context: Context) -> str:
    """One block of ``template`` rendered in ``context`` ("" when it has none)."""
    if block not in template.blocks:
        return ""
    return "".join(template.blocks[block](context)).strip()


# --- missing variables: printed empty, logged once --------------------------------------


@dataclass(frozen=True)
class _Rendering:
    directory: Path
    template: str
    given: dict[int, str]  # id() of the ``contact`` and ``data`` mappings -> their name


_CURRENT: ContextVar[_Rendering | None] = ContextVar("journeyline_rendering", default=None)
_WARNED: set[tuple[str, str, str]] = set()  # (templates directory, template, variable)
_WARNED_LOCK = threading.Lock()


@contextmanager
def _rendering(directory: Path, name: str, *, contact: Any, data: Any) -> Iterator[None]:
    """Name the template being rendered, for ``_MissingVariable`` (a context variable:
    worker threads render at once)."""
    given = {id(contact): "contact", id(data): "data"}
    token = _CURRENT.set(_Rendering(directory, name, given))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class _MissingVariable(ChainableUndefined):
    """A missing variable prints as empty, and so does anything read off it
    (``{{ contact.plan.name }}`` for a contact without a plan: Jinja's default undefined
    would fail the whole email there). The first time a template prints a given missing
    variable it logs a warning, naming the first missing part (``contact.plan``). Testing
    it (``{% if %}``, ``is defined``) or giving a ``default`` logs nothing."""

    __slots__ = ()

    def __str__(self) -> str:
        _warn_missing(self)
        return ""

    def _not_a_number(self, *_args: object) -> Any:
        """``| int``, ``| float``: a TypeError, on which those filters give their default (0),
        as for text that is not a number; Jinja's undefined fails the email instead."""
        _warn_missing(self)
        raise TypeError("a missing variable is not a number")

    __int__ = __float__ = __index__ = _not_a_number


def _warn_missing(undefined: Undefined) -> None:
    rendering = _CURRENT.get()
    directory = str(rendering.directory) if rendering is not None else ""
    template = rendering.template if rendering is not None else "?"
    variable = _variable_name(undefined, rendering)
    with _WARNED_LOCK:
        if (directory, template, variable) in _WARNED:
            return
        _WARNED.add((directory, template, variable))
    log.warning(
        "template %r printed %s as empty: it is not set (give it a default: "
        '{{ %s | default("...") }}, or test it with {%% if %s %%})',
        template,
        variable,
        variable,
        variable,
    )


def _variable_name(undefined: Undefined, rendering: _Rendering | None) -> str:
    """``contact.first_name``, ``data.code``, or the bare name when its owner is unknown."""
    if undefined._undefined_name is None:
        return undefined._undefined_hint or "a variable"
    name = str(undefined._undefined_name)
    owner = undefined._undefined_obj
    if owner is missing or rendering is None:
        return name
    known = rendering.given.get(id(owner))
    return f"{known}.{name}" if known else name


# --- text snippets: a CRM task's subject, a note's body ----------------------------------

# Sandboxed, as defence in depth: a snippet is workflow code, which is trusted, but what it
# reads comes from contacts, and it needs nothing a sandbox refuses (underscored attributes,
# unsafe callables).
_TEXT = SandboxedEnvironment(
    autoescape=False, keep_trailing_newline=False, undefined=_MissingVariable
)
_HTML = SandboxedEnvironment(
    autoescape=True, keep_trailing_newline=False, undefined=_MissingVariable
)


@lru_cache(maxsize=1024)
def _snippet(source: str, *, html: bool = False) -> Template:
    return (_HTML if html else _TEXT).from_string(source)


def snippet_problems(source: str) -> list[str]:
    """What is wrong with a text snippet (``Call {{ contact.first_name }}``): it does not
    parse, or reads a name other than ``contact`` and ``data``."""
    try:
        _snippet(source)
    except JinjaTemplateError as exc:
        return [f"{source!r} does not parse as a template: {exc}"]
    unknown = sorted(_names_read(source) - {"contact", "data"} - set(_TEXT.globals))
    return [
        f"{source!r} uses {{{{ {name} }}}}, which is never given: write contact.{name} for "
        "a contact's field"
        for name in unknown
    ]


def render_text(source: str, *, contact: dict[str, Any], data: dict[str, Any]) -> str:
    """A text snippet rendered for a contact, as plain text (no HTML escaping); a missing
    variable prints as empty and is logged, as in email templates. Text without ``{{`` or
    ``{%`` is returned as it is."""
    return _render(source, contact=contact, data=data, html=False)


def render_html_text(source: str, *, contact: dict[str, Any], data: dict[str, Any]) -> str:
    """A text snippet rendered for a field the receiving side shows as HTML (HubSpot's note
    and task bodies): what it prints (``{{ contact.first_name }}``) is HTML-escaped, so a
    contact's field shows as text, never as markup or a link; the snippet's own text is
    kept as the workflow's author wrote it. Otherwise as ``render_text``."""
    return _render(source, contact=contact, data=data, html=True)


def _render(source: str, *, contact: dict[str, Any], data: dict[str, Any], html: bool) -> str:
    if "{" not in source:
        return source
    try:
        with _rendering(Path("."), "snippet", contact=contact, data=data):
            return str(_snippet(source, html=html).render(contact=contact, data=data))
    except JinjaTemplateError as exc:
        raise PermanentConnectorError(f"text {source!r} failed to render: {exc}") from exc
    except Exception as exc:  # the snippet's own code raised: as for email templates
        raise PermanentConnectorError(
            f"text {source!r} failed to render: {type(exc).__name__}: {exc}"
        ) from exc
