"""Authentication and roles: bearer token or session cookie, default deny, CSRF on forms."""

from __future__ import annotations

import hmac
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from hub.models.users import User
from hub.users import resolve_session, user_for_token
from web.errors import api_error
from web.keys import AUTH_VIA, CSRF, USER

COOKIE = "commhub_session"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

# What each role may do beyond its own: admin implies everything.
ROLE_RANK = {"agent": {"agent"}, "marketer": {"marketer"}, "supervisor": {"supervisor", "agent"}}


def public(handler: H) -> H:
    """Mark a handler as reachable without login (health, login, unsubscribe, signed webhooks)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def has_role(user: User, *roles: str) -> bool:
    """True when the user's role grants one of `roles`."""
    if user.role == "admin":
        return True
    return any(r in ROLE_RANK.get(user.role, {user.role}) for r in roles)


def current_user(request: web.Request) -> User:
    """The logged-in user (the middleware guarantees one on non-public routes)."""
    user: User | None = request.get(USER)
    if user is None:
        raise api_error(401, "unauthenticated", "log in or send Authorization: Bearer <token>")
    return user


def require_role(request: web.Request, *roles: str) -> User:
    """The user, if their role allows; else 403."""
    user = current_user(request)
    if not has_role(user, *roles):
        raise api_error(403, "forbidden", f"needs role {' or '.join(roles)}")
    return user


def _handler_of(request: web.Request) -> Any:
    info = request.match_info
    return getattr(info, "handler", None)


def make_auth_middleware(hub_key: Any) -> Any:
    """Resolve the user from bearer token or session; refuse anything not marked public."""

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        hub = request.app[hub_key]
        user: User | None = None
        csrf: str | None = None
        via = None
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token and request.path == "/ws":
            token = request.query.get("token", "")
        sid = request.cookies.get(COOKIE, "")
        if token or sid:
            async with hub.sessions() as session, session.begin():
                if token:
                    user = await user_for_token(session, token)
                    via = "token" if user else None
                elif sid:
                    found = await resolve_session(session, sid)
                    if found:
                        user, csrf = found
                        via = "session"
        request[USER] = user
        request[CSRF] = csrf
        request[AUTH_VIA] = via
        target = _handler_of(request)
        if getattr(target, "public", False) or getattr(handler, "public", False):
            return await handler(request)
        if user is None:
            if request.path.startswith("/api/") or request.path == "/ws":
                raise api_error(
                    401, "unauthenticated", "log in or send Authorization: Bearer <token>"
                )
            raise web.HTTPFound(f"/login?next={request.rel_url}")
        if via == "session" and request.method in UNSAFE:
            sent = request.headers.get("X-CSRF-Token", "")
            if not sent and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = await request.post()
                sent = str(form.get("csrf_token", ""))
            if not csrf or not hmac.compare_digest(sent, csrf):
                raise api_error(403, "csrf", "missing or wrong CSRF token")
        return await handler(request)

    return auth_middleware


class LoginLimiter:
    """Sliding-window limit on failed logins per client address and per user name."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window_s
        self._fails: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        """True when any key has too many recent failures."""
        now = time.monotonic()
        return any(len(self._recent(k, now)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        """Count a failure."""
        now = time.monotonic()
        for k in keys:
            self._recent(k, now).append(now)

    def succeeded(self, *keys: str) -> None:
        """Forget failures after a good login."""
        for k in keys:
            self._fails.pop(k, None)
