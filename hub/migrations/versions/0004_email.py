"""email: email_messages (both directions, bodies) and imap_state (UIDVALIDITY, last UID)

Revision ID: 0004_email
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.models.base

revision = "0004_email"
down_revision = "0001_foundation"
branch_labels = ("email",)
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "imap_state",
        sa.Column("account", sa.String(length=254), nullable=False),
        sa.Column("mailbox", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "mailbox", name=op.f("pk_imap_state")),
    )
    op.create_table(
        "email_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("thread_key", sa.String(length=255), nullable=False),
        sa.Column("in_reply_to", sa.String(length=255), nullable=True),
        sa.Column("refs", _JSON, nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("from_address", sa.String(length=254), nullable=False),
        sa.Column("from_name", sa.String(length=200), nullable=False),
        sa.Column("to_addresses", _JSON, nullable=False),
        sa.Column("cc_addresses", _JSON, nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("snippet", sa.String(length=300), nullable=False),
        sa.Column("attachments", _JSON, nullable=False),
        sa.Column("problems", _JSON, nullable=False),
        sa.Column("mailbox", sa.String(length=255), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("occurred_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_email_messages_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["interaction_id"],
            ["interactions.id"],
            name=op.f("fk_email_messages_interaction_id_interactions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_messages_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
        sa.UniqueConstraint("message_id", name=op.f("uq_email_messages_message_id")),
    )
    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_email_messages_customer_time", ["customer_id", "occurred_at"], unique=False
        )
        batch_op.create_index("ix_email_messages_thread_key", ["thread_key"], unique=False)


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_email_messages_thread_key")
        batch_op.drop_index("ix_email_messages_customer_time")
    op.drop_table("email_messages")
    op.drop_table("imap_state")
