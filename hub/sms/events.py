"""What gateways report back: inbound messages and delivery reports, and the sink they go to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

# What a delivery report means for our message, whatever the gateway's own words were.
ReportStatus = Literal["sent", "delivered", "failed", "expired"]
REPORT_STATUSES: tuple[ReportStatus, ...] = ("sent", "delivered", "failed", "expired")


@dataclass(frozen=True)
class DeliveryReport:
    """A gateway's word on one outgoing SMS, keyed by its id (`gateway_id`) or our `reference`."""

    gateway: str
    status: ReportStatus
    gateway_id: str | None = None
    reference: str | None = None
    detail: str = ""  # the gateway's own status text (e.g. "stat:UNDELIV err:001", "DLR 16")
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundSms:
    """One SMS from a handset (MO), as the gateway delivered it (numbers not yet normalised)."""

    gateway: str
    sender: str
    recipient: str
    text: str
    gateway_id: str | None = None  # the gateway's id, used to drop duplicates
    received_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class SmsEventSink(Protocol):
    """Where a gateway that holds its own connection (SMPP) hands what the SMSC sends it."""

    async def on_inbound(self, sms: InboundSms) -> None:
        """A handset sent us a message."""

    async def on_report(self, report: DeliveryReport) -> None:
        """A delivery report for one of our messages."""


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP callback from a gateway as the web layer saw it (after the secret was checked).

    `raw_query` is the query string still percent-encoded: Kannel sends text in the message's own
    charset (UTF-16BE for UCS-2), which only the bytes can tell."""

    method: str
    raw_query: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    content_type: str


class WebhookTranslator(Protocol):
    """A gateway whose MO messages and delivery reports arrive as HTTP callbacks.

    Each method raises hub.errors.ValidationError for a payload it cannot read (answered 400)."""

    name: str

    def parse_inbound(self, request: WebhookRequest) -> list[InboundSms]:
        """The inbound messages in one callback (usually one)."""

    def parse_reports(self, request: WebhookRequest) -> list[DeliveryReport]:
        """The delivery reports in one callback (usually one)."""
