"""Campaigns JSON API: templates, segments (live count), campaigns, schedules, progress, reports,
trigger rules. Role marketer (admins pass)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub.campaigns import report, service
from hub.campaigns.templates import TemplateInvalid
from hub.errors import ValidationError
from hub.models.campaigns import CampaignRun
from hub.phone import normalize_email, normalize_phone
from hub.services import Hub
from hub.users import audit
from web.auth import require_role
from web.errors import error_response, int_param, json_body, path_id
from web.keys import HUB

ROLE = "marketer"
PROGRESS_TOPIC = "role:marketer"


def _invalid_template(err: TemplateInvalid) -> web.Response:
    first = err.problems[0]
    return error_response(
        400,
        "invalid_template",
        str(err),
        part=first.part,
        line=first.line,
        name=first.name,
        problems=[p.as_dict() for p in err.problems],
    )


def _wake(hub: Hub) -> None:
    engine = hub.part("campaigns")
    if engine is not None:
        engine.wake()


async def _publish(hub: Hub, campaign_id: int) -> None:
    """campaign.progress for the campaign's unfinished and latest runs, after the commit."""
    async with hub.sessions() as session:
        runs = (
            await session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == campaign_id)
                .order_by(CampaignRun.id.desc())
                .limit(3)
            )
        ).all()
        events = [await service.run_progress(session, run) for run in runs]
    for event in events:
        await hub.bus.publish(PROGRESS_TOPIC, event)


# --- templates ------------------------------------------------------------------------------


async def list_templates(request: web.Request) -> web.Response:
    """GET /api/v1/templates?channel="""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        rows = await service.list_templates(session, request.query.get("channel") or None)
        return web.json_response(
            {"items": [service.template_to_dict(t) for t in rows], "next": None}
        )


async def create_template(request: web.Request) -> web.Response:
    """POST /api/v1/templates: refused with 400 (part, line, name) unless it renders."""
    user = require_role(request, ROLE)
    data = await json_body(request)
    try:
        async with request.app[HUB].sessions() as session, session.begin():
            row = await service.create_template(session, data, user.id)
            await audit(session, user.id, "template.create", f"template:{row.id}")
            body = service.template_to_dict(row)
    except TemplateInvalid as err:
        return _invalid_template(err)
    return web.json_response(body, status=201)


async def validate_template(request: web.Request) -> web.Response:
    """POST /api/v1/templates/validate: check without saving (for the editor)."""
    require_role(request, ROLE)
    data = await json_body(request)
    from hub.campaigns.templates import validate_template as check

    try:
        check(str(data.get("channel")), {p: data.get(p) or "" for p in ("subject", "html", "text")})
    except TemplateInvalid as err:
        return _invalid_template(err)
    return web.json_response({"ok": True})


async def get_template(request: web.Request) -> web.Response:
    """GET /api/v1/templates/{id}"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        return web.json_response(
            service.template_to_dict(await service.get_template(session, path_id(request)))
        )


async def patch_template(request: web.Request) -> web.Response:
    """PATCH /api/v1/templates/{id}: validated as a whole before it is stored."""
    user = require_role(request, ROLE)
    data = await json_body(request)
    try:
        async with request.app[HUB].sessions() as session, session.begin():
            row = await service.update_template(session, path_id(request), data)
            await audit(session, user.id, "template.update", f"template:{row.id}")
            body = service.template_to_dict(row)
    except TemplateInvalid as err:
        return _invalid_template(err)
    return web.json_response(body)


async def delete_template(request: web.Request) -> web.Response:
    """DELETE /api/v1/templates/{id}"""
    user = require_role(request, ROLE)
    template_id = path_id(request)
    async with request.app[HUB].sessions() as session, session.begin():
        await service.delete_template(session, template_id)
        await audit(session, user.id, "template.delete", f"template:{template_id}")
    return web.json_response({"deleted": template_id})


async def preview_template(request: web.Request) -> web.Response:
    """POST /api/v1/templates/{id}/preview {"customer_id"?}"""
    require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    customer_id = _optional_id(data, "customer_id")
    async with hub.sessions() as session:
        template = await service.get_template(session, path_id(request))
        rendered = await service.preview(
            session,
            template,
            customer_id=customer_id,
            campaign=None,
            base_url=hub.config.web.base_url,
        )
    return web.json_response(service.rendered_to_dict(rendered, template.channel))


def _optional_id(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an id", field=name)
    return value


# --- segments -------------------------------------------------------------------------------


async def list_segments(request: web.Request) -> web.Response:
    """GET /api/v1/segments"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        rows = await service.list_segments(session)
        return web.json_response(
            {"items": [service.segment_to_dict(s) for s in rows], "next": None}
        )


