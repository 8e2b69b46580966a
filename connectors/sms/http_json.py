"""A generic HTTP/JSON SMS provider: URL, auth header, field names and paths come from [sms.http].

Most cloud SMS APIs look alike: POST a JSON object with to/from/text, get back JSON holding the
message id; MO messages and delivery reports arrive as JSON (or form) callbacks naming fields of
their own. Everything provider-specific is configuration:

    [sms.http]
    url = "https://api.example.com/v1/sms"
    auth_header = "Authorization"
    auth_value = "Bearer ..."
    to_field = "to"              # also from_field, text_field, reference_field ("" = not sent)
    id_path = "messages.0.id"    # where the provider's id is in its answer ("" = our reference)
    success_path = "status"      # optional: the answer must have success_value there
    success_value = "ok"
    [sms.http.inbound]           # MO callback field names
    from = "from"; to = "to"; text = "text"; id = "id"
    [sms.http.report]            # delivery-report callback
    id = "id"; reference = ""; status = "status"
    [sms.http.report.statuses]   # provider word → sent | delivered | failed | expired
    delivered = "delivered"; undelivered = "failed"
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl

import aiohttp

from connectors.sms.const import HTTP_CONNECTIONS, HTTP_TIMEOUT
from connectors.sms.errors import from_http_status, unreachable
from hub.errors import ConfigError, PermanentError, ValidationError
from hub.messaging.ports import OutgoingSms
from hub.sms.events import (
    REPORT_STATUSES,
    DeliveryReport,
    InboundSms,
    ReportStatus,
    WebhookRequest,
)
from hub.sms.registry import GatewayContext

NAME = "http"
DEFAULT_STATUSES: Mapping[str, str] = {
    "sent": "sent",
    "accepted": "sent",
    "queued": "sent",
    "enroute": "sent",
    "delivered": "delivered",
    "delivrd": "delivered",
    "failed": "failed",
    "undelivered": "failed",
    "undeliv": "failed",
    "rejected": "failed",
    "expired": "expired",
}


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path ("messages.0.id"); None when any step is missing."""
    current = data
    for step in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(step)
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
        if current is None:
            return None
    return current


@dataclass(frozen=True)
class HttpSettings:
    """[sms.http]: the provider's endpoint, auth and field names."""

    url: str
    method: str = "POST"
    auth_header: str = ""
    auth_value: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    to_field: str = "to"
    from_field: str = "from"
    text_field: str = "text"
    reference_field: str = "reference"
    extra: Mapping[str, Any] = field(default_factory=dict)  # static fields sent every time
    id_path: str = ""
    success_path: str = ""
    success_value: str = ""
    sender: str = ""
    timeout: float = HTTP_TIMEOUT
    connections: int = HTTP_CONNECTIONS
    inbound: Mapping[str, str] = field(default_factory=dict)
    report: Mapping[str, str] = field(default_factory=dict)
    statuses: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATUSES))

    @classmethod
    def from_context(cls, ctx: GatewayContext) -> HttpSettings:
        """Read and check [sms.http]."""
        raw = dict(ctx.settings)
        where = f"{ctx.config.source}: [sms.http]"
        known = set(cls.__dataclass_fields__) - {"statuses"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if not str(raw.get("url", "")).startswith(("http://", "https://")):
            raise ConfigError(f"{where} url must be an http:// or https:// URL")
        report = dict(raw.get("report", {}))
        statuses = dict(DEFAULT_STATUSES)
        for word, status in dict(report.pop("statuses", {})).items():
            if status not in REPORT_STATUSES:
                raise ConfigError(
                    f"{where}.report.statuses: {word!r} maps to {status!r}; "
                    f"use one of {', '.join(REPORT_STATUSES)}"
                )
            statuses[str(word).lower()] = str(status)
        method = str(raw.get("method", "POST")).upper()
        if method not in ("POST", "PUT"):
            raise ConfigError(f"{where} method must be POST or PUT")
        try:
            return cls(
                url=str(raw["url"]),
                method=method,
                auth_header=str(raw.get("auth_header", "")),
                auth_value=str(raw.get("auth_value", "")),
                headers={str(k): str(v) for k, v in dict(raw.get("headers", {})).items()},
                to_field=str(raw.get("to_field", "to")),
                from_field=str(raw.get("from_field", "from")),
                text_field=str(raw.get("text_field", "text")),
                reference_field=str(raw.get("reference_field", "reference")),
                extra=dict(raw.get("extra", {})),
                id_path=str(raw.get("id_path", "")),
                success_path=str(raw.get("success_path", "")),
                success_value=str(raw.get("success_value", "")),
                sender=str(raw.get("sender") or ctx.config.sms.sender),
                timeout=float(raw.get("timeout", HTTP_TIMEOUT)),
                connections=int(raw.get("connections", HTTP_CONNECTIONS)),
                inbound={str(k): str(v) for k, v in dict(raw.get("inbound", {})).items()},
                report={str(k): str(v) for k, v in report.items()},
                statuses=statuses,
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from err


def _payload_items(request: WebhookRequest) -> list[Mapping[str, Any]]:
    """A callback body as a list of objects: JSON object, JSON list, form, or the query."""
    if request.body:
        if request.content_type == "application/x-www-form-urlencoded":
            return [dict(parse_qsl(request.body.decode("utf-8", errors="replace")))]
        try:
            data = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValidationError(f"body is not JSON: {err}") from err
    else:
        data = {k: v for k, v in request.query.items() if k != "secret"}
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, Mapping) for i in items):
        raise ValidationError("payload must be a JSON object or a list of objects")
    return cast(list[Mapping[str, Any]], items)


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"bad time {value!r}", field="time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text_field(item: Mapping[str, Any], path: str, required: bool) -> str:
    value = dig(item, path)
    if value is None:
        if required:
            raise ValidationError(f"missing field {path!r}", field=path)
        return ""
    if not isinstance(value, str | int):
        raise ValidationError(f"field {path!r} must be text", field=path)
    return str(value)


