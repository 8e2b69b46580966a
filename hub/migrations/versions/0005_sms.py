"""sms

Revision ID: 0005_sms
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.models.base

revision = "0005_sms"
down_revision = "0001_foundation"
branch_labels = ("sms",)
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "sms_pending_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("key_kind", sa.String(length=4), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("occurred_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("raw", _JSON, nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_pending_reports")),
    )
    with op.batch_alter_table("sms_pending_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sms_pending_reports_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_sms_pending_reports_key", ["gateway", "key_kind", "key"], unique=False
        )

    op.create_table(
        "sms_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("gateway_id", sa.String(length=128), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("to_number", sa.String(length=32), nullable=False),
        sa.Column("from_number", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("marketing", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("history", _JSON, nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("final_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_sms_messages_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sms_messages_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_messages")),
        sa.UniqueConstraint("reference", name=op.f("uq_sms_messages_reference")),
    )
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sms_messages_customer", ["customer_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_sms_messages_gateway_id", ["gateway", "gateway_id"], unique=False)
        batch_op.create_index("ix_sms_messages_to_number", ["to_number"], unique=False)


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_messages_to_number")
        batch_op.drop_index("ix_sms_messages_gateway_id")
        batch_op.drop_index("ix_sms_messages_customer")
    op.drop_table("sms_messages")
    with op.batch_alter_table("sms_pending_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_pending_reports_key")
        batch_op.drop_index(batch_op.f("ix_sms_pending_reports_created_at"))
    op.drop_table("sms_pending_reports")
