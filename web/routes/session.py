"""Login and logout: a JSON API for scripts and the browser's login form."""

from __future__ import annotations

from urllib.parse import urlparse

from aiohttp import web

from hub.users import audit, authenticate, close_session, open_session
from web.app import JINJA
from web.auth import COOKIE, LoginLimiter, current_user, public
from web.errors import api_error, json_body
from web.keys import CSRF, HUB, USER

LIMITER = web.AppKey("login_limiter", LoginLimiter)


def _safe_next(target: str) -> str:
    """Only same-site relative redirects (no open redirect)."""
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def _login(request: web.Request, username: str, password: str) -> tuple[str, str, object]:
    hub = request.app[HUB]
    limiter = request.app[LIMITER]
    keys = (f"ip:{request.remote}", f"user:{username.lower()}")
    if limiter.blocked(*keys):
        raise api_error(429, "too_many_attempts", "too many failed logins; wait a few minutes")
    async with hub.sessions() as session, session.begin():
        user = await authenticate(session, username, password)
        if user is None:
            limiter.failed(*keys)
            # Committed, not rolled back with the refusal: failed logins belong in the audit log.
            await audit(session, None, "login.failed", username[:64], remote=str(request.remote))
        else:
            limiter.succeeded(*keys)
            sid, csrf = await open_session(session, user, hub.config.web.session_hours)
            await audit(session, user.id, "login", user.username)
    if user is None:
        raise api_error(401, "bad_credentials", "wrong user name or password")
    return sid, csrf, user


def _set_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    hub = request.app[HUB]
    response.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="Lax",
        secure=hub.config.web.secure_cookies,
        max_age=hub.config.web.session_hours * 3600,
        path="/",
    )


@public
async def api_login(request: web.Request) -> web.Response:
    """POST /api/v1/session {"username","password"} → session cookie + CSRF token."""
    data = await json_body(request)
    sid, csrf, user = await _login(
        request, str(data.get("username", "")), str(data.get("password", ""))
    )
    response = web.json_response(
        {"user": {"username": user.username, "role": user.role}, "csrf_token": csrf}  # type: ignore[attr-defined]
    )
    _set_cookie(request, response, sid)
    return response


async def api_me(request: web.Request) -> web.Response:
    """GET /api/v1/session: who am I (and my CSRF token for forms)."""
    user = current_user(request)
    return web.json_response(
        {
            "user": {
                "id": user.id,
                "username": user.username,
                "role": user.role,
                "extension": user.extension,
                "display_name": user.display_name,
            },
            "csrf_token": request.get(CSRF),
        }
    )


async def api_logout(request: web.Request) -> web.Response:
    """DELETE /api/v1/session."""
    hub = request.app[HUB]
    sid = request.cookies.get(COOKIE, "")
    if sid:
        async with hub.sessions() as session, session.begin():
            await close_session(session, sid)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


@public
async def login_page(request: web.Request) -> web.Response:
    """GET /login: the form (someone already logged in goes straight on)."""
    target = _safe_next(request.query.get("next", "/"))
    if request.get(USER) is not None:
        raise web.HTTPFound(target)
    env = request.app[JINJA]
    html = env.get_template("login.html").render(error=None, next=target, username="")
    return web.Response(text=html, content_type="text/html")


@public
async def login_form(request: web.Request) -> web.Response:
    """POST /login: form login, then redirect to `next`."""
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    try:
        sid, _csrf, _user = await _login(request, username, password)
    except web.HTTPException as exc:
        env = request.app[JINJA]
        message = (
            "Too many failed attempts; wait a few minutes."
            if exc.status == 429
            else ("Wrong user name or password.")
        )
        html = env.get_template("login.html").render(error=message, next=target, username=username)
        return web.Response(text=html, content_type="text/html", status=exc.status)
    response = web.HTTPSeeOther(target)
    _set_cookie(request, response, sid)
    raise response


async def logout_form(request: web.Request) -> web.Response:
    """POST /logout (CSRF-checked by the middleware)."""
    await api_logout(request)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def setup(app: web.Application) -> None:
    """Register routes."""
    app[LIMITER] = LoginLimiter()
    app.router.add_post("/api/v1/session", api_login)
    app.router.add_get("/api/v1/session", api_me)
    app.router.add_delete("/api/v1/session", api_logout)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_form)
    app.router.add_post("/logout", logout_form)
