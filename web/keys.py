"""Typed application keys (no globals)."""

from __future__ import annotations

from aiohttp import web

from hub.models.users import User
from hub.services import Hub
from web.ws_hub import SocketHub

HUB = web.AppKey("hub", Hub)
SOCKETS = web.AppKey("sockets", SocketHub)

# Per-request values set by the auth middleware.
USER: web.RequestKey[User | None] = web.RequestKey("user")
CSRF: web.RequestKey[str | None] = web.RequestKey("csrf")
AUTH_VIA: web.RequestKey[str | None] = web.RequestKey("auth_via")
