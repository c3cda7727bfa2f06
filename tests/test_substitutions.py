"""Personalised emails share SendGrid requests through substitution tags, and every contact
still receives exactly the text rendered for them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from connectors.email.sendgrid import Recipient, SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import send_email
from engine.errors import PermanentConnectorError
from engine.models import Contact
from engine.performers import contact_view
from engine.runtime import Runtime
from engine.substitutions import (
    fill,
    prints_fields_only,
    skeleton,
    substitutions_for,
    values_for,
)
from engine.templates import RenderedEmail
from tests.test_broadcast import KEY, add_contacts, running, sale


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server


def _each_got_their_own_rendering(runtime: Runtime, fake: FakeSendGrid, template: str) -> int:
    """Asserts every recipient's delivered subject and bodies (after SendGrid's
    substitutions) are the template rendered for them; returns how many got one."""
    with Session(runtime.db) as session:
        contacts = {c.email: c for c in session.exec(select(Contact)).all()}
    delivered = fake.sent_messages()
    for message in delivered:
        own = runtime.registry.templates.render(
            template, contact=contact_view(contacts[message.to]), data={}
        )
        assert (message.subject, message.text, message.html) == (own.subject, own.text, own.html)
    assert sorted(m.to for m in delivered) == sorted(contacts)
    return len(delivered)


def _counted_renders(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the templates rendered from now on (the renderer's ``render`` wrapped)."""
    renders: list[str] = []
    render = runtime.registry.templates.render

    def counting(name, **kwargs):  # type: ignore[no-untyped-def]
        renders.append(name)
        return render(name, **kwargs)

    monkeypatch.setattr(runtime.registry.templates, "render", counting)
    return renders


