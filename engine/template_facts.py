"""What email batches know of a template, worked out once per version of its file.

Whether a template reads ``contact`` at all (if not, one rendering serves every recipient),
whether it only prints contact fields (then a contact's email is the template's skeleton
with their values put in, proved from its syntax: ``engine/substitutions.py``), and its
skeletons per step data and contact fields. Each is derived from the file as Jinja has it
loaded (``TemplateRenderer.revision``), so a template edited while a worker runs is
analysed again, just as Jinja renders its new text: the analysis of the old text never
decides how the new one is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, meta

from engine.registry import Registry
from engine.substitutions import Skeleton, prints_fields_only, skeleton
from engine.templates import RenderedEmail


@dataclass
class TemplateFacts:
    revision: object | None  # None: the template could not be loaded (missing, broken)
    reads_contact: bool  # True when unsure: rendered per contact
    prints_fields_only: bool
    skeletons: dict[tuple[str, tuple[str, ...]], Skeleton | None] = field(default_factory=dict)
    shared: dict[str, RenderedEmail] = field(default_factory=dict)  # step data -> rendering

    def rendered_for_all(
        self, registry: Registry, template: str, *, data_key: str, data: Mapping[str, Any]
    ) -> RenderedEmail:
        """The rendering of a template that reads no contact field, for this step data:
        everyone's, rendered once for this version of the file."""
        found = self.shared.get(data_key)
        if found is None:
            found = registry.templates.render(template, contact={}, data=dict(data))
            self.shared[data_key] = found
        return found

    def skeleton(
        self,
        registry: Registry,
        template: str,
        *,
        data_key: str,
        data: Mapping[str, Any],
        fields: tuple[str, ...],
    ) -> Skeleton | None:
        """The skeleton for this step data (``data_key`` is its canonical JSON) and these
        contact fields: rendered once for this version of the file."""
        key = (data_key, fields)
        if key not in self.skeletons:
            renderer = registry.templates
            self.skeletons[key] = skeleton(
                lambda tagged: renderer.render(template, contact=tagged, data=dict(data)), fields
            )
        return self.skeletons[key]


def facts_of(registry: Registry, template: str) -> TemplateFacts:
    """``template``'s facts for its file as loaded now. Kept on the registry per template
    and worked out again when the file changes; a template that cannot be loaded gets facts
    that send each email down the per-contact path (where rendering fails with the reason),
    not kept."""
    revision = registry.templates.revision(template)
    cache: dict[str, TemplateFacts] = registry.__dict__.setdefault("_template_facts", {})
    found = cache.get(template)
    if found is not None and revision is not None and found.revision is revision:
        return found
    path = registry.templates.directory / f"{template}.j2"
    facts = TemplateFacts(revision, _reads_contact(path), _prints_fields_only(path))
    if revision is not None:
        cache[template] = facts
    return facts


def _reads_contact(path: Path) -> bool:
    """Whether the template may read ``contact``; when unsure, that it does."""
    try:
        parsed = Environment().parse(path.read_text(encoding="utf-8"))
    except (OSError, TemplateSyntaxError):
        return True
    if list(meta.find_referenced_templates(parsed)):
        return True  # the parent or an include may read it: render per contact
    return "contact" in meta.find_undeclared_variables(parsed)


def _prints_fields_only(path: Path) -> bool:
    try:
        return prints_fields_only(path.read_text(encoding="utf-8"))
    except OSError:
        return False
