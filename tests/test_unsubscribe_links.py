"""One-click unsubscribe links (RFC 8058): signed tokens, the headers and ``unsubscribe_url``
on every marketing email through every connector, and the unauthenticated route."""

from __future__ import annotations

import email as email_parser
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlmodel import Session, SQLModel, select

from connectors.email.sendgrid import SendGridEmailConnector
from connectors.fakes import FakeSendGrid
from engine import (
    ConfigurationError,
    Settings,
    VirtualClock,
    Workflow,
    build_registry,
    lifecycle_journey,
    on_event,
    send_email,
)
from engine.db import make_engine
from engine.models import Contact
from engine.runtime import Runtime
from engine.settings import describe_settings_error
from engine.templates import TemplateRenderer
from engine.unsubscribe import UnsubscribeLinks, unsubscribe_links
from tests.language_support import TEMPLATES
from tests.support import contact, enrollments, make_runtime
from tests.test_api import Api, serve
from tests.test_broadcast import KEY, START, add_contacts, sale
from tests.test_broadcast import TEMPLATES as BROADCAST_TEMPLATES
from workflows.rules import RULES

PUBLIC = "https://jl.example.com"
SECRET = "s3cret-for-unsubscribe-links"
LINKS = {"public_url": PUBLIC, "unsubscribe_secret": SECRET}
TRANSACTIONAL = {
    "nps_recovery",
    "onboarding_welcome",
    "onboarding_next_steps",
    "onboarding_tips",
    "onboarding_almost_there",
    "onboarding_help",
    "thank_you",
    "renewal_reminder",
}
HELLO = Workflow(
    "hello",
    trigger=on_event("demo.requested"),
    steps=[send_email("welcome", id="hi"), send_email("thank_you", id="receipt", marketing=False)],
)


# --- tokens -------------------------------------------------------------------------------


def test_a_token_names_the_contact_by_id_and_a_wrong_signature_is_refused() -> None:
    links = UnsubscribeLinks(PUBLIC, SECRET)
    token = links.token(42, "ana@example.com")
    url = links.url(42, "ana@example.com")
    assert url == f"{PUBLIC}/v1/unsubscribe/{token}"
    assert "@" not in url and "%40" not in url and "ana" not in url
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum()  # URL-safe

    def valid(candidate: str, email: str = "ana@example.com") -> bool:
        parsed = links.parse(candidate)
        return parsed is not None and links.signed(parsed[0], email, parsed[1])

    assert valid(token)
    signature = token.split(".")[1]
    forged = [
        f"43.{signature}",  # another contact
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # tampered signature
        token[:-2],  # cut short
        UnsubscribeLinks(PUBLIC, "another-secret-entirely").token(42, "ana@example.com"),
        f"042.{signature}",
        "42",
        "",
        "x" * 200,
    ]
    assert [valid(t) for t in forged] == [False] * len(forged)
    # Signed with the address: the same id with another address (an id reused) is refused
    assert not valid(token, "cy@example.com")


