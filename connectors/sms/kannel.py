"""Kannel: MT through smsbox's HTTP sendsms, MO through its get-url/post-url, reports via dlr-url.

Kannel's sendsms answers "0: Accepted for delivery" and no id of its own, so the gateway id of a
message is our reference, which rides back in the dlr-url we give it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
from yarl import URL

from connectors.sms.const import (
    KANNEL_CODING_UCS2,
    KANNEL_DLR_MASK,
    KANNEL_DLR_STATUS,
    KANNEL_SENDSMS_URL,
)
from connectors.sms.errors import from_http_status, unreachable
from hub.errors import ConfigError, ValidationError
from hub.messaging.ports import OutgoingSms
from hub.sms.events import DeliveryReport, InboundSms, ReportStatus, WebhookRequest
from hub.sms.registry import GatewayContext
from hub.sms.text import detect_encoding

log = logging.getLogger(__name__)
NAME = "kannel"


@dataclass(frozen=True)
class KannelSettings:
    """[sms.kannel]: where smsbox listens, its sendsms user, and where it calls us back."""

    url: str = KANNEL_SENDSMS_URL
    username: str = ""
    password: str = ""
    # Our dlr webhook as Kannel reaches it; ref/status/secret are appended to it.
    dlr_url: str = ""
    secret: str = ""
    dlr_mask: int = KANNEL_DLR_MASK
    smsc: str = ""  # route through one smsc-id (empty: Kannel chooses)
    sender: str = ""
    timeout: float = 10.0
    connections: int = 32
    params: Mapping[str, str] = field(default_factory=dict)  # extra sendsms parameters

    @classmethod
    def from_context(cls, ctx: GatewayContext) -> KannelSettings:
        """Read [sms.kannel]; the dlr_url defaults to [web] base_url + /hooks/sms/kannel/dlr."""
        raw = dict(ctx.settings)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"{ctx.config.source}: unknown key(s) in [sms.kannel]: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known - {'secret'}))}"
            )
        if not raw.get("username"):
            raise ConfigError(f"{ctx.config.source}: [sms.kannel] username is required")
        base = ctx.config.web.base_url.rstrip("/")
        try:
            return cls(
                url=str(raw.get("url", KANNEL_SENDSMS_URL)),
                username=str(raw["username"]),
                password=str(raw.get("password", "")),
                dlr_url=str(raw.get("dlr_url") or f"{base}/hooks/sms/{NAME}/dlr"),
                secret=ctx.config.sms.webhook_secret,
                dlr_mask=int(raw.get("dlr_mask", KANNEL_DLR_MASK)),
                smsc=str(raw.get("smsc", "")),
                sender=str(raw.get("sender") or ctx.config.sms.sender),
                timeout=float(raw.get("timeout", 10.0)),
                connections=int(raw.get("connections", 32)),
                params={str(k): str(v) for k, v in dict(raw.get("params", {})).items()},
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{ctx.config.source}: [sms.kannel]: {err}") from err


def _raw_params(raw_query: str) -> dict[str, bytes]:
    """Query parameters as bytes: Kannel puts the text in its own charset, not always UTF-8."""
    pairs = parse_qsl(raw_query, keep_blank_values=True, encoding="latin-1")
    return {key: value.encode("latin-1") for key, value in pairs}


def _decode_text(data: bytes, coding: str, charset: str) -> str:
    charset = charset.strip().lower()
    if coding == KANNEL_CODING_UCS2 or charset in ("utf-16be", "ucs-2", "ucs2", "utf-16"):
        if len(data) % 2:
            raise ValidationError("UCS-2 text has an odd number of bytes", field="text")
        return data.decode("utf-16-be", errors="replace")
    if charset and charset not in ("utf-8", "utf8", "8-bit", "binary", "gsm"):
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _timestamp(raw: str) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        # Kannel's %t is "YYYY-MM-DD HH:MM:SS", in the gateway's local zone: taken as UTC.
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError(f"bad timestamp {raw!r}", field="ts") from None


class KannelGateway:
    """SmsGateway over Kannel's sendsms, plus the translator for its MO and DLR callbacks."""

    name = NAME

    def __init__(self, settings: KannelSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the shared HTTP session (keep-alive connections to smsbox)."""
        await self._client()

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            async with self._lock:
                if self._session is None or self._session.closed:
                    self._session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=self.settings.connections),
                        timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                    )
        return self._session

    def dlr_url(self, reference: str) -> str:
        """The dlr-url for one message: our webhook, the secret, the reference, Kannel's escapes."""
        ours = urlencode({"secret": self.settings.secret, "ref": reference})
        # %d etc. are Kannel's escapes, filled in when it calls back: never quote them.
        sep = "&" if "?" in self.settings.dlr_url else "?"
        return f"{self.settings.dlr_url}{sep}{ours}&status=%d&answer=%A&ts=%T"

    def request_url(self, sms: OutgoingSms) -> URL:
        """The sendsms URL for one message (built once; quoted once, by us)."""
        s = self.settings
        params: dict[str, str] = {
            "username": s.username,
            "password": s.password,
            "from": sms.sender or s.sender,
            "to": sms.to,
            "text": sms.text,
            "charset": "UTF-8",
            "dlr-mask": str(s.dlr_mask),
            "dlr-url": self.dlr_url(sms.reference),
        }
        if detect_encoding(sms.text) == "ucs2":
            params["coding"] = "2"  # Kannel re-encodes the UTF-8 text to UCS-2 (UTF-16BE)
        if s.smsc:
            params["smsc"] = s.smsc
        params.update(s.params)
        query = urlencode(params, quote_via=quote, safe="")
        return URL(f"{s.url}?{query}", encoded=True)

    async def send(self, sms: OutgoingSms) -> str:
        """Hand one SMS to smsbox; returns our reference (Kannel has no id of its own to give)."""
        client = await self._client()
        url = self.request_url(sms)
        try:
            async with client.get(url) as response:
                body = await response.text(errors="replace")
                if response.status not in (200, 202):
                    raise from_http_status("Kannel", response.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise unreachable("Kannel", self.settings.url, err) from err
        return sms.reference

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- callbacks (the web layer checked the secret before it calls these) ---

    def parse_inbound(self, request: WebhookRequest) -> list[InboundSms]:
        """An MO message from get-url (query) or post-url (body is the text)."""
        params = _raw_params(request.raw_query)
        if request.method == "POST" and request.body and "text" not in params:
            params.update(
                _raw_params(request.body.decode("latin-1"))
                if request.content_type == "application/x-www-form-urlencoded"
                else {"text": request.body}
            )
            for header, key in (
                ("X-Kannel-From", "from"),
                ("X-Kannel-To", "to"),
                ("X-Kannel-Coding", "coding"),
            ):
                if header in request.headers and key not in params:
                    params[key] = request.headers[header].encode()
        sender = params.get("from", b"").decode("utf-8", errors="replace").strip()
        if not sender:
            raise ValidationError("missing 'from' (Kannel %p)", field="from")
        if "text" not in params:
            raise ValidationError("missing 'text' (Kannel %a)", field="text")
        coding = params.get("coding", b"").decode("ascii", errors="replace")
        charset = params.get("charset", b"").decode("ascii", errors="replace")
        text = _decode_text(params["text"], coding, charset)
        msg_id = params.get("id", b"").decode("utf-8", errors="replace").strip() or None
        return [
            InboundSms(
                gateway=NAME,
                sender=sender,
                recipient=params.get("to", b"").decode("utf-8", errors="replace").strip(),
                text=text,
                gateway_id=msg_id,
                received_at=_timestamp(params.get("ts", b"").decode("ascii", errors="replace")),
                raw={
                    k: v.decode("utf-8", errors="replace")
                    for k, v in params.items()
                    if k not in ("secret", "text")
                },
            )
        ]

    def parse_reports(self, request: WebhookRequest) -> list[DeliveryReport]:
        """A delivery report from the dlr-url we gave Kannel (ref, %d status, %A answer, %T)."""
        q = request.query
        ref = q.get("ref", "").strip()
        if not ref:
            raise ValidationError("missing 'ref'", field="ref")
        try:
            code = int(q.get("status", ""))
        except ValueError:
            raise ValidationError(
                "status must be Kannel's %d report type", field="status"
            ) from None
        status = KANNEL_DLR_STATUS.get(code)
        if status is None:
            raise ValidationError(f"unknown Kannel report type {code}", field="status")
        answer = q.get("answer", "")
        report_status = cast(ReportStatus, status)
        return [
            DeliveryReport(
                gateway=NAME,
                status=report_status,
                reference=ref,
                detail=f"DLR {code}" + (f": {answer}" if answer else ""),
                occurred_at=_timestamp(q.get("ts", "")),
                raw={k: v for k, v in q.items() if k != "secret"},
            )
        ]


def create(ctx: GatewayContext) -> KannelGateway:
    """Factory registered under "kannel"."""
    return KannelGateway(KannelSettings.from_context(ctx))
