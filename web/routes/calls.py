"""Calls API: the call log (supervisors), my calls (agents), figures, live calls, click-to-call."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from hub.customers import get_customer
from hub.errors import ValidationError
from hub.models.calls import Call
from hub.models.customers import Customer
from hub.telephony import calllog
from hub.telephony.service import call_to_dict
from hub.users import audit
from web.auth import has_role, require_role
from web.errors import api_error, json_body
from web.keys import HUB


def _filter(request: web.Request) -> calllog.CallFilter:
    """Supervisors see every call; agents only their own (and must say mine=1)."""
    user = require_role(request, "agent", "supervisor")
    f = calllog.filter_from_query(request.query, calllog.zone(request.query.get("tz")))
    if request.query.get("mine") == "1" or not has_role(user, "supervisor"):
        if not has_role(user, "supervisor") and request.query.get("mine") != "1":
            raise api_error(403, "forbidden", "the call log is for supervisors; agents use ?mine=1")
        from dataclasses import replace

        f = replace(f, mine=(user.id, user.username))
    return f


def _limit(request: web.Request) -> int:
    try:
        return int(request.query.get("limit", "50"))
    except ValueError:
        raise ValidationError("limit must be a number", field="limit") from None


async def list_calls(request: web.Request) -> web.Response:
    """GET /api/v1/calls?from=&to=&agent=&status=&direction=&queue=&customer_id=&mine=&limit=&cursor="""
    f = _filter(request)
    hub = request.app[HUB]
    async with hub.sessions() as session:
        rows, nxt = await calllog.list_calls(
            session, f, limit=_limit(request), cursor=request.query.get("cursor") or None
        )
    return web.json_response({"items": [call_to_dict(c, n) for c, n in rows], "next": nxt})


async def export_csv(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/calls.csv?<filters>: every matching call, streamed."""
    f = _filter(request)
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="calls.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(calllog.CSV_FIELDS)
    async with hub.sessions() as session:
        count = 0
        async for call, name in calllog.stream_calls(session, f):
            writer.writerow(calllog.csv_row(call, name))
            count += 1
            if count % 500 == 0:
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


async def get_call(request: web.Request) -> web.Response:
    """GET /api/v1/calls/{id}"""
    user = require_role(request, "agent", "supervisor")
    hub = request.app[HUB]
    try:
        call_id = int(request.match_info["id"])
    except ValueError:
        raise ValidationError("id must be a number", field="id") from None
    async with hub.sessions() as session:
        row = (
            await session.execute(
                select(Call, Customer.name)
                .outerjoin(Customer, Customer.id == Call.customer_id)
                .where(Call.id == call_id)
            )
        ).first()
    if row is None:
        raise api_error(404, "not_found", f"call {call_id} not found")
    call, name = row
    if (
        not has_role(user, "supervisor")
        and call.agent_id != user.id
        and user.username not in (call.rang or [])
    ):
        raise api_error(404, "not_found", f"call {call_id} not found")
    return web.json_response(call_to_dict(call, name))


async def recording(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/calls/{id}/recording: the audio, for supervisors only (never marketers)."""
    user = require_role(request, "supervisor")
    hub = request.app[HUB]
    base = hub.config.ami.recordings_dir
    if not base:
        raise api_error(
            404, "no_recordings", "recordings are not served ([ami] recordings_dir is empty)"
        )
    try:
        call_id = int(request.match_info["id"])
    except ValueError:
        raise ValidationError("id must be a number", field="id") from None
    async with hub.sessions() as session, session.begin():
        call = await session.get(Call, call_id)
        if call is None or not call.recording:
            raise api_error(404, "not_found", "this call has no recording")
        await audit(session, user.id, "recording.play", f"call:{call_id}")
    path = _recording_path(base, call.recording)
    if path is None:
        raise api_error(404, "not_found", "the recording file is not there")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


def _recording_path(base: str, recorded: str) -> Path | None:
    """The file under recordings_dir; Asterisk's absolute path is its own, so only the name counts."""
    root = Path(base).resolve()
    path = (root / Path(recorded).name).resolve()
    return path if root in path.parents and path.is_file() else None


async def stats(request: web.Request) -> web.Response:
    """GET /api/v1/calls/stats?from=&to=&group_by=agent|hour&tz="""
    require_role(request, "supervisor")
    hub = request.app[HUB]
    tz = calllog.zone(request.query.get("tz"))
    f = calllog.filter_from_query(request.query, tz)
    async with hub.sessions() as session:
        items = await calllog.call_stats(session, f, request.query.get("group_by", "agent"), tz)
    return web.json_response({"items": items, "next": None})


async def live(request: web.Request) -> web.Response:
    """GET /api/v1/calls/live: calls in progress and each agent's state (supervisors)."""
    require_role(request, "supervisor")
    service = request.app[HUB].part("calls")
    if service is None:
        return web.json_response({"calls": [], "agents": [], "link": "off"})
    return web.json_response(service.live_snapshot())


async def originate(request: web.Request) -> web.Response:
    """POST /api/v1/calls/originate {"customer_id"} or {"number"}: ring my phone, then them."""
    user = require_role(request, "agent")
    hub = request.app[HUB]
    service = hub.part("calls")
    if service is None:
        raise api_error(503, "telephony_off", "telephony is not configured ([ami] enabled = false)")
    data = await json_body(request)
    customer = None
    number = data.get("number")
    async with hub.sessions() as session:
        if data.get("customer_id") is not None:
            if not isinstance(data["customer_id"], int):
                raise ValidationError("customer_id must be a number", field="customer_id")
            customer = await get_customer(session, data["customer_id"])
            phones = [c.value for c in customer.contacts if c.kind == "phone"]
            if number is None:
                if not phones:
                    raise ValidationError(
                        f"customer {customer.id} has no phone number", field="customer_id"
                    )
                number = phones[0]
        if not isinstance(number, str) or not number:
            raise ValidationError("give customer_id or number", field="number")
        me = await session.get(type(user), user.id)
        assert me is not None
        action_id = await service.originate(me, number, customer)
    return web.json_response(
        {
            "status": "queued",
            "action_id": action_id,
            "number": number,
            "customer_id": customer.id if customer else None,
        },
        status=202,
    )


def setup(app: web.Application) -> None:
    """Register routes."""
    r = app.router
    r.add_get("/api/v1/calls", list_calls)
    r.add_get("/api/v1/calls.csv", export_csv)
    r.add_get("/api/v1/calls/stats", stats)
    r.add_get("/api/v1/calls/live", live)
    r.add_post("/api/v1/calls/originate", originate)
    r.add_get("/api/v1/calls/{id}", get_call)
    r.add_get("/api/v1/calls/{id}/recording", recording)
