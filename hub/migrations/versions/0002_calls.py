"""calls

Revision ID: 0002_calls
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.models.base

revision = "0002_calls"
down_revision = "0001_foundation"
branch_labels = ("calls",)
depends_on = None


def upgrade() -> None:
    """Apply."""

    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("linkedid", sa.String(length=128), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("caller_name", sa.String(length=200), nullable=True),
        sa.Column("callee", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column(
            "rang",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "answered_by",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("started_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("wait_seconds", sa.Float(), nullable=False),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("hangup_cause", sa.String(length=64), nullable=True),
        sa.Column("recording", sa.String(length=500), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column(
            "transfers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("caller_withheld", sa.Boolean(), nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["users.id"], name=op.f("fk_calls_agent_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_calls_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("linkedid", name=op.f("uq_calls_linkedid")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index("ix_calls_agent_started", ["agent_id", "started_at"], unique=False)
        batch_op.create_index("ix_calls_customer", ["customer_id", "started_at"], unique=False)
        batch_op.create_index(
            "ix_calls_disposition_started", ["disposition", "started_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_calls_queue"), ["queue"], unique=False)
        batch_op.create_index("ix_calls_started_at", ["started_at"], unique=False)


def downgrade() -> None:
    """Revert."""

    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_started_at")
        batch_op.drop_index(batch_op.f("ix_calls_queue"))
        batch_op.drop_index("ix_calls_disposition_started")
        batch_op.drop_index("ix_calls_customer")
        batch_op.drop_index("ix_calls_agent_started")

    op.drop_table("calls")
