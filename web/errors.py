"""JSON errors: {"error": {"code", "message"}} with a fitting status, never a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from hub.errors import AuthError, NotFound, PermanentError, RetryableError, ValidationError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """A JSON error body."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return web.json_response({"error": body}, status=status)


_HTTP_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    502: web.HTTPBadGateway,
    503: web.HTTPServiceUnavailable,
}


def api_error(status: int, code: str, message: str) -> web.HTTPException:
    """An exception carrying a JSON error body, to raise from handlers."""
    exc_class = _HTTP_ERRORS.get(status, web.HTTPBadRequest)
    return exc_class(
        text=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Map domain errors to JSON; log unexpected ones with the request for the operator."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        if request.path.startswith("/api/") or request.path.startswith("/hooks/"):
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except ValidationError as err:
        extra = {"field": err.field} if err.field else {}
        return error_response(400, "invalid", str(err), **extra)
    except NotFound as err:
        return error_response(404, "not_found", str(err))
    except AuthError as err:
        return error_response(502, "peer_auth_failed", str(err))
    except PermanentError as err:
        return error_response(502, "peer_refused", str(err))
    except RetryableError as err:
        return error_response(503, "peer_unavailable", str(err))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; the server log has the details")


def int_param(value: str, name: str, default: int | None = None) -> int:
    """A whole number from a query or path parameter; empty → default; else a 400 naming it."""
    if value == "" and default is not None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number", field=name) from None


def path_id(request: web.Request) -> int:
    """The {id} of the route, as a number."""
    return int_param(request.match_info["id"], "id")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise api_error(400, "bad_json", f"request body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise api_error(400, "bad_json", "request body must be a JSON object")
    return data
