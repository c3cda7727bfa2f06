"""A template variable the contact or the step lacks prints as empty (the email still goes)
and is logged once per template and variable; a name no template is ever given is a
problem at load."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine import Workflow, WorkflowDefinitionError, build_registry, on_event, send_email
from engine.templates import TemplateRenderer

GREETING = (
    "{% block subject %}Hi {{ contact.first_name }}{% endblock %}"
    "{% block text %}Hi {{ contact.first_name }}, your code is {{ data.code }}.{% endblock %}"
    "{% block html %}<p>Hi {{ contact.first_name }}</p>{% endblock %}"
)
OPTIONAL = (
    '{% block subject %}Hi {{ contact.first_name | default("there") }}{% endblock %}'
    "{% block text %}{% if contact.first_name %}Dear {{ contact.first_name }}{% endif %}"
    "{% if data.code is defined %} {{ data.code }}{% endif %}{% endblock %}"
)


def _renderer(tmp_path: Path, **templates: str) -> TemplateRenderer:
    for name, body in templates.items():
        (tmp_path / f"{name}.j2").write_text(body)
    return TemplateRenderer(tmp_path)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "engine.templates" and r.levelno == logging.WARNING
    ]


def test_a_missing_variable_renders_empty_and_is_logged_once_per_template_and_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    renderer = _renderer(tmp_path, greeting=GREETING)
    with caplog.at_level(logging.WARNING, logger="engine.templates"):
        # Given two contacts without a first name, and a step without the code
        first = renderer.render("greeting", contact={"email": "a@example.com"}, data={})
        renderer.render("greeting", contact={"email": "b@example.com"}, data={})
    # Then the email still renders, with the gaps empty
    assert first.subject == "Hi"
    assert first.text == "Hi , your code is ."
    assert first.html == "<p>Hi </p>"
    # And each missing variable is named once, with its template
    found = _warnings(caplog)
    assert len(found) == 2, found
    assert found[0].startswith("template 'greeting' printed contact.first_name as empty")
    assert found[1].startswith("template 'greeting' printed data.code as empty")


def test_an_optional_variable_written_as_optional_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    renderer = _renderer(tmp_path, optional=OPTIONAL)
    with caplog.at_level(logging.WARNING, logger="engine.templates"):
        rendered = renderer.render("optional", contact={}, data={})
    assert rendered.subject == "Hi there"
    assert _warnings(caplog) == []


def test_a_present_variable_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    renderer = _renderer(tmp_path, greeting=GREETING)
    with caplog.at_level(logging.WARNING, logger="engine.templates"):
        rendered = renderer.render(
            "greeting", contact={"first_name": "Ana"}, data={"code": "SPRING"}
        )
    assert rendered.text == "Hi Ana, your code is SPRING."
    assert _warnings(caplog) == []


def test_a_name_no_template_is_given_is_a_problem_at_load(tmp_path: Path) -> None:
    _renderer(
        tmp_path,
        bare=(
            "{% block subject %}Hi {{ first_name }}{% endblock %}"
            "{% block text %}{% for n in range(3) %}{{ n }}{% endfor %}{{ data.x }}"
            "{{ unsubscribe_url }}{% endblock %}"
        ),
    )
    flow = Workflow("w", trigger=on_event("contact.created"), steps=[send_email("bare")])
    with pytest.raises(WorkflowDefinitionError) as info:
        build_registry(workflows=[flow], templates_dir=tmp_path)
    (problem,) = info.value.problems
    assert "template 'bare' uses {{ first_name }}, which no email is given" in problem
    assert "contact.first_name" in problem


def test_a_field_of_a_missing_variable_renders_empty_and_names_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a template reading a field of an attribute the contact does not have
    nested = (
        "{% block subject %}Your {{ contact.plan.name }} plan{% endblock %}"
        "{% block text %}Seats: {{ contact.plan.seats }}; {{ data.offer['code'] }}{% endblock %}"
    )
    renderer = _renderer(tmp_path, nested=nested)
    with caplog.at_level(logging.WARNING, logger="engine.templates"):
        rendered = renderer.render("nested", contact={"email": "a@example.com"}, data={})
    # Then the email still renders, the gaps empty (it used to fail the whole email)
    assert rendered.subject == "Your plan"  # a subject's runs of spaces are folded
    assert rendered.text == "Seats: ;"  # trailing space trimmed
    # And the warning names the first part that is missing
    found = _warnings(caplog)
    assert [f.split(" as empty")[0] for f in found] == [
        "template 'nested' printed contact.plan",
        "template 'nested' printed data.offer",
    ]


def test_a_missing_variable_through_a_number_filter_is_its_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = (
        "{% block subject %}Visits{% endblock %}"
        "{% block text %}{{ contact.visits | int }} / {{ contact.spend | float }}"
        " / {{ contact.visits | int(7) }}{% endblock %}"
    )
    renderer = _renderer(tmp_path, numbers=numbers)
    with caplog.at_level(logging.WARNING, logger="engine.templates"):
        rendered = renderer.render("numbers", contact={}, data={})
    assert rendered.text == "0 / 0.0 / 7"
    assert [f.split(" as empty")[0] for f in _warnings(caplog)] == [
        "template 'numbers' printed contact.visits",
        "template 'numbers' printed contact.spend",
    ]
