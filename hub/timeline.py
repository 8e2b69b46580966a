"""The interaction timeline: idempotent writes from every channel, and reads for the card."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import insert_for
from hub.errors import ValidationError
from hub.models.base import utcnow
from hub.models.customers import Customer
from hub.models.interactions import CHANNELS, Interaction


async def record_interaction(
    session: AsyncSession,
    *,
    channel: str,
    external_id: str,
    customer_id: int | None,
    direction: str | None = None,
    status: str = "",
    occurred_at: datetime | None = None,
    ended_at: datetime | None = None,
    user_id: int | None = None,
    summary: str = "",
    data: dict[str, Any] | None = None,
) -> tuple[Interaction, bool]:
    """Write one timeline row once: the same (channel, external_id) twice stays one row.

    Returns (row, created). Concurrent writers are safe: the unique constraint decides."""
    if channel not in CHANNELS:
        raise ValidationError(f"unknown channel {channel!r}", field="channel")
    if not external_id:
        raise ValidationError("external_id is required for idempotent logging")
    when = occurred_at or utcnow()
    values = {
        "channel": channel,
        "external_id": external_id,
        "customer_id": customer_id,
        "direction": direction,
        "status": status,
        "occurred_at": when,
        "ended_at": ended_at,
        "user_id": user_id,
        "summary": summary,
        "data": data or {},
        "created_at": utcnow(),
    }
    stmt = (
        insert_for(session)(Interaction)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        .returning(Interaction.id)
    )
    new_id = await session.scalar(stmt)
    row = await session.scalar(
        select(Interaction)
        .where(Interaction.channel == channel, Interaction.external_id == external_id)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    if new_id is not None and customer_id is not None:
        await session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .where((Customer.last_contacted_at.is_(None)) | (Customer.last_contacted_at < when))
            .values(last_contacted_at=when)
        )
    return row, new_id is not None


async def update_interaction(
    session: AsyncSession, channel: str, external_id: str, **fields: Any
) -> Interaction | None:
    """Change status/data of an existing row (e.g. an SMS delivery report); None if unknown."""
    row = await session.scalar(
        select(Interaction).where(
            Interaction.channel == channel, Interaction.external_id == external_id
        )
    )
    if row is None:
        return None
    for key, value in fields.items():
        if key == "data":
            row.data = {**row.data, **value}
        else:
            setattr(row, key, value)
    return row


def interaction_to_dict(row: Interaction) -> dict[str, Any]:
    """JSON shape of a timeline row."""
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "channel": row.channel,
        "direction": row.direction,
        "status": row.status,
        "occurred_at": row.occurred_at.isoformat(),
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "user_id": row.user_id,
        "summary": row.summary,
        "external_id": row.external_id,
        "data": row.data,
    }


async def timeline(
    session: AsyncSession,
    customer_id: int,
    *,
    limit: int = 50,
    before: tuple[datetime, int] | None = None,
    channel: str | None = None,
) -> list[Interaction]:
    """A customer's interactions across every channel, newest first (keyset-paged)."""
    stmt = select(Interaction).where(Interaction.customer_id == customer_id)
    if channel:
        stmt = stmt.where(Interaction.channel == channel)
    if before:
        at, row_id = before
        stmt = stmt.where(
            (Interaction.occurred_at < at)
            | ((Interaction.occurred_at == at) & (Interaction.id < row_id))
        )
    stmt = stmt.order_by(Interaction.occurred_at.desc(), Interaction.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
