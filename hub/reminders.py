"""Reminders: callbacks after missed calls and follow-ups, idempotent by external id."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.models.base import utcnow
from hub.models.interactions import Reminder
from hub.services import Hub

log = logging.getLogger(__name__)


async def create_reminder(
    session: AsyncSession,
    *,
    title: str,
    customer_id: int | None = None,
    assignee_id: int | None = None,
    queue: str | None = None,
    kind: str = "custom",
    phone: str | None = None,
    due_at: datetime | None = None,
    external_id: str | None = None,
) -> tuple[Reminder, bool]:
    """Add a reminder once per external_id; returns (reminder, created)."""
    if external_id:
        existing = await session.scalar(select(Reminder).where(Reminder.external_id == external_id))
        if existing is not None:
            return existing, False
    reminder = Reminder(
        title=title[:300],
        customer_id=customer_id,
        assignee_id=assignee_id,
        queue=queue,
        kind=kind,
        phone=phone,
        due_at=due_at or utcnow(),
        external_id=external_id,
    )
    session.add(reminder)
    await session.flush()
    return reminder, True


async def open_reminders(
    session: AsyncSession,
    *,
    customer_id: int | None = None,
    assignee_id: int | None = None,
    limit: int = 50,
) -> list[Reminder]:
    """Reminders not done yet, soonest first."""
    stmt = select(Reminder).where(Reminder.done_at.is_(None))
    if customer_id is not None:
        stmt = stmt.where(Reminder.customer_id == customer_id)
    if assignee_id is not None:
        stmt = stmt.where(Reminder.assignee_id == assignee_id)
    stmt = stmt.order_by(Reminder.due_at, Reminder.id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def complete_reminder(session: AsyncSession, reminder_id: int) -> Reminder | None:
    """Mark done; None if unknown."""
    reminder = await session.get(Reminder, reminder_id)
    if reminder is not None and reminder.done_at is None:
        reminder.done_at = utcnow()
    return reminder


async def notify_due(hub: Hub, *, batch: int = 200) -> int:
    """Tell each assignee once that a reminder is due (websocket `reminder.due`); returns how many.

    Claimed with an UPDATE … WHERE notified_at IS NULL, so several processes never tell twice."""
    now = utcnow()
    async with hub.sessions() as session, session.begin():
        due = list(
            (
                await session.scalars(
                    select(Reminder)
                    .where(
                        Reminder.done_at.is_(None),
                        Reminder.notified_at.is_(None),
                        Reminder.due_at <= now,
                    )
                    .order_by(Reminder.due_at)
                    .limit(batch)
                )
            ).all()
        )
        claimed = []
        for reminder in due:
            result = await session.execute(
                update(Reminder)
                .where(Reminder.id == reminder.id, Reminder.notified_at.is_(None))
                .values(notified_at=now)
            )
            if getattr(result, "rowcount", 0):
                claimed.append(reminder_to_dict(reminder))
    for item in claimed:
        topic = f"user:{item['assignee_id']}" if item["assignee_id"] else "role:agent"
        await hub.bus.publish(topic, {"type": "reminder.due", "reminder": item})
    return len(claimed)


async def run_due_notifier(hub: Hub, every: float = 30.0) -> None:
    """Forever: notify due reminders every `every` seconds."""
    while True:
        try:
            await notify_due(hub)
        except Exception:  # the database may be briefly away; try again next round
            log.exception("reminder notifier failed")
        await asyncio.sleep(every)


def reminder_to_dict(r: Reminder) -> dict[str, Any]:
    """JSON shape of a reminder."""
    return {
        "id": r.id,
        "customer_id": r.customer_id,
        "assignee_id": r.assignee_id,
        "queue": r.queue,
        "kind": r.kind,
        "title": r.title,
        "phone": r.phone,
        "due_at": r.due_at.isoformat(),
        "done_at": r.done_at.isoformat() if r.done_at else None,
    }
