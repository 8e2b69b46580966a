"""Notes on a customer: a timeline row of channel "note", written by agents (quick note)."""

from __future__ import annotations

import uuid

from aiohttp import web

from hub import customers as svc
from hub.errors import ValidationError
from hub.timeline import interaction_to_dict, record_interaction
from hub.users import audit
from web.auth import require_role
from web.errors import json_body
from web.keys import HUB

MAX_NOTE = 10_000


async def add_note(request: web.Request) -> web.Response:
    """POST /api/v1/customers/{id}/notes {"text", "call_id"?} → the new timeline row (201)."""
    user = require_role(request, "agent")
    hub = request.app[HUB]
    try:
        customer_id = int(request.match_info["id"])
    except ValueError:
        raise ValidationError("id must be a whole number", field="id") from None
    data = await json_body(request)
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("text is required", field="text")
    text = text.strip()
    if len(text) > MAX_NOTE:
        raise ValidationError(f"a note has at most {MAX_NOTE} characters", field="text")
    extra: dict[str, object] = {"author": user.username}
    call_id = data.get("call_id")
    if call_id not in (None, ""):
        if not isinstance(call_id, str) or len(call_id) > 64:
            raise ValidationError("call_id must be the call's id", field="call_id")
        extra["call_id"] = call_id
    async with hub.sessions() as session, session.begin():
        await svc.get_customer(session, customer_id)
        row, _ = await record_interaction(
            session,
            channel="note",
            external_id=str(uuid.uuid4()),
            customer_id=customer_id,
            user_id=user.id,
            summary=text,
            data=extra,
        )
        await audit(session, user.id, "note.create", f"customer:{customer_id}", interaction=row.id)
        body = interaction_to_dict(row)
    body["author"] = user.username
    return web.json_response(body, status=201)


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_post("/api/v1/customers/{id}/notes", add_note)