async def create_segment(request: web.Request) -> web.Response:
    """POST /api/v1/segments {"name", "description"?, "filter"}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    async with request.app[HUB].sessions() as session, session.begin():
        row = await service.create_segment(session, data, user.id)
        await audit(session, user.id, "segment.create", f"segment:{row.id}")
        body = service.segment_to_dict(row)
    return web.json_response(body, status=201)


async def get_segment(request: web.Request) -> web.Response:
    """GET /api/v1/segments/{id}"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        return web.json_response(
            service.segment_to_dict(await service.get_segment(session, path_id(request)))
        )


async def patch_segment(request: web.Request) -> web.Response:
    """PATCH /api/v1/segments/{id}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    async with request.app[HUB].sessions() as session, session.begin():
        row = await service.update_segment(session, path_id(request), data)
        await audit(session, user.id, "segment.update", f"segment:{row.id}")
        body = service.segment_to_dict(row)
    return web.json_response(body)


async def delete_segment(request: web.Request) -> web.Response:
    """DELETE /api/v1/segments/{id}"""
    user = require_role(request, ROLE)
    segment_id = path_id(request)
    async with request.app[HUB].sessions() as session, session.begin():
        await service.delete_segment(session, segment_id)
        await audit(session, user.id, "segment.delete", f"segment:{segment_id}")
    return web.json_response({"deleted": segment_id})


async def count_segment(request: web.Request) -> web.Response:
    """POST /api/v1/segments/count {"filter"} or {"segment_id"}, "timezone"?: the live count."""
    require_role(request, ROLE)
    data = await json_body(request)
    tz_name = data.get("timezone") or "UTC"
    if not isinstance(tz_name, str):
        raise ValidationError("timezone must be an IANA zone name", field="timezone")
    async with request.app[HUB].sessions() as session:
        if data.get("segment_id") is not None:
            segment = await service.get_segment(
                session, int_param(str(data["segment_id"]), "segment_id")
            )
            spec: Any = segment.filter
        else:
            spec = data.get("filter") or {}
        count = await service.count_segment(session, spec, tz_name=tz_name)
    return web.json_response({"count": count})


async def count_saved_segment(request: web.Request) -> web.Response:
    """GET /api/v1/segments/{id}/count?timezone="""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        segment = await service.get_segment(session, path_id(request))
        count = await service.count_segment(
            session, segment.filter, tz_name=request.query.get("timezone") or "UTC"
        )
    return web.json_response({"count": count})


# --- campaigns ------------------------------------------------------------------------------


async def list_campaigns(request: web.Request) -> web.Response:
    """GET /api/v1/campaigns?status=&limit=&cursor= (newest first)."""
    require_role(request, ROLE)
    qs = request.query
    async with request.app[HUB].sessions() as session:
        rows, nxt = await service.list_campaigns(
            session,
            status=qs.get("status") or None,
            limit=int_param(qs.get("limit", ""), "limit", 50),
            before_id=int_param(qs["cursor"], "cursor") if qs.get("cursor") else None,
        )
        items = [
            service.campaign_to_dict(c, await service.get_schedule(session, c.id)) for c in rows
        ]
    return web.json_response({"items": items, "next": str(nxt) if nxt else None})


async def create_campaign(request: web.Request) -> web.Response:
    """POST /api/v1/campaigns {"name", "channel", "template_id", "segment_id"?, ...}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    async with request.app[HUB].sessions() as session, session.begin():
        row = await service.create_campaign(session, data, user.id)
        await audit(session, user.id, "campaign.create", f"campaign:{row.id}")
        body = service.campaign_to_dict(row)
    return web.json_response(body, status=201)


async def get_campaign(request: web.Request) -> web.Response:
    """GET /api/v1/campaigns/{id}"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        row = await service.get_campaign(session, path_id(request))
        body = service.campaign_to_dict(row, await service.get_schedule(session, row.id))
    return web.json_response(body)


async def patch_campaign(request: web.Request) -> web.Response:
    """PATCH /api/v1/campaigns/{id}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    async with request.app[HUB].sessions() as session, session.begin():
        row = await service.update_campaign(session, path_id(request), data)
        await audit(session, user.id, "campaign.update", f"campaign:{row.id}", fields=sorted(data))
        body = service.campaign_to_dict(row, await service.get_schedule(session, row.id))
    return web.json_response(body)


