"""Health check for load balancers and operators."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from web.auth import public
from web.keys import HUB


@public
async def health(request: web.Request) -> web.Response:
    """200 with the state of each part; 503 when the database does not answer."""
    hub = request.app[HUB]
    status: dict[str, object] = {"status": "ok"}
    try:
        async with hub.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        status["database"] = "ok"
    except Exception as err:  # the check itself must never raise
        status.update(status="degraded", database=f"error: {type(err).__name__}")
    pbx = hub.part("pbx")
    if pbx is not None:
        status["ami"] = "connected" if getattr(pbx, "connected", False) else "disconnected"
    return web.json_response(status, status=200 if status["database"] == "ok" else 503)


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/health", health)
