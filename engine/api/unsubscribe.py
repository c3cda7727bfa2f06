"""``/v1/unsubscribe/{token}``: one-click unsubscribe (RFC 8058), without an API key.

The link in a marketing email's ``List-Unsubscribe`` header and its ``unsubscribe_url``
(engine/unsubscribe.py). ``POST`` unsubscribes the contact the token names, as a SendGrid
unsubscribe does (``engine.contacts.set_subscription``): a mailbox provider's one-click
request (body ``List-Unsubscribe=One-Click``) or the button of the page ``GET`` shows.
``GET`` changes nothing: mail scanners and link previews follow links, and only a person
should unsubscribe. A repeat is harmless and answers the same.

A malformed or wrongly signed token, or one of a contact since erased, answers 400, and
a server without links configured (``JOURNEYLINE_PUBLIC_URL``,
``JOURNEYLINE_UNSUBSCRIBE_SECRET``) 404; none of them changes anything. Answers are short
HTML pages (people read them), never cached, and the page never names the address.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse
from sqlmodel import Session, select

from engine.api.deps import RuntimeDep
from engine.models import Contact, SubscriptionStatus
from engine.runtime import Runtime
from engine.unsubscribe import ROUTE, change_subscription

# Pages for people and mailbox providers, not part of the JSON API the OpenAPI document
# describes (no API key, HTML answers): left out of it.
router = APIRouter(prefix=ROUTE, tags=["unsubscribe"], include_in_schema=False)

# No length limit here: an overlong token (a mangled link) is refused like any other bad
# link, with the page a person can read, not the JSON API's 422. ``parse`` matches a
# bounded pattern, so a long one costs nothing.
TokenPath = Annotated[str, Path(description="The signed token of an unsubscribe link.")]

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is the credential: never in a Referer
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}
NOT_CONFIGURED = "Unsubscribe links are not configured on this server."
INVALID = (
    "This unsubscribe link is not valid: it may have been cut short or changed, or its "
    "contact no longer exists. Open the whole link from the email again; nothing was changed."
)
GONE = "There is no contact for this link any more (it may have been erased): nothing to do."
ASK = "Unsubscribe from our marketing email? Receipts and other transactional email still go."
DONE = "You are unsubscribed: you will get no more marketing email from us."


def _page(status: int, message: str, *, button: bool = False) -> HTMLResponse:
    form = (
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if button
        else ""
    )
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Unsubscribe</title></head>"
        '<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">'
        f"<p>{escape(message)}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _contact_of(runtime: Runtime, token: str) -> int | HTMLResponse:
    """The contact id the token names, or the page refusing it. The signature covers the
    contact's address, so a link whose contact is gone (erased) cannot be told from a
    forged one: both are refused as not valid, and neither changes anything."""
    links = runtime.unsubscribe_links
    if links is None:
        return _page(404, NOT_CONFIGURED)
    parsed = links.parse(token)
    if parsed is None:
        return _page(400, INVALID)
    contact_id, signature = parsed
    with Session(runtime.db) as session:
        email = session.exec(select(Contact.email).where(Contact.id == contact_id)).first()
    if email is None or not links.signed(contact_id, email, signature):
        return _page(400, INVALID)
    return contact_id


@router.get(
    "/{token}",
    summary="The unsubscribe page: a button that unsubscribes (this request changes nothing)",
    response_class=HTMLResponse,
)
def unsubscribe_page(runtime: RuntimeDep, token: TokenPath) -> HTMLResponse:
    found = _contact_of(runtime, token)
    if isinstance(found, HTMLResponse):
        return found
    return _page(200, ASK, button=True)


@router.post(
    "/{token}",
    summary="Unsubscribe the contact the link names (RFC 8058 one-click)",
    response_class=HTMLResponse,
)
def unsubscribe(runtime: RuntimeDep, token: TokenPath) -> HTMLResponse:
    found = _contact_of(runtime, token)
    if isinstance(found, HTMLResponse):
        return found
    done = change_subscription(
        runtime, SubscriptionStatus.UNSUBSCRIBED, via="link", contact_id=found
    )
    if done is None:
        return _page(404, GONE)
    return _page(200, DONE)