async def delete_campaign(request: web.Request) -> web.Response:
    """DELETE /api/v1/campaigns/{id} (not while sending)."""
    user = require_role(request, ROLE)
    campaign_id = path_id(request)
    async with request.app[HUB].sessions() as session, session.begin():
        await service.delete_campaign(session, campaign_id)
        await audit(session, user.id, "campaign.delete", f"campaign:{campaign_id}")
    return web.json_response({"deleted": campaign_id})


async def preview_campaign(request: web.Request) -> web.Response:
    """POST /api/v1/campaigns/{id}/preview {"customer_id"}: the message as that customer gets it."""
    require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    customer_id = _optional_id(data, "customer_id")
    async with hub.sessions() as session:
        campaign = await service.get_campaign(session, path_id(request))
        template = await service.get_template(session, campaign.template_id)
        rendered = await service.preview(
            session,
            template,
            customer_id=customer_id,
            campaign=campaign,
            base_url=hub.config.web.base_url,
        )
    return web.json_response(service.rendered_to_dict(rendered, campaign.channel))


async def schedule_campaign(request: web.Request) -> web.Response:
    """POST /api/v1/campaigns/{id}/schedule {"now": true} | {"at"} | {"cron", "timezone"} |
    {"clear": true}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    campaign_id = path_id(request)
    async with hub.sessions() as session, session.begin():
        result = await service.schedule_campaign(session, campaign_id, data)
        await audit(
            session,
            user.id,
            "campaign.schedule",
            f"campaign:{campaign_id}",
            **{k: v for k, v in data.items() if k in ("now", "at", "cron", "timezone", "clear")},
        )
        campaign = await service.get_campaign(session, campaign_id)
        body = {
            **result,
            "campaign": service.campaign_to_dict(
                campaign, await service.get_schedule(session, campaign_id)
            ),
        }
    _wake(hub)
    await _publish(hub, campaign_id)
    return web.json_response(body)


def _state_handler(action: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        user = require_role(request, ROLE)
        hub = request.app[HUB]
        campaign_id = path_id(request)
        data = await json_body(request) if request.can_read_body else {}
        reason = data.get("reason") or ""
        if not isinstance(reason, str):
            raise ValidationError("reason must be text", field="reason")
        async with hub.sessions() as session, session.begin():
            campaign = await service.set_campaign_state(session, campaign_id, action, reason[:300])
            await audit(session, user.id, f"campaign.{action}", f"campaign:{campaign_id}")
            body = service.campaign_to_dict(
                campaign, await service.get_schedule(session, campaign_id)
            )
        _wake(hub)
        await _publish(hub, campaign_id)
        return web.json_response(body)

    handler.__doc__ = f"POST /api/v1/campaigns/{{id}}/{action}"
    return handler


async def send_test(request: web.Request) -> web.Response:
    """POST /api/v1/campaigns/{id}/test {"to", "customer_id"?}: one message to one address."""
    user = require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    engine = hub.part("campaigns")
    if engine is None:
        raise ValidationError("the campaign engine is not running in this process")
    to = data.get("to")
    if not isinstance(to, str) or not to.strip():
        raise ValidationError("to is required", field="to")
    customer_id = _optional_id(data, "customer_id")
    async with hub.sessions() as session:
        campaign = await service.get_campaign(session, path_id(request))
        template = await service.get_template(session, campaign.template_id)
    address = (
        normalize_email(to) if campaign.channel == "email" else normalize_phone(to, hub.region)
    )
    provider_id = await engine.send_test(
        template, address, customer_id=customer_id, campaign=campaign
    )
    async with hub.sessions() as session, session.begin():
        await audit(session, user.id, "campaign.test", f"campaign:{campaign.id}", to=address)
    return web.json_response({"sent": True, "to": address, "id": provider_id})


async def campaign_progress(request: web.Request) -> web.Response:
    """GET /api/v1/campaigns/{id}/progress: state and counts of the latest runs."""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        return web.json_response(await service.campaign_progress(session, path_id(request)))


async def campaign_report(request: web.Request) -> web.Response:
    """GET /api/v1/campaigns/{id}/report: per run and per customer source."""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        return web.json_response(await report.campaign_report(session, path_id(request)))


# --- trigger rules --------------------------------------------------------------------------


async def list_rules(request: web.Request) -> web.Response:
    """GET /api/v1/triggers"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        rows = await service.list_rules(session)
        return web.json_response({"items": [service.rule_to_dict(r) for r in rows], "next": None})