def test_links_need_both_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert unsubscribe_links(Settings()) is None
    assert unsubscribe_links(Settings(**LINKS)) == UnsubscribeLinks(PUBLIC, SECRET)
    # The public URL has other uses (HubSpot behind a proxy): alone, it is only a warning
    with caplog.at_level("WARNING", logger="engine.unsubscribe"):
        assert unsubscribe_links(Settings(public_url=PUBLIC)) is None
    assert "without one-click unsubscribe links" in caplog.text
    with pytest.raises(ConfigurationError, match="set it, or unset the secret"):
        unsubscribe_links(Settings(unsubscribe_secret=SECRET))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"public_url": "jl.example.com"}, "JOURNEYLINE_PUBLIC_URL='jl.example.com': must be"),
        ({"public_url": "https://jl.example.com/?a=1&b=2"}, "without query or fragment"),
        ({"unsubscribe_secret": "short"}, "JOURNEYLINE_UNSUBSCRIBE_SECRET='***': must be at"),
    ],
)
def test_bad_settings_are_named_as_variables(values: dict[str, str], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert expected in " ".join(describe_settings_error(caught.value))


def test_the_public_url_loses_its_trailing_slash() -> None:
    assert Settings(public_url="https://jl.example.com/base/").public_url == (
        "https://jl.example.com/base"
    )


# --- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TemplateRenderer(TEMPLATES).names())
def test_shipped_templates_render_with_and_without_a_link(name: str) -> None:
    renderer = TemplateRenderer(TEMPLATES)
    view = {"first_name": "Ana", "email": "ana@example.com", "stage": "awareness", "score": 5}
    data = {"discount": 20, "points": 100, "milestone": "one year"}
    plain = renderer.render(name, contact=view, data=data)
    linked = renderer.render(name, contact=view, data=data, unsubscribe_url=f"{PUBLIC}/u/1.x")
    assert "unsubscribe" not in (plain.text + plain.html).lower().replace("stop", "")
    if name in TRANSACTIONAL:
        assert linked == plain
    else:
        assert f"{PUBLIC}/u/1.x" in linked.text
        assert f'href="{PUBLIC}/u/1.x"' in linked.html


# --- through each connector ---------------------------------------------------------------


def _runtime(tmp_path: Path, **settings: Any) -> Runtime:
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    registry = build_registry(
        journey=lifecycle_journey(), rules=RULES, workflows=[HELLO], templates_dir=TEMPLATES
    )
    fields: dict[str, Any] = {
        "database_url": url,
        "broker_url": "inline://",
        "outbox_dir": tmp_path / "outbox",
        **settings,
    }
    return Runtime(Settings(**fields), clock=VirtualClock(), registry=registry, db=db)


def _outbox(tmp_path: Path) -> dict[str, email_parser.message.Message]:
    found = {}
    for path in (tmp_path / "outbox").glob("*.eml"):
        parsed = email_parser.message_from_bytes(path.read_bytes())
        found[parsed["X-Journeyline-Template"]] = parsed
    return found


def _unfolded(value: str) -> str:
    """A header as read: a long one is folded onto a continuation line (RFC 5322)."""
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _text(parsed: email_parser.message.Message) -> str:
    return "".join(
        part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for part in parsed.walk()
        if part.get_content_type() == "text/plain"
    )


def test_outbox_marketing_email_carries_the_headers_and_the_link_receipts_do_not(
    tmp_path: Path,
) -> None:
    with _runtime(tmp_path, **LINKS) as rt:
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
        url = UnsubscribeLinks(PUBLIC, SECRET).url(
            contact(rt, "ana@example.com").id,  # type: ignore[arg-type]
            "ana@example.com",
        )
    emails = _outbox(tmp_path)
    welcome, receipt = emails["welcome"], emails["thank_you"]
    assert _unfolded(welcome["List-Unsubscribe"]) == f"<{url}>"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"Unsubscribe from these emails: {url}" in _text(welcome)
    assert receipt["List-Unsubscribe"] is None and receipt["List-Unsubscribe-Post"] is None
    assert "unsubscribe" not in _text(receipt).lower()


def test_without_settings_nothing_changes(tmp_path: Path) -> None:
    with _runtime(tmp_path) as rt:
        rt.track("ana@example.com", "demo.requested")
        rt.run_until_idle()
    welcome = _outbox(tmp_path)["welcome"]
    assert welcome["List-Unsubscribe"] is None
    assert "nsubscribe" not in _text(welcome)


def test_a_single_sendgrid_send_carries_the_headers(tmp_path: Path) -> None:
    with FakeSendGrid(api_key=KEY) as fake:
        settings = {"email_connector": "sendgrid", "sendgrid_api_key": KEY, **LINKS}
        with _runtime(tmp_path, sendgrid_host=fake.url, sendgrid_batch_size=1, **settings) as rt:
            rt.track("ana@example.com", "demo.requested")
            rt.run_until_idle()
            url = UnsubscribeLinks(PUBLIC, SECRET).url(
                contact(rt, "ana@example.com").id,  # type: ignore[arg-type]
                "ana@example.com",
            )
        bodies = {r.body["headers"]["X-Journeyline-Template"]: r.body for r in fake.requests}
    assert bodies["welcome"]["headers"]["List-Unsubscribe"] == f"<{url}>"
    assert bodies["welcome"]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert url in bodies["welcome"]["content"][0]["value"]
    assert "List-Unsubscribe" not in bodies["thank_you"]["headers"]


def _broadcast(
    tmp_path: Path, fake: FakeSendGrid, *, substitutions: bool, template: str
) -> Runtime:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    for name, body in BROADCAST_TEMPLATES.items():
        (templates / f"{name}.j2").write_text(body)
    (templates / "linked.j2").write_text(
        "{% block subject %}Hello{% endblock %}"
        "{% block text %}Hi {{ contact.first_name | default('there') }}"
        "{% if unsubscribe_url %} / {{ unsubscribe_url }}{% endif %}{% endblock %}"
        "{% block html %}<p>Hi</p>{% if unsubscribe_url %}"
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endif %}{% endblock %}'
    )
    hello = sale(name="hello", steps=[send_email(template, id="hello")])
    registry = build_registry(
        journey=lifecycle_journey(), workflows=[hello], templates_dir=templates
    )
    url = f"sqlite:///{tmp_path}/jl.db"
    db = make_engine(url)
    SQLModel.metadata.create_all(db)
    connector = SendGridEmailConnector(
        api_key=KEY, host=fake.url, timeout_s=30, substitutions=substitutions
    )
    settings = Settings(database_url=url, broker_url="inline://", **LINKS)  # type: ignore[arg-type]
    return Runtime(settings, clock=VirtualClock(START), registry=registry, email=connector, db=db)


