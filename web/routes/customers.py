"""Customers JSON API: search, create, read, change, delete, timeline, merge."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from hub import customers as svc
from hub.errors import ValidationError
from hub.timeline import interaction_to_dict, timeline
from hub.users import audit
from web.auth import require_role
from web.errors import int_param, json_body, path_id
from web.keys import HUB

READERS = ("agent", "marketer", "supervisor")
WRITERS = ("agent", "marketer", "supervisor")


async def list_customers(request: web.Request) -> web.Response:
    """GET /api/v1/customers?q=&phone=&email=&tag=&source=&sort=&order=&limit=&cursor="""
    require_role(request, *READERS)
    hub = request.app[HUB]
    qs = request.query
    async with hub.sessions() as session:
        rows, cursor = await svc.search_customers(
            session,
            region=hub.region,
            q=qs.get("q", ""),
            phone=qs.get("phone", ""),
            email=qs.get("email", ""),
            tag=qs.get("tag", ""),
            source=qs.get("source", ""),
            sort=qs.get("sort", "name"),
            descending=qs.get("order", "asc") == "desc",
            limit=int_param(qs.get("limit", ""), "limit", 50),
            cursor=qs.get("cursor") or None,
        )
        return web.json_response({"items": [svc.customer_to_dict(c) for c in rows], "next": cursor})


async def create_customer(request: web.Request) -> web.Response:
    """POST /api/v1/customers"""
    user = require_role(request, *WRITERS)
    hub = request.app[HUB]
    data = await json_body(request)
    async with hub.sessions() as session, session.begin():
        customer = await svc.create_customer(session, data, hub.region)
        await audit(session, user.id, "customer.create", f"customer:{customer.id}")
        body = svc.customer_to_dict(customer)
    # After commit: triggered messages (a welcome email) listen for this.
    await hub.bus.publish(
        "internal:customer.created",
        {"type": "customer.created", "customer_id": body["id"], "by": user.username},
    )
    return web.json_response(body, status=201)


async def get_customer(request: web.Request) -> web.Response:
    """GET /api/v1/customers/{id}: the card (customer, last interactions, open reminders)."""
    require_role(request, *READERS)
    hub = request.app[HUB]
    async with hub.sessions() as session:
        customer = await svc.get_customer(session, path_id(request))
        return web.json_response(await svc.customer_card(session, customer))


async def patch_customer(request: web.Request) -> web.Response:
    """PATCH /api/v1/customers/{id}"""
    user = require_role(request, *WRITERS)
    hub = request.app[HUB]
    data = await json_body(request)
    async with hub.sessions() as session, session.begin():
        customer = await svc.update_customer(session, path_id(request), data, hub.region)
        await audit(
            session, user.id, "customer.update", f"customer:{customer.id}", fields=sorted(data)
        )
        body = svc.customer_to_dict(customer)
    return web.json_response(body)


async def delete_customer(request: web.Request) -> web.Response:
    """DELETE /api/v1/customers/{id} (supervisors and admins only)."""
    user = require_role(request, "supervisor")
    hub = request.app[HUB]
    customer_id = path_id(request)
    async with hub.sessions() as session, session.begin():
        await svc.delete_customer(session, customer_id)
        await audit(session, user.id, "customer.delete", f"customer:{customer_id}")
    return web.json_response({"deleted": customer_id})


async def customer_timeline(request: web.Request) -> web.Response:
    """GET /api/v1/customers/{id}/timeline?channel=&limit=&cursor= (newest first)."""
    require_role(request, *READERS)
    hub = request.app[HUB]
    qs = request.query
    limit = max(1, min(int_param(qs.get("limit", ""), "limit", 50), 200))
    before = None
    if qs.get("cursor"):
        at, _, row_id = qs["cursor"].partition("|")
        try:
            before = (datetime.fromisoformat(at), int(row_id))
        except ValueError:
            raise ValidationError("bad cursor", field="cursor") from None
    async with hub.sessions() as session:
        await svc.get_customer(session, path_id(request))
        rows = await timeline(
            session, path_id(request), limit=limit + 1, before=before, channel=qs.get("channel")
        )
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = f"{rows[-1].occurred_at.isoformat()}|{rows[-1].id}"
    return web.json_response({"items": [interaction_to_dict(r) for r in rows], "next": nxt})


async def merge_customer(request: web.Request) -> web.Response:
    """POST /api/v1/customers/{id}/merge {"other_id"}: fold a duplicate into this one."""
    user = require_role(request, *WRITERS)
    hub = request.app[HUB]
    data = await json_body(request)
    other = data.get("other_id")
    if not isinstance(other, int):
        raise ValidationError("other_id must be a customer id", field="other_id")
    async with hub.sessions() as session, session.begin():
        keep = await svc.merge_customers(session, path_id(request), other)
        await audit(session, user.id, "customer.merge", f"customer:{keep.id}", merged=other)
        body = svc.customer_to_dict(keep)
    return web.json_response(body)


def setup(app: web.Application) -> None:
    """Register routes."""
    r = app.router
    r.add_get("/api/v1/customers", list_customers)
    r.add_post("/api/v1/customers", create_customer)
    r.add_get("/api/v1/customers/{id}", get_customer)
    r.add_patch("/api/v1/customers/{id}", patch_customer)
    r.add_delete("/api/v1/customers/{id}", delete_customer)
    r.add_get("/api/v1/customers/{id}/timeline", customer_timeline)
    r.add_post("/api/v1/customers/{id}/merge", merge_customer)