class HttpJsonGateway:
    """SmsGateway for a JSON-over-HTTP provider, plus the translator of its callbacks."""

    name = NAME

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            async with self._lock:
                if self._session is None or self._session.closed:
                    headers = dict(self.settings.headers)
                    if self.settings.auth_header:
                        headers[self.settings.auth_header] = self.settings.auth_value
                    self._session = aiohttp.ClientSession(
                        headers=headers,
                        connector=aiohttp.TCPConnector(limit=self.settings.connections),
                        timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                    )
        return self._session

    async def start(self) -> None:
        """Open the shared HTTP session."""
        await self._client()

    def body(self, sms: OutgoingSms) -> dict[str, Any]:
        """The JSON object sent for one SMS."""
        s = self.settings
        body: dict[str, Any] = dict(s.extra)
        body[s.to_field] = sms.to
        body[s.text_field] = sms.text
        if s.from_field:
            body[s.from_field] = sms.sender or s.sender
        if s.reference_field:
            body[s.reference_field] = sms.reference
        return body

    async def send(self, sms: OutgoingSms) -> str:
        """POST one SMS; returns the provider's id (at id_path) or our reference."""
        s = self.settings
        client = await self._client()
        try:
            async with client.request(s.method, s.url, json=self.body(sms)) as response:
                text = await response.text(errors="replace")
                if not 200 <= response.status < 300:
                    raise from_http_status("SMS provider", response.status, text)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise unreachable("SMS provider", s.url, err) from err
        if not (s.id_path or s.success_path):
            return sms.reference
        try:
            answer = json.loads(text)
        except json.JSONDecodeError as err:
            raise PermanentError(f"SMS provider answered non-JSON: {text[:200]!r}") from err
        if s.success_path and str(dig(answer, s.success_path)) != s.success_value:
            raise PermanentError(f"SMS provider refused: {text[:200]}")
        if not s.id_path:
            return sms.reference
        gateway_id = dig(answer, s.id_path)
        if gateway_id in (None, ""):
            raise PermanentError(f"SMS provider answer has no id at {s.id_path!r}: {text[:200]}")
        return str(gateway_id)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def parse_inbound(self, request: WebhookRequest) -> list[InboundSms]:
        """MO messages from a provider callback, by the configured field names."""
        names = {"from": "from", "to": "to", "text": "text", "id": "id", "time": "time"}
        names.update(self.settings.inbound)
        out = []
        for item in _payload_items(request):
            out.append(
                InboundSms(
                    gateway=NAME,
                    sender=_text_field(item, names["from"], True),
                    recipient=_text_field(item, names["to"], False),
                    text=_text_field(item, names["text"], True),
                    gateway_id=_text_field(item, names["id"], False) or None,
                    received_at=_time(dig(item, names["time"])),
                    raw=dict(item),
                )
            )
        return out

    def parse_reports(self, request: WebhookRequest) -> list[DeliveryReport]:
        """Delivery reports from a provider callback, statuses mapped by [sms.http.report]."""
        names = {"id": "id", "reference": "", "status": "status", "time": "time", "error": "error"}
        names.update(self.settings.report)
        out = []
        for item in _payload_items(request):
            word = _text_field(item, names["status"], True)
            status = self.settings.statuses.get(word.lower())
            if status is None:
                raise ValidationError(f"unknown delivery status {word!r}", field="status")
            gateway_id = _text_field(item, names["id"], False) if names["id"] else ""
            reference = _text_field(item, names["reference"], False) if names["reference"] else ""
            if not gateway_id and not reference:
                raise ValidationError("report names no message (id or reference)", field="id")
            error = _text_field(item, names["error"], False) if names["error"] else ""
            out.append(
                DeliveryReport(
                    gateway=NAME,
                    status=cast(ReportStatus, status),
                    gateway_id=gateway_id or None,
                    reference=None if gateway_id else reference,
                    detail=f"{word}{': ' + error if error else ''}",
                    occurred_at=_time(dig(item, names["time"])),
                    raw=dict(item),
                )
            )
        return out


def create(ctx: GatewayContext) -> HttpJsonGateway:
    """Factory registered under "http"."""
    return HttpJsonGateway(HttpSettings.from_context(ctx))