@pytest.mark.parametrize("substitutions", [True, False], ids=["substitutions", "no-substitutions"])
@pytest.mark.parametrize("template", ["linked", "spring_sale"])
def test_a_batched_send_gives_each_recipient_their_own_link_in_their_personalization(
    tmp_path: Path, substitutions: bool, template: str
) -> None:
    with FakeSendGrid(api_key=KEY) as fake:
        with _broadcast(tmp_path, fake, substitutions=substitutions, template=template) as rt:
            add_contacts(rt, 3, prefix="ada", attributes={"first_name": "Ada"})
            add_contacts(rt, 2, prefix="bob", attributes={"first_name": "Bob"})
            rt.broadcast("hello")
            rt.drain()
            with Session(rt.db) as session:
                ids = {c.email: c.id for c in session.exec(select(Contact))}
        links = UnsubscribeLinks(PUBLIC, SECRET)
        expected = {address: links.url(contact_id, address) for address, contact_id in ids.items()}  # type: ignore[arg-type]
        got: dict[str, str] = {}
        for request in fake.requests:
            assert "List-Unsubscribe" not in request.body.get("headers", {})
            for personalization in request.body["personalizations"]:
                (to,) = personalization["to"]
                headers = personalization["headers"]
                assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                got[to["email"]] = headers["List-Unsubscribe"]
        assert got == {address: f"<{url}>" for address, url in expected.items()}
        delivered = fake.sent_messages()
        assert len(delivered) == 5
        if template == "linked":
            for message in delivered:
                assert message.text.endswith(f" / {expected[message.to]}")
                assert f'href="{expected[message.to]}"' in message.html
                assert "-jlunsub-" not in message.text + message.html
        requests = len(fake.requests)
    # The link costs the batch no requests when SendGrid puts it in; otherwise a recipient
    # whose content holds their link gets a request of their own
    assert requests == (1 if substitutions or template != "linked" else 5)


# --- the route ----------------------------------------------------------------------------


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    runtime, clock, email = make_runtime(sqlite_url, **LINKS)
    try:
        yield from serve(runtime, clock, email)
    finally:
        runtime.close()


