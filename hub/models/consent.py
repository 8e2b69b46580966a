"""The suppression list: addresses and numbers that must not get marketing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, UTCDateTime, utcnow


class Suppression(Base):
    """One suppressed email address (lower-case) or phone number (E.164) on one channel."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    value: Mapped[str] = mapped_column(String(254))
    reason: Mapped[str] = mapped_column(
        String(32)
    )  # unsubscribed | bounced | stop | complaint | manual
    detail: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
