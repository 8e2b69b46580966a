"""SMS: gateway webhooks (MO messages, delivery reports) and the one-off send from the card.

Webhooks are public routes that check their own credential: the query parameter `secret`, or an
HMAC-SHA256 of the body in `X-Commhub-Signature` (hex, optionally "sha256=" first). Missing → 401,
wrong → 403, unreadable payload → 400 (logged); never a 500 for what a sender got wrong."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from aiohttp import web

from hub.errors import ValidationError
from hub.sms.events import WebhookRequest, WebhookTranslator
from hub.sms.service import SmsNotConfigured, apply_report, receive_sms, send_sms
from hub.sms.text import analyze
from hub.users import audit
from web.auth import public, require_role
from web.errors import api_error, json_body
from web.keys import HUB

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Commhub-Signature"
MAX_WEBHOOK_BODY = 256 * 1024


def _check_credentials(request: web.Request, body: bytes, secret: str) -> None:
    """401 when no credential came, 403 when it is wrong (or none is configured)."""
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    given = request.query.get("secret", "")
    if not signature and not given:
        raise api_error(401, "unauthenticated", "webhook secret or signature required")
    if not secret:
        log.warning("sms webhook refused: [sms] webhook_secret is not configured")
        raise api_error(403, "forbidden", "webhooks are not configured")
    if signature:
        if signature.lower().startswith("sha256="):
            signature = signature[7:]
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(signature.lower().encode(), expected.encode())
    else:
        ok = hmac.compare_digest(given.encode(), secret.encode())
    if not ok:
        log.warning("sms webhook %s from %s: wrong secret/signature", request.path, request.remote)
        raise api_error(403, "forbidden", "wrong webhook secret or signature")


async def _webhook(request: web.Request) -> tuple[WebhookTranslator, WebhookRequest]:
    hub = request.app[HUB]
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        raise api_error(400, "too_large", "webhook body too large")
    body = await request.read() if request.can_read_body else b""
    if len(body) > MAX_WEBHOOK_BODY:
        raise api_error(400, "too_large", "webhook body too large")
    _check_credentials(request, body, hub.config.sms.webhook_secret)
    gateway: Any = hub.part("sms")
    name = request.match_info["gateway"]
    if gateway is None or gateway.name != name or not hasattr(gateway, "parse_inbound"):
        raise api_error(404, "not_found", f"no SMS gateway {name!r} takes webhooks here")
    payload = WebhookRequest(
        method=request.method,
        raw_query=request.rel_url.raw_query_string,
        query={k: v for k, v in request.query.items()},
        headers={k: v for k, v in request.headers.items()},
        body=body,
        content_type=request.content_type,
    )
    return gateway, payload


def _malformed(request: web.Request, err: ValidationError) -> web.HTTPException:
    log.warning("sms webhook %s %s: malformed payload: %s", request.method, request.path, err)
    return api_error(400, "malformed", str(err))


@public
async def inbound_hook(request: web.Request) -> web.Response:
    """GET|POST /hooks/sms/{gateway}/inbound: MO messages."""
    hub = request.app[HUB]
    gateway, payload = await _webhook(request)
    try:
        messages = gateway.parse_inbound(payload)
    except ValidationError as err:
        raise _malformed(request, err) from err
    results = []
    for sms in messages:
        try:
            result = await receive_sms(hub, sms)
        except ValidationError as err:
            raise _malformed(request, err) from err
        results.append(
            {
                "id": result["message"]["id"],
                "duplicate": result["duplicate"],
                "keyword": result["keyword"],
            }
        )
    return web.json_response({"received": results})


@public
async def dlr_hook(request: web.Request) -> web.Response:
    """GET|POST /hooks/sms/{gateway}/dlr: delivery reports."""
    hub = request.app[HUB]
    gateway, payload = await _webhook(request)
    try:
        reports = gateway.parse_reports(payload)
    except ValidationError as err:
        raise _malformed(request, err) from err
    outcomes = []
    for report in reports:
        try:
            outcomes.append(await apply_report(hub, report))
        except ValidationError as err:
            raise _malformed(request, err) from err
    return web.json_response({"reports": outcomes})


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValidationError(f"{key} must be true or false", field=key)
    return value


async def send_one(request: web.Request) -> web.Response:
    """POST /api/v1/messages/sms {customer_id | to, text}: one SMS from the card, logged."""
    user = require_role(request, "agent")
    hub = request.app[HUB]
    data = await json_body(request)
    to = data.get("to")
    customer_id = data.get("customer_id")
    if to is not None and not isinstance(to, str):
        raise ValidationError("to must be a phone number", field="to")
    if customer_id is not None and (
        isinstance(customer_id, bool) or not isinstance(customer_id, int)
    ):
        raise ValidationError("customer_id must be a whole number", field="customer_id")
    reference = data.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference):
        raise ValidationError("reference must be a non-empty string", field="reference")
    try:
        message = await send_sms(
            hub,
            text=data.get("text"),  # type: ignore[arg-type]  # check_text validates it
            to=to,
            customer_id=customer_id,
            marketing=_bool(data, "marketing"),
            reference=reference,
            user_id=user.id,
            source="api",
        )
    except SmsNotConfigured as err:
        raise api_error(503, "sms_disabled", str(err)) from err
    async with hub.sessions() as session, session.begin():
        await audit(session, user.id, "sms.send", f"sms:{message['id']}", to=message["to"])
    info = analyze(message["text"], hub.config.sms.cost_per_segment)
    return web.json_response({**message, "info": info.as_dict()}, status=201)


async def preview(request: web.Request) -> web.Response:
    """POST /api/v1/messages/sms/preview {text}: encoding, segments and cost before sending."""
    require_role(request, "agent", "marketer")
    hub = request.app[HUB]
    data = await json_body(request)
    text = data.get("text")
    if not isinstance(text, str):
        raise ValidationError("text must be a string", field="text")
    return web.json_response(analyze(text, hub.config.sms.cost_per_segment).as_dict())


def setup(app: web.Application) -> None:
    """Register routes."""
    for kind, handler in (("inbound", inbound_hook), ("dlr", dlr_hook)):
        app.router.add_get(f"/hooks/sms/{{gateway}}/{kind}", handler, allow_head=False)
        app.router.add_post(f"/hooks/sms/{{gateway}}/{kind}", handler)
    app.router.add_post("/api/v1/messages/sms", send_one)
    app.router.add_post("/api/v1/messages/sms/preview", preview)