def _tracked(api: Api, address: str) -> tuple[int, str]:
    assert api.post_events({"email": address, "type": "page.viewed"}).status_code == 202
    api.runtime.drain()
    contact_id = contact(api.runtime, address).id
    assert contact_id is not None
    assert api.runtime.unsubscribe_links is not None
    return contact_id, api.runtime.unsubscribe_links.url(contact_id, address).removeprefix(PUBLIC)


def test_get_shows_a_button_and_changes_nothing_post_unsubscribes(api: Api) -> None:
    _id, path = _tracked(api, "ana@example.com")
    # Given a mail scanner following the link
    page = api.http.get(path)
    assert page.status_code == 200
    assert '<form method="post">' in page.text and "ana@example.com" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert contact(api.runtime, "ana@example.com").subscription_status == "subscribed"
    # When the mailbox provider posts the one-click request, twice
    for _ in range(2):
        done = api.http.post(path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        assert "unsubscribed" in done.text
    api.runtime.drain()
    # Then she is unsubscribed and her marketing ended
    assert contact(api.runtime, "ana@example.com").subscription_status == "unsubscribed"
    nurture = next(e for e in enrollments(api.runtime) if e.workflow == "awareness_nurture")
    assert (nurture.status, nurture.context["end_reason"]) == ("exited", "unsubscribed")
    timeline = api.get_contact("ana@example.com").json()["timeline"]
    assert [e["details"].get("properties") for e in timeline if "unsubscribed" in e["summary"]]


def test_a_bad_token_is_refused_and_changes_nothing(api: Api) -> None:
    contact_id, path = _tracked(api, "bo@example.com")
    forged = f"/v1/unsubscribe/{contact_id}.{'A' * 22}"
    for method in ("GET", "POST"):
        for target in (forged, "/v1/unsubscribe/nonsense", path[:-3]):
            answer = api.http.request(method, target)
            assert answer.status_code == 400, (method, target)
            assert "not valid" in answer.text
    assert contact(api.runtime, "bo@example.com").subscription_status == "subscribed"


def test_an_overlong_token_gets_the_same_page_as_any_bad_link(api: Api) -> None:
    """A person opening a mangled link (a mail client that glued text to it) reads the
    page, not the JSON API's 422, and nothing changes."""
    _id, path = _tracked(api, "el@example.com")
    for method in ("GET", "POST"):
        answer = api.http.request(method, path + "A" * 200)
        assert answer.status_code == 400, method
        assert answer.headers["content-type"].startswith("text/html")
        assert "not valid" in answer.text and answer.headers["cache-control"] == "no-store"
    assert contact(api.runtime, "el@example.com").subscription_status == "subscribed"


def test_the_link_of_an_erased_contact_is_refused_and_never_names_a_newcomer(api: Api) -> None:
    """SQLite gives a new contact the id of the last one erased: the old link, signed with
    the erased address, must not unsubscribe the newcomer."""
    old_id, path = _tracked(api, "cy@example.com")
    assert api.http.delete("/v1/contacts/cy@example.com", headers=api.auth()).status_code == 204
    assert api.http.post(path).status_code == 400
    new_id, _path = _tracked(api, "dee@example.com")
    assert new_id == old_id  # the id was reused (the situation this guards against)
    answer = api.http.post(path)
    assert answer.status_code == 400 and "not valid" in answer.text
    assert contact(api.runtime, "dee@example.com").subscription_status == "subscribed"


def test_without_links_configured_the_route_is_not_found(sqlite_url: str) -> None:
    runtime, clock, email = make_runtime(sqlite_url)
    try:
        for api in serve(runtime, clock, email):
            token = UnsubscribeLinks(PUBLIC, SECRET).token(1, "ana@example.com")
            answer = api.http.post(f"/v1/unsubscribe/{token}")
            assert answer.status_code == 404 and "not configured" in answer.text
    finally:
        runtime.close()
