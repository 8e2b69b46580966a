"""Email from the customer card: POST /api/v1/messages/email, and the full body behind a
timeline entry: GET /api/v1/messages/{id} (plus its attachments)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from hub.errors import NotFound
from hub.mail.outbound import draft_from_json, message_to_dict, send_email
from hub.models.mail import EmailMessage
from hub.users import audit
from web.auth import require_role
from web.errors import api_error, int_param, json_body
from web.keys import HUB

SENDERS = ("agent", "supervisor")
READERS = ("agent", "marketer", "supervisor")


async def send(request: web.Request) -> web.Response:
    """POST /api/v1/messages/email {customer_id | to, subject, text, html, template?, in_reply_to?}

    201 with the message once the SMTP server accepted it; 502 when it refused for good (the
    attempt is logged, a refused address suppressed), 503 when it could not be reached."""
    user = require_role(request, *SENDERS)
    hub = request.app[HUB]
    draft = draft_from_json(await json_body(request))
    sender = hub.part("email")
    if sender is None:
        raise api_error(503, "not_configured", "email sending is not configured ([smtp] host)")
    row = await send_email(
        hub.sessions,
        sender,
        draft,
        from_address=hub.config.smtp.from_address,
        user_id=user.id,
        tz=hub.config.campaigns.timezone,
    )
    async with hub.sessions() as session, session.begin():
        await audit(session, user.id, "email.send", f"email:{row.id}", to=row.to_addresses)
    return web.json_response(message_to_dict(row, full=True), status=201)


async def _message(request: web.Request) -> EmailMessage:
    hub = request.app[HUB]
    message_id = int_param(request.match_info["id"], "id")
    async with hub.sessions() as session:
        row = await session.get(EmailMessage, message_id)
    if row is None:
        raise NotFound(f"message {message_id} not found")
    return row


async def get_message(request: web.Request) -> web.Response:
    """GET /api/v1/messages/{id}: one email with its bodies (html is unfiltered: sandbox it)."""
    require_role(request, *READERS)
    return web.json_response(message_to_dict(await _message(request), full=True))


async def get_attachment(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/messages/{id}/attachments/{n}: the file, always as a download."""
    require_role(request, *READERS)
    row = await _message(request)
    index = int_param(request.match_info["n"], "n")
    if not 0 <= index < len(row.attachments):
        raise NotFound(f"message {row.id} has no attachment {index}")
    meta = row.attachments[index]
    root = Path(request.app[HUB].config.imap.attachments_dir).resolve()
    path = Path(str(meta.get("path") or "")).resolve()
    # The stored path is ours, but a file outside the attachments folder is never served.
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"attachment {index} of message {row.id} is not on disk")
    name = str(meta.get("name") or "attachment").replace('"', "")
    response = web.FileResponse(path)
    # Served as opaque bytes: an attached text/html or SVG must never run in our origin.
    response.content_type = "application/octet-stream"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{name.encode("ascii", "replace").decode()}"; '
        f"filename*=UTF-8''{_quote(name)}"
    )
    return response


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def setup(app: web.Application) -> None:
    """Register routes."""
    r = app.router
    r.add_post("/api/v1/messages/email", send)
    r.add_get(r"/api/v1/messages/{id:\d+}", get_message)
    r.add_get(r"/api/v1/messages/{id:\d+}/attachments/{n:\d+}", get_attachment)
