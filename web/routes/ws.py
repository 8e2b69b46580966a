"""The websocket: screen-pops and live updates pushed to the logged-in user only."""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from web.auth import current_user
from web.keys import SOCKETS

log = logging.getLogger(__name__)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws (session cookie or ?token=): the server sends JSON objects with a "type"."""
    user = current_user(request)
    ws = web.WebSocketResponse(heartbeat=25.0)
    await ws.prepare(request)
    hub = request.app[SOCKETS]
    client = hub.add(user.id, user.role, ws)
    await ws.send_json({"type": "hello", "user": user.username, "role": user.role})
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str('{"type":"pong"}')
            elif msg.type == WSMsgType.ERROR:
                log.info("websocket of %s closed with %s", user.username, ws.exception())
    finally:
        hub.remove(client)
    return ws


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/ws", websocket)
