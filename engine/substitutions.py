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

from jinja2 import Environment, TemplateSyntaxError, meta, nodes
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


# --- templates whose skeleton is exact by their syntax ------------------------------------

# Where a printed field may sit: nothing between these and the template captures, repeats
# through a macro, or filters what is printed.
_PLAIN_PARENTS = (nodes.Template, nodes.Block, nodes.If, nodes.For, nodes.Output)


def prints_fields_only(source: str) -> bool:
    """Whether the template ``source`` uses ``contact`` only to print one of its fields as
    it is: ``{{ contact.name }}``, ``{{ contact["name"] }}`` or ``{{ contact.name |
    default("...") }}``, directly in the text (in blocks, ifs and loops that do not test
    ``contact``), never in a test, a loop, a filter, a macro, a call or a capture.

    Then the skeleton with a contact's values put in *is* that contact's rendering: Jinja
    prints a present field as ``str(value)`` (escaped in the HTML body), ``default`` leaves
    a present field alone, and a missing field renders the same in the skeleton as for the
    contact, since a skeleton is made per set of fields. The batch then skips rendering each
    contact to compare (``values_for``). Anything this cannot prove, or a template that
    extends, includes or imports another, is False: each contact is rendered and compared."""
    try:
        parsed = Environment().parse(source)
    except TemplateSyntaxError:
        return False
    if list(meta.find_referenced_templates(parsed)):
        return False
    return _only_printed(parsed, ())


def _only_printed(node: nodes.Node, parents: tuple[nodes.Node, ...]) -> bool:
    if isinstance(node, nodes.Name) and node.name == "contact":
        return _is_printed_field(node, parents)
    return all(_only_printed(child, (*parents, node)) for child in node.iter_child_nodes())


def _is_printed_field(name: nodes.Name, parents: tuple[nodes.Node, ...]) -> bool:
    if name.ctx != "load" or not parents:
        return False
    field = parents[-1]
    if isinstance(field, nodes.Getattr):
        if hasattr(dict, field.attr):  # ``contact.items`` prints the dict's method, not a field
            return False
    elif isinstance(field, nodes.Getitem) and isinstance(field.arg, nodes.Const):
        if not isinstance(field.arg.value, str):
            return False
    else:
        return False
    printed: nodes.Expr
    printed, above = field, parents[:-1]
    if above and isinstance(above[-1], nodes.Filter):
        fallback = above[-1]
        if not (
            fallback.name in ("default", "d")
            and fallback.node is field
            and len(fallback.args) == 1
            and isinstance(fallback.args[0], nodes.Const)
            and not fallback.kwargs
            and fallback.dyn_args is None
            and fallback.dyn_kwargs is None
        ):
            return False
        printed, above = fallback, above[:-1]
    if not above or not isinstance(above[-1], nodes.Output) or printed not in above[-1].nodes:
        return False
    # In an if's test or a loop's iterable, ``contact`` would have been reached through
    # that node's test/iter, not its body: only bodies lead to an Output.
    return all(isinstance(parent, _PLAIN_PARENTS) for parent in above)


_SCALARS = (str, int, float, bool, type(None))


def _kept_as_is(value: Any) -> bool:
    """Whether the renderer's clean-up leaves ``value`` alone wherever it is printed: it
    strips every block and folds the subject's whitespace to single spaces, so an empty
    value, or one with surrounding or repeated whitespace, could render differently from
    the skeleton filled in."""
    text = str(value)
    return text != "" and text == " ".join(text.split())


def values_for(skeleton: Skeleton, view: Mapping[str, Any]) -> dict[str, str] | None:
    """For a template that ``prints_fields_only``: the tags and this contact's values that
    make ``skeleton`` their rendering, without rendering it; None when a value is not a
    plain scalar, is empty or has whitespace the renderer's clean-up would change, looks
    like a tag, or is too long for SendGrid (render and compare as usual then)."""
    used = [skeleton.fields[i] for i in (*skeleton.plain, *skeleton.html)]
    if any(not isinstance(view[name], _SCALARS) or not _kept_as_is(view[name]) for name in used):
        return None
    substitutions = {tag(i): str(view[skeleton.fields[i]]) for i in skeleton.plain}
    substitutions.update(
        {tag(i, html=True): str(escape(view[skeleton.fields[i]])) for i in skeleton.html}
    )
    if any(_TAG.search(value) for value in substitutions.values()):
        return None
    if substitutions_size(substitutions) > MAX_SUBSTITUTION_BYTES:
        return None
    return substitutions
