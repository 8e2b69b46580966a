"""GET /api/v1/openapi.json: the API described from the live router (it cannot drift).

Each operation takes its summary and description from the handler's docstring; path
parameters come from the route; every operation needs a bearer token or a session cookie
unless the handler is public."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from web.auth import public

_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}


def build_spec(app: web.Application) -> dict[str, Any]:
    """OpenAPI 3.1 document for every /api/, /hooks/ and /u/ route of the app."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD" or not path.startswith(("/api/", "/hooks/", "/u/")):
            continue
        handler = route.handler
        doc = (handler.__doc__ or "").strip().splitlines()
        tag = path.split("/")[3] if path.startswith("/api/v1/") else path.split("/")[1]
        operation: dict[str, Any] = {
            # Unique even when one handler serves several paths (e.g. a webhook per gateway).
            "operationId": route.method.lower()
            + re.sub(r"\W+", "_", _PARAM.sub(r"\1", path)).rstrip("_"),
            "summary": doc[0] if doc else handler.__name__,
            "tags": [tag.split(".")[0]],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(path)
            ],
            "responses": {
                "200": {"description": "OK"},
                "400": {
                    "description": "invalid input",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "401": {
                    "description": "not logged in",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "403": {
                    "description": "role not allowed",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
        }
        if len(doc) > 1:
            operation["description"] = "\n".join(line.strip() for line in doc[1:]).strip()
        if getattr(handler, "public", False):
            operation["security"] = []
        paths.setdefault(_PARAM.sub(r"{\1}", path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "commhub API",
            "version": "1",
            "description": "Customers, calls, messages and campaigns. Lists are "
            '{"items": [...], "next": cursor-or-null}; errors are {"error": {"code", "message"}}. '
            "Cookie sessions must send X-CSRF-Token on POST/PATCH/DELETE.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "commhub_session"},
            },
            "schemas": {"Error": _ERROR},
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": dict(sorted(paths.items())),
    }


@public
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return web.json_response(build_spec(request.app))


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/api/v1/openapi.json", openapi)
