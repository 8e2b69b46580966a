"""Reminders API: my open callbacks and follow-ups; mark done."""

from __future__ import annotations

from aiohttp import web

from hub.errors import ValidationError
from hub.models.interactions import Reminder
from hub.reminders import complete_reminder, create_reminder, open_reminders, reminder_to_dict
from web.auth import has_role, require_role
from web.errors import api_error, json_body
from web.keys import HUB


async def list_reminders(request: web.Request) -> web.Response:
    """GET /api/v1/reminders?mine=1&customer_id=: open reminders, soonest first."""
    user = require_role(request, "agent", "supervisor")
    hub = request.app[HUB]
    mine = request.query.get("mine") == "1" or not has_role(user, "supervisor")
    customer = request.query.get("customer_id")
    async with hub.sessions() as session:
        rows = await open_reminders(
            session,
            assignee_id=user.id if mine and not customer else None,
            customer_id=int(customer) if customer and customer.isdigit() else None,
            limit=200,
        )
        if mine and not customer:
            # Unassigned callbacks (a missed queue call) are everybody's until someone takes them.
            rows += [r for r in await open_reminders(session, limit=200) if r.assignee_id is None]
    return web.json_response({"items": [reminder_to_dict(r) for r in rows], "next": None})


async def create(request: web.Request) -> web.Response:
    """POST /api/v1/reminders {"title", "customer_id"?, "due_at"?}: a reminder for me."""
    user = require_role(request, "agent", "supervisor")
    hub = request.app[HUB]
    data = await json_body(request)
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValidationError("title is required", field="title")
    from datetime import datetime

    due = None
    if data.get("due_at"):
        try:
            due = datetime.fromisoformat(str(data["due_at"]))
        except ValueError:
            raise ValidationError("due_at must be an ISO date-time", field="due_at") from None
        if due.tzinfo is None:
            raise ValidationError("due_at needs a time zone offset", field="due_at")
    async with hub.sessions() as session, session.begin():
        reminder, _ = await create_reminder(
            session,
            title=title.strip(),
            customer_id=data.get("customer_id"),
            assignee_id=user.id,
            due_at=due,
        )
        body = reminder_to_dict(reminder)
    return web.json_response(body, status=201)


async def done(request: web.Request) -> web.Response:
    """POST /api/v1/reminders/{id}/done"""
    user = require_role(request, "agent", "supervisor")
    hub = request.app[HUB]
    try:
        reminder_id = int(request.match_info["id"])
    except ValueError:
        raise ValidationError("id must be a number", field="id") from None
    async with hub.sessions() as session, session.begin():
        reminder = await session.get(Reminder, reminder_id)
        if reminder is None or (
            reminder.assignee_id not in (None, user.id) and not has_role(user, "supervisor")
        ):
            raise api_error(404, "not_found", f"reminder {reminder_id} not found")
        reminder = await complete_reminder(session, reminder_id)
        assert reminder is not None
        body = reminder_to_dict(reminder)
    return web.json_response(body)


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/api/v1/reminders", list_reminders)
    app.router.add_post("/api/v1/reminders", create)
    app.router.add_post("/api/v1/reminders/{id}/done", done)
