"""Campaign tables: message templates, segments, campaigns, schedules, runs, deliveries, triggers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.models.base import Base, JSONType, UTCDateTime, utcnow

# Delivery states: pending -> sending (claimed with a lease) -> sent | failed | suppressed | skipped.
DELIVERY_STATES = ("pending", "sending", "sent", "failed", "suppressed", "skipped")
CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "finished", "cancelled")
RUN_STATUSES = ("sending", "paused", "finished", "cancelled")


class MessageTemplate(Base):
    """A user-authored Jinja2 message: email subject + HTML + text, or SMS text."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    subject: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Segment(Base):
    """A saved filter over customers (a JSON structure compiled through a whitelist)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Campaign(Base):
    """A message (template) for a set of customers (segment) over one messenger."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    # Name of the Messenger in the engine's registry; an unknown one cancels the campaign.
    messenger: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[int] = mapped_column(
        ForeignKey("message_templates.id", ondelete="RESTRICT"), index=True
    )
    # NULL: every customer.
    segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segments.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="draft")
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    from_address: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # IANA zone for "today" in segments and templates (birthdays) and for cron schedules.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CampaignSchedule(Base):
    """When a campaign runs: once at an instant, or on a cron rule in an IANA time zone."""

    __tablename__ = "campaign_schedules"
    __table_args__ = (Index("ix_campaign_schedules_due", "active", "next_fire_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(8))  # once | cron
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cron: Mapped[str | None] = mapped_column(String(120), nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CampaignRun(Base):
    """One sending of a campaign; (campaign, scheduled_for) is unique so a slot fires once."""

    __tablename__ = "campaign_runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "scheduled_for"),
        Index("ix_campaign_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when slots were missed while the hub was down: the earliest one (they collapse into this).
    missed_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    origin: Mapped[str] = mapped_column(String(16), default="now")  # now | once | cron
    status: Mapped[str] = mapped_column(String(16), default="sending")
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    # Checkpoint: recipients are streamed from the segment in customer-id order.
    materialise_cursor: Mapped[int] = mapped_column(Integer, default=0)
    materialised_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    bounced_count: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribed_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeliveryColumns:
    """What campaign and triggered deliveries share: address, claim, lease, outcome."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), nullable=True
    )
    channel: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(254), default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # Not before this instant (retry back-off; a trigger's delay).
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times the message was sent again after a crash left it possibly accepted (same Message-ID).
    in_doubt: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Fixed at the first claim and reused by every retry, so a resend can be deduplicated.
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str] = mapped_column(String(500), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The first inbound message on the same channel within the reply window after sending.
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CampaignDelivery(DeliveryColumns, Base):
    """One message of one run to one customer: unique (run, customer)."""

    __tablename__ = "campaign_deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "customer_id"),
        Index("ix_campaign_deliveries_run_state", "run_id", "state"),
        Index("ix_campaign_deliveries_customer", "customer_id"),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))


class TriggerRule(Base):
    """Send a template when something happens: a missed call, a new customer, a long silence."""

    __tablename__ = "trigger_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    event: Mapped[str] = mapped_column(String(32))  # call.missed | customer.created | no_contact
    channel: Mapped[str] = mapped_column(String(8))
    messenger: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[int] = mapped_column(
        ForeignKey("message_templates.id", ondelete="RESTRICT"), index=True
    )
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no_contact: silence length
    # Optional segment filter the customer must match at the time of the event.
    condition: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    dedupe: Mapped[str] = mapped_column(String(8), default="event")  # event | day
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    # customer.created catch-up scan: customers with a larger id were not looked at yet.
    scan_cursor: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TriggerDelivery(DeliveryColumns, Base):
    """One triggered message: unique (rule, subject key) makes every trigger fire once."""

    __tablename__ = "trigger_deliveries"
    __table_args__ = (
        UniqueConstraint("rule_id", "subject_key"),
        Index("ix_trigger_deliveries_state_due", "state", "due_at"),
        Index("ix_trigger_deliveries_customer", "customer_id"),
    )

    rule_id: Mapped[int] = mapped_column(ForeignKey("trigger_rules.id", ondelete="CASCADE"))
    subject_key: Mapped[str] = mapped_column(String(200))
    # Event data offered to the template as `event` (caller number, call time...).
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