async def create_rule(request: web.Request) -> web.Response:
    """POST /api/v1/triggers {"name", "event", "channel", "template_id", ...}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    async with hub.sessions() as session, session.begin():
        rule = await service.create_rule(session, data, user.id)
        await audit(session, user.id, "trigger.create", f"trigger:{rule.id}")
        body = service.rule_to_dict(rule)
    _wake(hub)
    return web.json_response(body, status=201)


async def get_rule(request: web.Request) -> web.Response:
    """GET /api/v1/triggers/{id}"""
    require_role(request, ROLE)
    async with request.app[HUB].sessions() as session:
        return web.json_response(
            service.rule_to_dict(await service.get_rule(session, path_id(request)))
        )


async def patch_rule(request: web.Request) -> web.Response:
    """PATCH /api/v1/triggers/{id}"""
    user = require_role(request, ROLE)
    data = await json_body(request)
    hub = request.app[HUB]
    async with hub.sessions() as session, session.begin():
        rule = await service.update_rule(session, path_id(request), data)
        await audit(session, user.id, "trigger.update", f"trigger:{rule.id}", fields=sorted(data))
        body = service.rule_to_dict(rule)
    _wake(hub)
    return web.json_response(body)


async def delete_rule(request: web.Request) -> web.Response:
    """DELETE /api/v1/triggers/{id}"""
    user = require_role(request, ROLE)
    rule_id = path_id(request)
    async with request.app[HUB].sessions() as session, session.begin():
        await service.delete_rule(session, rule_id)
        await audit(session, user.id, "trigger.delete", f"trigger:{rule_id}")
    return web.json_response({"deleted": rule_id})


def setup(app: web.Application) -> None:
    """Register routes."""
    r = app.router
    r.add_get("/api/v1/templates", list_templates)
    r.add_post("/api/v1/templates", create_template)
    r.add_post("/api/v1/templates/validate", validate_template)
    r.add_get("/api/v1/templates/{id}", get_template)
    r.add_patch("/api/v1/templates/{id}", patch_template)
    r.add_delete("/api/v1/templates/{id}", delete_template)
    r.add_post("/api/v1/templates/{id}/preview", preview_template)
    r.add_get("/api/v1/segments", list_segments)
    r.add_post("/api/v1/segments", create_segment)
    r.add_post("/api/v1/segments/count", count_segment)
    r.add_get("/api/v1/segments/{id}", get_segment)
    r.add_patch("/api/v1/segments/{id}", patch_segment)
    r.add_delete("/api/v1/segments/{id}", delete_segment)
    r.add_get("/api/v1/segments/{id}/count", count_saved_segment)
    r.add_get("/api/v1/campaigns", list_campaigns)
    r.add_post("/api/v1/campaigns", create_campaign)
    r.add_get("/api/v1/campaigns/{id}", get_campaign)
    r.add_patch("/api/v1/campaigns/{id}", patch_campaign)
    r.add_delete("/api/v1/campaigns/{id}", delete_campaign)
    r.add_post("/api/v1/campaigns/{id}/preview", preview_campaign)
    r.add_post("/api/v1/campaigns/{id}/schedule", schedule_campaign)
    for action in ("pause", "resume", "cancel"):
        r.add_post(f"/api/v1/campaigns/{{id}}/{action}", _state_handler(action))
    r.add_post("/api/v1/campaigns/{id}/test", send_test)
    r.add_get("/api/v1/campaigns/{id}/progress", campaign_progress)
    r.add_get("/api/v1/campaigns/{id}/report", campaign_report)
    r.add_get("/api/v1/triggers", list_rules)
    r.add_post("/api/v1/triggers", create_rule)
    r.add_get("/api/v1/triggers/{id}", get_rule)
    r.add_patch("/api/v1/triggers/{id}", patch_rule)
    r.add_delete("/api/v1/triggers/{id}", delete_rule)
