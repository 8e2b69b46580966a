"""The call log: one row per call (Linkedid), written once when the call ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, JSONType, UTCDateTime, utcnow


class Call(Base):
    """A finished call with everything supervisors filter and count on."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_started_at", "started_at"),
        Index("ix_calls_agent_started", "agent_id", "started_at"),
        Index("ix_calls_customer", "customer_id", "started_at"),
        Index("ix_calls_disposition_started", "disposition", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(128), unique=True)
    direction: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    callee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The agent who answered (or, for outbound, who placed the call); username kept for the log
    # even if the user is deleted later.
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rang: Mapped[list[str]] = mapped_column(JSONType, default=list)
    answered_by: Mapped[list[str]] = mapped_column(JSONType, default=list)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    wait_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    talk_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    disposition: Mapped[str] = mapped_column(String(16))
    hangup_cause: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording: Mapped[str | None] = mapped_column(String(500), nullable=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    transfers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    caller_withheld: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
