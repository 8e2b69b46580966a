"""Email messages (both directions, full bodies behind the timeline) and IMAP watch state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, JSONType, UTCDateTime, utcnow

DIRECTIONS = ("inbound", "outbound")
# received: inbound customer mail; dsn: a bounce report (never customer mail);
# sent / bounced / failed: outbound, accepted by the relay / bounced later / refused at once.
STATUSES = ("received", "dsn", "sent", "bounced", "failed")


class EmailMessage(Base):
    """One email, with its bodies; the timeline row links here (`interaction_id`)."""

    __tablename__ = "email_messages"
    __table_args__ = (
        Index("ix_email_messages_customer_time", "customer_id", "occurred_at"),
        Index("ix_email_messages_thread_key", "thread_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "<local@domain>" as sent, or "<sha256:...@commhub.invalid>" when a message has none or an
    # unusable one (see hub.mail.parse.message_key); unique so a message is stored once.
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    direction: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    # Message-ID of the first message of the conversation: one thread, one key.
    thread_key: Mapped[str] = mapped_column(String(255))
    in_reply_to: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Message-IDs of the References header (capped), oldest first.
    refs: Mapped[list[str]] = mapped_column(JSONType, default=list)
    subject: Mapped[str] = mapped_column(String(500), default="")
    from_address: Mapped[str] = mapped_column(String(254), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    to_addresses: Mapped[list[str]] = mapped_column(JSONType, default=list)
    cc_addresses: Mapped[list[str]] = mapped_column(JSONType, default=list)
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    snippet: Mapped[str] = mapped_column(String(300), default="")
    # [{name, content_type, size, sha256, path}]: the files live under [imap] attachments_dir.
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Parser defects and limits hit (truncated body, dropped attachment...), for the operator.
    problems: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Inbound: where it was read from.
    mailbox: Mapped[str | None] = mapped_column(String(255), nullable=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Outbound: the relay's reply; bounces: the DSN's status and diagnostic.
    detail: Mapped[str] = mapped_column(String(500), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImapState(Base):
    """Per (account, mailbox): the UIDVALIDITY and highest UID already handled."""

    __tablename__ = "imap_state"

    account: Mapped[str] = mapped_column(String(254), primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
