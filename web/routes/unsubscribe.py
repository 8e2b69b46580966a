"""Unsubscribe links without login: GET /u/{token} (a page asking to confirm), POST /u/{token}
(the page's button and RFC 8058 one-click "List-Unsubscribe=One-Click"), and the open pixel.

A GET never unsubscribes: mail scanners fetch links. A token that is forged, altered or signed for
another purpose is a 404 and changes nothing."""

from __future__ import annotations

import base64

from aiohttp import web

from hub.campaigns.consent import addresses_of, apply_unsubscribe, read_token, record_open
from hub.consent import is_suppressed
from web.app import JINJA
from web.auth import public
from web.keys import HUB

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _mask(address: str) -> str:
    """Show enough of an address to recognise it, not enough to harvest it."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:2]}{'*' * max(1, len(local) - 2)}@{domain}"
    return f"{address[:4]}{'*' * max(1, len(address) - 6)}{address[-2:]}"


def _page(request: web.Request, status: int, **context: object) -> web.Response:
    html = request.app[JINJA].get_template("unsubscribe.html").render(**context)
    return web.Response(text=html, status=status, content_type="text/html", headers=_NO_STORE)


def _invalid(request: web.Request) -> web.Response:
    return _page(request, 404, title="Link not valid", state="invalid", channel="email")


@public
async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET /u/{token}: confirm page (or "already done")."""
    hub = request.app[HUB]
    token = request.match_info["token"]
    link = read_token(hub.config.web.secret_key, token)
    if link is None:
        return _invalid(request)
    async with hub.sessions() as session:
        addresses = await addresses_of(session, link)
        done = bool(addresses) and all(
            [await is_suppressed(session, link.channel, a) for a in addresses]
        )
    return _page(
        request,
        200,
        title="Unsubscribed" if done else "Unsubscribe",
        state="done" if done else "confirm",
        channel=link.channel,
        token=token,
        addresses=[_mask(a) for a in addresses],
    )


@public
async def unsubscribe(request: web.Request) -> web.Response:
    """POST /u/{token}: unsubscribe now (one-click from a mail client, or the page's button)."""
    hub = request.app[HUB]
    link = read_token(hub.config.web.secret_key, request.match_info["token"])
    if link is None:
        return _invalid(request)
    form = await request.post() if request.can_read_body else {}
    one_click = form.get("List-Unsubscribe") == "One-Click"
    async with hub.sessions() as session, session.begin():
        await apply_unsubscribe(session, link, "one-click" if one_click else "link")
        addresses = await addresses_of(session, link)
    if one_click:
        return web.Response(text="unsubscribed\n", headers=_NO_STORE)
    return _page(
        request,
        200,
        title="Unsubscribed",
        state="done",
        channel=link.channel,
        addresses=[_mask(a) for a in addresses],
    )


@public
async def open_pixel(request: web.Request) -> web.Response:
    """GET /u/{token}/open.gif: note the first open of a campaign email."""
    hub = request.app[HUB]
    link = read_token(hub.config.web.secret_key, request.match_info["token"], purpose="o")
    if link is None:
        raise web.HTTPNotFound()
    async with hub.sessions() as session, session.begin():
        await record_open(session, link)
    return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_STORE)


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/u/{token}", unsubscribe_page)
    app.router.add_post("/u/{token}", unsubscribe)
    app.router.add_get("/u/{token}/open.gif", open_pixel)
