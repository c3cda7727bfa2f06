"""Email templates: HTML is escaped, the subject and the text body are plain text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PermanentConnectorError
from engine.templates import TemplateRenderer

HELLO = (
    "{% block subject %}Hello {{ contact.first_name }}{% endblock %}"
    "{% block text %}Hi {{ contact.first_name }},\nsee you.{% endblock %}"
    "{% block html %}<p>Hi {{ contact.first_name }}</p>{% endblock %}"
)


@pytest.fixture
def renderer(tmp_path: Path) -> TemplateRenderer:
    (tmp_path / "hello.j2").write_text(HELLO)
    # Arithmetic on a missing value fails (printing one, or a field of one, prints nothing).
    (tmp_path / "broken.j2").write_text("{% block subject %}{{ contact.x.y + 1 }}{% endblock %}")
    return TemplateRenderer(tmp_path)


def test_only_the_html_body_escapes_a_contacts_field(renderer: TemplateRenderer) -> None:
    rendered = renderer.render("hello", contact={"first_name": "Seán O'Brien & <Co>"}, data={})
    assert rendered.subject == "Hello Seán O'Brien & <Co>"
    assert rendered.text == "Hi Seán O'Brien & <Co>,\nsee you."
    assert rendered.html == "<p>Hi Seán O&#39;Brien &amp; &lt;Co&gt;</p>"


def test_a_template_that_fails_is_a_permanent_error(renderer: TemplateRenderer) -> None:
    with pytest.raises(PermanentConnectorError, match="broken"):
        renderer.render("broken", contact={}, data={})
