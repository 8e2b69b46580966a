"""SMS messages in and out (delivery tracking) and delivery reports that came before their send."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, JSONType, UTCDateTime, utcnow


class SmsMessage(Base):
    """One SMS: outgoing ones move queued → sent → delivered/failed/expired; incoming are received.

    `reference` is ours (unique, also the timeline row's external_id); `gateway_id` is what the
    gateway calls it (SMPP message_id; Kannel echoes our reference instead)."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        Index("ix_sms_messages_gateway_id", "gateway", "gateway_id"),
        Index("ix_sms_messages_customer", "customer_id", "created_at"),
        Index("ix_sms_messages_to_number", "to_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(8))  # out | in
    gateway: Mapped[str] = mapped_column(String(32))
    gateway_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    to_number: Mapped[str] = mapped_column(String(32))
    from_number: Mapped[str] = mapped_column(String(32), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    encoding: Mapped[str] = mapped_column(String(8), default="gsm7")  # gsm7 | ucs2
    segments: Mapped[int] = mapped_column(Integer, default=1)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    marketing: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(64), default="")  # api, campaign:<id>, stop-reply
    # queued | sent | delivered | failed | expired (out); received (in)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SmsPendingReport(Base):
    """A delivery report whose message is not known (yet): applied when the send is recorded.

    `key_kind` says whether `key` is the gateway's id ("gid") or our reference ("ref")."""

    __tablename__ = "sms_pending_reports"
    __table_args__ = (Index("ix_sms_pending_reports_key", "gateway", "key_kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    key_kind: Mapped[str] = mapped_column(String(4))
    key: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(500), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
