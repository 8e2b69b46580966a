"""The aiohttp application: middlewares, routes from web/routes/*, websocket hub, pages."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path

import jinja2
from aiohttp import web

from hub.services import Hub
from web import routes
from web.auth import Handler, make_auth_middleware
from web.errors import error_middleware
from web.keys import HUB, SOCKETS
from web.ws_hub import SocketHub

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = Path(__file__).resolve().parent / "static"
JINJA = web.AppKey("jinja", jinja2.Environment)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers every response carries: no framing, no sniffing, scripts only from us."""
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; form-action 'self'",
    )
    return response


def page_environment() -> jinja2.Environment:
    """Jinja2 for pages: autoescape always on (a customer named <script> is shown, not run)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES / "pages")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )


def create_app(hub: Hub) -> web.Application:
    """Build the application around a running Hub."""
    app = web.Application(
        middlewares=[security_headers, error_middleware, make_auth_middleware(HUB)],
        client_max_size=32 * 1024 * 1024,
    )
    app[HUB] = hub
    app[SOCKETS] = SocketHub()
    app[JINJA] = page_environment()
    unsubscribe = hub.bus.subscribe(app[SOCKETS].deliver)

    async def on_shutdown(app: web.Application) -> None:
        unsubscribe()
        await app[SOCKETS].close_all()

    app.on_shutdown.append(on_shutdown)
    # Each module in web/routes/ adds its own routes (one module per area).
    for info in sorted(pkgutil.iter_modules(routes.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        module.setup(app)
    if STATIC.exists():
        app.router.add_static("/static", STATIC, name="static")
    return app
