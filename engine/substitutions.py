"""Personalised batches: one request for emails that differ only in the contact's fields.

A template that reads ``contact`` renders differently for each contact, so identical content
cannot be shared. SendGrid can still take such emails in one request: the shared subject
and bodies carry substitution tags, and each personalization the values for its contact.

Which emails qualify is decided by rendering, not by reading the template. The template is
rendered once with a tag in place of each of the contact's fields (the *skeleton*); a
contact's email joins the skeleton's request only when the skeleton, with the contact's own
values put in, is exactly the text rendered for that contact. Anything else (a branch on a
field, a filter that changes a value, arithmetic on the score) goes in a request of its own,
as before. The check costs a string comparison per email; the saving is an HTTP request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

from connectors.email.sendgrid import MAX_SUBSTITUTION_BYTES, substitutions_size
from engine.templates import RenderedEmail

_TAG = re.compile(r"-jl\d+h?-")


def tag(index: int, *, html: bool = False) -> str:
    """The substitution tag of the contact view's ``index``-th field: one for the subject
    and text body (the value as is), one for the HTML body (the value escaped)."""
    return f"-jl{index}h-" if html else f"-jl{index}-"


@dataclass(frozen=True)
class Skeleton:
    """A template rendered with tags for the fields ``fields`` (tag ``i`` is field ``i``)."""

    rendered: RenderedEmail
    fields: tuple[str, ...]
    plain: tuple[int, ...]  # fields whose tag is in the subject or the text body
    html: tuple[int, ...]  # fields whose (escaped) tag is in the HTML body


def skeleton(
    render: Callable[[dict[str, Any]], RenderedEmail], fields: Sequence[str]
) -> Skeleton | None:
    """Render with a tag for each field; None when the template cannot take tags (it
    computes with a field, or the literal text already holds something like a tag)."""
    view = {name: tag(i) for i, name in enumerate(fields)}
    try:
        rendered = render(view)
    except Exception:  # e.g. arithmetic on a tag: this template is rendered per contact
        return None
    plain = {m.group(0) for m in _TAG.finditer(rendered.subject + "\n" + rendered.text)}
    in_html = {m.group(0) for m in _TAG.finditer(rendered.html)}
    if not plain | in_html <= {tag(i) for i in range(len(fields))}:
        return None  # the template's own text holds something shaped like a tag
    html = _TAG.sub(lambda m: m.group(0)[:-1] + "h-", rendered.html)
    return Skeleton(
        RenderedEmail(rendered.subject, rendered.text, html),
        tuple(fields),
        plain=tuple(i for i in range(len(fields)) if tag(i) in plain),
        html=tuple(i for i in range(len(fields)) if tag(i) in in_html),
    )


def fill(text: str, substitutions: Mapping[str, str]) -> str:
    """``text`` with each tag replaced by its value, in one pass."""
    if not substitutions:
        return text
    return _TAG.sub(lambda m: substitutions.get(m.group(0), m.group(0)), text)


def substitutions_for(
    skeleton: Skeleton, view: Mapping[str, Any], real: RenderedEmail
) -> dict[str, str] | None:
    """The tags and values that turn ``skeleton`` into ``real`` (this contact's own
    rendering), or None when no such substitution gives exactly that text."""
    shaped, fields = skeleton.rendered, skeleton.fields
    substitutions = {tag(i): str(view[fields[i]]) for i in skeleton.plain}
    substitutions.update({tag(i, html=True): str(escape(view[fields[i]])) for i in skeleton.html})
    if any(_TAG.search(value) for value in substitutions.values()):
        return None  # a value that looks like a tag could be substituted again
    if substitutions_size(substitutions) > MAX_SUBSTITUTION_BYTES:
        return None
    if (
        fill(shaped.subject, substitutions) == real.subject
        and fill(shaped.text, substitutions) == real.text
        and fill(shaped.html, substitutions) == real.html
    ):
        return substitutions
    return None
