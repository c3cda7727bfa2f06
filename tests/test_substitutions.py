"""Personalised emails share SendGrid requests through substitution tags, and every contact
still receives exactly the text rendered for them."""

from __future__ import annotations

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
from engine.substitutions import fill, skeleton, substitutions_for
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
