"""campaigns

Revision ID: 0003_campaigns
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.models.base

revision = "0003_campaigns"
down_revision = "0001_foundation"
branch_labels = ("campaigns",)
depends_on = None


def upgrade() -> None:
    """Apply."""

    op.create_table(
        "message_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_message_templates_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_message_templates_name")),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_segments_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("messenger", sa.String(length=32), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("from_address", sa.String(length=254), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_campaigns_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_campaigns_segment_id_segments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["message_templates.id"],
            name=op.f("fk_campaigns_template_id_message_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_segment_id"), ["segment_id"], unique=False)
        batch_op.create_index("ix_campaigns_status", ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_campaigns_template_id"), ["template_id"], unique=False)

    op.create_table(
        "trigger_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("messenger", sa.String(length=32), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("delay_seconds", sa.Integer(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column(
            "condition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("dedupe", sa.String(length=8), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("scan_cursor", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_trigger_rules_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["message_templates.id"],
            name=op.f("fk_trigger_rules_template_id_message_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_trigger_rules_name")),
    )
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trigger_rules_template_id"), ["template_id"], unique=False
        )

    op.create_table(
        "campaign_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("scheduled_for", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("missed_since", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("materialise_cursor", sa.Integer(), nullable=False),
        sa.Column("materialised_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounced_count", sa.Integer(), nullable=False),
        sa.Column("unsubscribed_count", sa.Integer(), nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_runs_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_runs")),
        sa.UniqueConstraint(
            "campaign_id", "scheduled_for", name=op.f("uq_campaign_runs_campaign_id_scheduled_for")
        ),
    )
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_runs_status", ["status"], unique=False)

    op.create_table(
        "campaign_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("run_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("next_fire_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_fired_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_schedules_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_schedules")),
        sa.UniqueConstraint("campaign_id", name=op.f("uq_campaign_schedules_campaign_id")),
    )
    with op.batch_alter_table("campaign_schedules", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_schedules_due", ["active", "next_fire_at"], unique=False)

    op.create_table(
        "trigger_deliveries",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=200), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_doubt", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("sent_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounced_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replied_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("unsubscribed_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_trigger_deliveries_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["trigger_rules.id"],
            name=op.f("fk_trigger_deliveries_rule_id_trigger_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_deliveries")),
        sa.UniqueConstraint(
            "rule_id", "subject_key", name=op.f("uq_trigger_deliveries_rule_id_subject_key")
        ),
    )
    with op.batch_alter_table("trigger_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_trigger_deliveries_customer", ["customer_id"], unique=False)
        batch_op.create_index("ix_trigger_deliveries_state_due", ["state", "due_at"], unique=False)

    op.create_table(
        "campaign_deliveries",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_doubt", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("sent_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounced_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replied_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("unsubscribed_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_campaign_deliveries_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["campaign_runs.id"],
            name=op.f("fk_campaign_deliveries_run_id_campaign_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_deliveries")),
        sa.UniqueConstraint(
            "run_id", "customer_id", name=op.f("uq_campaign_deliveries_run_id_customer_id")
        ),
    )
    with op.batch_alter_table("campaign_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_deliveries_customer", ["customer_id"], unique=False)
        batch_op.create_index("ix_campaign_deliveries_run_state", ["run_id", "state"], unique=False)


def downgrade() -> None:
    """Revert."""

    with op.batch_alter_table("campaign_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_deliveries_run_state")
        batch_op.drop_index("ix_campaign_deliveries_customer")

    op.drop_table("campaign_deliveries")
    with op.batch_alter_table("trigger_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_deliveries_state_due")
        batch_op.drop_index("ix_trigger_deliveries_customer")

    op.drop_table("trigger_deliveries")
    with op.batch_alter_table("campaign_schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_schedules_due")

    op.drop_table("campaign_schedules")
    with op.batch_alter_table("campaign_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_runs_status")

    op.drop_table("campaign_runs")
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trigger_rules_template_id"))

    op.drop_table("trigger_rules")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_template_id"))
        batch_op.drop_index("ix_campaigns_status")
        batch_op.drop_index(batch_op.f("ix_campaigns_segment_id"))

    op.drop_table("campaigns")
    op.drop_table("segments")
    op.drop_table("message_templates")