def _touched(path: Path, text: str) -> None:
    """Write ``text`` with a later modification time, as Jinja's reload check needs."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def _broadcast_to(
    tmp_path: Path,
    fake: FakeSendGrid,
    template: str,
    groups: dict[str, dict[str, str]],
    *,
    each: int,
) -> int:
    """Broadcast one email of ``template`` to ``each`` contacts per group (prefix ->
    attributes); checks what everyone received and returns how many did."""
    hello = sale(name="hello", steps=[send_email(template, id="hello")])
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [hello]) as (runtime, _):
        for prefix, attributes in groups.items():
            add_contacts(runtime, each, prefix=prefix, attributes=attributes)
        runtime.broadcast("hello")
        runtime.drain()
        return _each_got_their_own_rendering(runtime, fake, template)


def test_contacts_with_different_names_share_one_request(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    hello = sale(name="hello", steps=[send_email("hello_name", id="hello")])
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [hello]) as (runtime, _):
        add_contacts(runtime, 3, prefix="ada", attributes={"first_name": "Ada"})
        add_contacts(runtime, 2, prefix="bob", attributes={"first_name": "Bob"})
        add_contacts(runtime, 2, prefix="anon")  # no name: "there", identical for both
        runtime.broadcast("hello")
        runtime.drain()
        assert _each_got_their_own_rendering(runtime, fake, "hello_name") == 7
    sizes = sorted(len(r.body["personalizations"]) for r in fake.requests)
    assert sizes == [2, 5]
    named = next(r.body for r in fake.requests if len(r.body["personalizations"]) == 5)
    assert "Ada" not in str(named["content"]) and "Bob" not in named["subject"]
    names = sorted(next(iter(p["substitutions"].values())) for p in named["personalizations"])
    assert names == ["Ada", "Ada", "Ada", "Bob", "Bob"]


def test_markup_in_a_field_is_escaped_as_the_template_would(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    ann, cy = {"first_name": "Ann & <Bo>", "plan": "x"}, {"first_name": "Cy", "plan": "pro"}
    groups = {"ann": ann, "cy": cy}
    assert _broadcast_to(tmp_path, fake, "hello_html", groups, each=2) == 4
    assert len(fake.requests) == 1
    got = {m.to: m for m in fake.sent_messages()}
    assert got["ann0@example.com"].html == "<p>Hi <b>Ann &amp; &lt;Bo&gt;</b> (x)</p>"
    # the subject and the text body are plain text: not escaped
    assert got["ann0@example.com"].subject == "Hello Ann & <Bo>"
    assert got["ann0@example.com"].text == "Hi Ann & <Bo>, your plan: x"


def test_a_template_that_branches_or_computes_on_fields_is_rendered_per_contact(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    groups = {"pro": {"first_name": "Pia", "plan": "pro"}, "free": {"first_name": "Fay"}}
    # (the score arithmetic in the html makes every rendering differ: no skeleton)
    assert _broadcast_to(tmp_path, fake, "hello_plan", groups, each=3) == 6
    assert len(fake.requests) == 6
    assert all("substitutions" not in p for r in fake.requests for p in r.body["personalizations"])


# --- the pieces ---------------------------------------------------------------------------


def _render(subject: str, text: str, html: str = ""):  # type: ignore[no-untyped-def]
    return lambda view: RenderedEmail(
        subject.format(**view), text.format(**view), html.format(**view)
    )


def test_a_skeleton_only_matches_the_rendering_it_reproduces() -> None:
    render = _render("Hi {name}", "Dear {name}, you are {stage}", "<p>{name}</p>")
    shaped = skeleton(render, ["name", "stage"])
    assert shaped is not None and (shaped.plain, shaped.html) == ((0, 1), (0,))
    assert shaped.rendered.html == "<p>-jl0h-</p>"
    real = render({"name": "Ada", "stage": "decision"})
    values = substitutions_for(shaped, {"name": "Ada", "stage": "decision"}, real)
    assert values == {"-jl0-": "Ada", "-jl0h-": "Ada", "-jl1-": "decision"}
    assert fill(shaped.rendered.text, values) == real.text
    # A rendering that is not the skeleton filled in is refused
    other = RenderedEmail("Hi Ada", "Dear ADA, you are decision", "")
    assert substitutions_for(shaped, {"name": "Ada", "stage": "decision"}, other) is None


def test_values_that_look_like_tags_or_are_too_large_are_refused() -> None:
    render = _render("Hi {name}", "Hi {name}")
    shaped = skeleton(render, ["name"])
    assert shaped is not None
    sneaky = {"name": "-jl0-"}
    assert substitutions_for(shaped, sneaky, render(sneaky)) is None
    huge = {"name": "x" * 20_000}
    assert substitutions_for(shaped, huge, render(huge)) is None


def test_a_template_that_fails_on_tags_has_no_skeleton() -> None:
    def render(view):  # type: ignore[no-untyped-def]
        return RenderedEmail(f"{view['score'] + 1}", "", "")

    assert skeleton(render, ["score"]) is None


def test_the_sendgrid_payload_carries_substitutions_per_personalization() -> None:
    from datetime import UTC, datetime

    from connectors.email import EmailMessage

    connector = SendGridEmailConnector(api_key=KEY, host="http://127.0.0.1:9")
    message = EmailMessage(
        to="", sender="a@example.com", subject="Hi -jl0-", text="Hi -jl0-", html="",
        idempotency_key="k", sent_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    recipients = [
        Recipient("ada@example.com", {"jl_action_id": "1"}, substitutions={"-jl0-": "Ada"}),
        Recipient("bob@example.com", {"jl_action_id": "2"}, substitutions={"-jl0-": "Bob"}),
    ]
    body = connector.batch_payload(message, recipients)
    assert [p["substitutions"] for p in body["personalizations"]] == [
        {"-jl0-": "Ada"},
        {"-jl0-": "Bob"},
    ]
    with pytest.raises(PermanentConnectorError, match="exceed"):
        connector.batch_payload(
            message, [Recipient("c@example.com", {}, substitutions={"-jl0-": "x" * 10_001})]
        )
    templated = EmailMessage(
        to="", sender="a@example.com", subject="", text="", html="", idempotency_key="k",
        sent_at=datetime(2026, 1, 1, tzinfo=UTC), template_id="d-1",
    )  # fmt: skip
    with pytest.raises(PermanentConnectorError, match="dynamic template"):
        connector.batch_payload(templated, recipients)
    connector.close()


# --- templates exact by their syntax ------------------------------------------------------

PRINTS_FIELDS_ONLY = {
    "a field": "Hi {{ contact.first_name }}",
    "by key": 'Hi {{ contact["first_name"] }}',
    "with a literal default": 'Hi {{ contact.first_name | default("there") }}',
    "short default": "Hi {{ contact.first_name | d('there') }}",
    "in blocks": "{% block subject %}Hi {{ contact.first_name }}{% endblock %}",
    "under a test of data": "{% if data.x %}{{ contact.email }}{% else %}-{% endif %}",
    "in a loop over data": "{% for x in data.items %}{{ x }} {{ contact.plan }}{% endfor %}",
    "no contact at all": "Hello {{ data.name }}",
}
NOT_PROVABLE = {
    "a test on a field": "{% if contact.plan %}pro{% endif %}",
    "a filter": "{{ contact.first_name | upper }}",
    "arithmetic": "{{ contact.score + 1 }}",
    "concatenation": "{{ contact.first_name ~ '!' }}",
    "the whole contact": "{{ contact }}",
    "a dict method, not a field": "{{ contact.items }}",
    "a computed key": "{{ contact[data.key] }}",
    "a default from data": "{{ contact.first_name | default(data.x) }}",
    "a loop over a field": "{% for t in contact.tags %}{{ t }}{% endfor %}",
    "a capture": "{% set n = contact.first_name %}{{ n | upper }}",
    "a macro": "{% macro m() %}{{ contact.first_name }}{% endmacro %}{{ m() | upper }}",
    "a filter block": "{% filter upper %}{{ contact.first_name }}{% endfilter %}",
    "escaping off": "{% autoescape false %}{{ contact.first_name }}{% endautoescape %}",
    "an include": "{% include 'other.j2' %}{{ contact.first_name }}",
    "broken syntax": "{{ contact.first_name ",
}


@pytest.mark.parametrize("source", PRINTS_FIELDS_ONLY.values(), ids=PRINTS_FIELDS_ONLY.keys())
def test_templates_that_only_print_fields_are_recognised(source: str) -> None:
    assert prints_fields_only(source)


@pytest.mark.parametrize("source", NOT_PROVABLE.values(), ids=NOT_PROVABLE.keys())
def test_anything_else_is_rendered_per_contact(source: str) -> None:
    assert not prints_fields_only(source)


def test_for_such_templates_the_skeleton_filled_in_is_each_contacts_rendering(
    tmp_path: Path,
) -> None:
    """The claim ``values_for`` rests on, checked against Jinja itself for awkward values:
    markup, quotes, unicode, numbers, booleans, None, an empty string, a missing field."""
    from engine.templates import TemplateRenderer

    source = (
        "{% block subject %}Hi {{ contact.first_name | default('there') }}{% endblock %}"
        "{% block text %}{{ contact['first_name'] }} / {{ contact.plan }} / {{ contact.score }}"
        "{% if data.x %} ({{ contact.email }}){% endif %}{% endblock %}"
        "{% block html %}<p>{{ contact.first_name }} &amp; {{ contact.plan }}</p>"
        "{% for i in data.rows %}<i>{{ contact.score }}</i>{% endfor %}{% endblock %}"
    )
    assert prints_fields_only(source)
    (tmp_path / "t.j2").write_text(source)
    renderer = TemplateRenderer(tmp_path)
    views = [
        {"first_name": "Ann & <Bo>", "plan": '"pro"', "score": 7, "email": "a@x.io"},
        {"first_name": "Zoë ✓", "plan": None, "score": 2.5, "email": "z@x.io"},
        {"first_name": "Cy", "plan": True, "score": -1, "email": "e@x.io"},
        {"plan": "free", "score": 0, "email": "m@x.io"},  # no first_name
    ]
    # values the renderer's clean-up (stripped blocks, a one-line subject) would change:
    # refused, so such contacts are rendered and compared as before
    awkward = ["", " Ann", "Ann ", "Ann  Lee", "Ann\nLee", "Ann\tLee"]
    views += [{"first_name": name, "plan": "x", "score": 1, "email": "w@x.io"} for name in awkward]
    data = {"x": 1, "rows": [1, 2]}
    exact = refused = 0
    for view in views:
        fields = tuple(sorted(view))
        shaped = skeleton(lambda tagged: renderer.render("t", contact=tagged, data=data), fields)
        assert shaped is not None
        values = values_for(shaped, view)
        if values is None:
            refused += 1
            continue
        real = renderer.render("t", contact=view, data=data)
        rendered = shaped.rendered
        filled = tuple(
            fill(part, values) for part in (rendered.subject, rendered.text, rendered.html)
        )
        assert filled == (real.subject, real.text, real.html), view
        exact += 1
    assert (exact, refused) == (4, len(awkward))


def test_values_for_refuses_what_it_cannot_vouch_for() -> None:
    render = _render("Hi {name}", "Hi {name}")
    shaped = skeleton(render, ["name"])
    assert shaped is not None
    assert values_for(shaped, {"name": "Ada"}) == {"-jl0-": "Ada"}
    assert values_for(shaped, {"name": ["a", "list"]}) is None  # not a plain scalar
    assert values_for(shaped, {"name": "-jl0-"}) is None  # looks like a tag
    assert values_for(shaped, {"name": "x" * 20_000}) is None  # too long for SendGrid
    assert values_for(shaped, {"name": ""}) is None  # empty: "Hi " is not "Hi"


def test_a_field_only_template_renders_once_per_shape_across_batches_until_its_file_changes(
    tmp_path: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    hello = sale(name="hello", steps=[send_email("hello_html", id="hello")])
    again = sale(name="again", steps=[send_email("hello_html", id="again")])
    later = sale(name="later", steps=[send_email("hello_html", id="later")])
    workflows = [hello, again, later]
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, workflows) as (runtime, _):
        add_contacts(runtime, 4, prefix="ada", attributes={"first_name": "Ada", "plan": "x"})
        add_contacts(runtime, 3, prefix="bob", attributes={"first_name": "Bob", "plan": "y"})
        renders = _counted_renders(runtime, monkeypatch)
        runtime.broadcast("hello")
        runtime.drain()
        # one skeleton for the one shape (same fields), not seven renders, and none for
        # the message around it
        assert len(renders) == 1
        runtime.broadcast("again")  # another batch, another step, the same template
        runtime.drain()
        assert len(renders) == 1
        # The file changes (as Jinja sees it: new text, a later mtime): rendered afresh.
        path = tmp_path / "templates" / "hello_html.j2"
        _touched(path, path.read_text().replace("Hello", "Welcome"))
        runtime.broadcast("later")
        runtime.drain()
        assert len(renders) == 2
        monkeypatch.undo()
        assert len(fake.requests) == 3
        subjects = Counter(m.subject for m in fake.sent_messages())
        assert subjects == {"Hello Ada": 8, "Hello Bob": 6, "Welcome Ada": 4, "Welcome Bob": 3}


def test_a_template_edited_while_the_worker_runs_is_analysed_again_before_it_is_sent(
    tmp_path: Path, fake: FakeSendGrid
) -> None:
    """What a batch knows of a template (reads no contact field; prints fields only) holds
    for the file it was worked out from: after an edit, the new text decides. Otherwise a
    template that starts to greet by name would go out with the first contact's name to
    everyone, and one that starts to branch on a field would be filled in as if it did not."""
    steps = {name: sale(name=name, steps=[send_email("news", id=name)]) for name in "abc"}
    path = tmp_path / "templates" / "news.j2"

    path.parent.mkdir()
    path.write_text("{% block subject %}News{% endblock %}{% block text %}Hello all{% endblock %}")
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, list(steps.values())) as (
        runtime,
        _,
    ):
        add_contacts(runtime, 2, prefix="ada", attributes={"first_name": "Ada", "plan": "pro"})
        add_contacts(runtime, 2, prefix="bob", attributes={"first_name": "Bob", "plan": "free"})
        runtime.broadcast("a")
        runtime.drain()
        _touched(
            path,
            "{% block subject %}News for {{ contact.first_name }}{% endblock %}"
            "{% block text %}Hello {{ contact.first_name }}{% endblock %}",
        )
        runtime.broadcast("b")
        runtime.drain()
        _touched(
            path,
            "{% block subject %}News for {{ contact.first_name }}{% endblock %}"
            "{% block text %}{% if contact.plan == 'pro' %}Pro news{% else %}Upgrade"
            "{% endif %}{% endblock %}",
        )
        runtime.broadcast("c")
        runtime.drain()
    got = Counter((m.to[:3], m.subject, m.text) for m in fake.sent_messages())
    assert got == {
        ("ada", "News", "Hello all"): 2,
        ("bob", "News", "Hello all"): 2,
        ("ada", "News for Ada", "Hello Ada"): 2,
        ("bob", "News for Bob", "Hello Bob"): 2,
        ("ada", "News for Ada", "Pro news"): 2,
        ("bob", "News for Bob", "Upgrade"): 2,
    }


def test_a_template_that_reads_no_contact_field_renders_once_for_all_batches(
    tmp_path: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sale(name="first", steps=[send_email("spring_sale", id="first")])
    second = sale(name="second", steps=[send_email("spring_sale", id="second")])
    with running(f"sqlite:///{tmp_path}/jl.db", tmp_path, fake, [first, second]) as (runtime, _):
        add_contacts(runtime, 3, prefix="ada", attributes={"first_name": "Ada"})
        renders = _counted_renders(runtime, monkeypatch)
        runtime.broadcast("first")
        runtime.drain()
        runtime.broadcast("second")
        runtime.drain()
        assert renders == ["spring_sale"]
    sent = fake.sent_messages()
    assert len(sent) == 6 and {m.subject for m in sent} == {"Spring sale: 20% off"}
    assert {m.categories[1] for m in sent} == {"first:first", "second:second"}
