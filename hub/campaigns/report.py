"""Campaign reports (per run, per customer source), reply attribution, and outcome recording.

Outcomes arrive from elsewhere: the unsubscribe link (consent.py), the open pixel, bounce and
delivery reports (email and SMS code call `record_outcome` with the Message-ID / SMS reference the
engine put on the message, or update the timeline row whose external_id is that id), and replies
(any inbound email or SMS from the customer within REPLY_WINDOW after a campaign message)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, case, exists, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import suppress
from hub.models.base import utcnow
from hub.models.campaigns import Campaign, CampaignDelivery, CampaignRun, TriggerDelivery
from hub.models.consent import Suppression
from hub.models.customers import Customer
from hub.models.interactions import Interaction

REPLY_WINDOW = timedelta(days=7)
OUTCOMES = ("delivered", "bounced", "opened", "replied", "unsubscribed")
# Timeline statuses other modules set on our rows (SMS delivery reports, bounces).
DELIVERED_STATUSES = ("delivered",)
BOUNCED_STATUSES = ("bounced", "undelivered", "rejected", "expired", "failed")
_EMAIL_ID = re.compile(r"^<([ct])d(\d+)\.[0-9a-f]{8}@[^>]+>$")
_SMS_REF = re.compile(r"^([ct])d(\d+)-[0-9a-f]{8}$")
_TABLES: dict[str, Table] = {
    "c": CampaignDelivery.__table__,  # type: ignore[dict-item]
    "t": TriggerDelivery.__table__,  # type: ignore[dict-item]
}


def parse_message_id(message_id: str) -> tuple[str, int] | None:
    """("c" or "t", delivery id) for a Message-ID or SMS reference the engine made, else None."""
    text = (message_id or "").strip()
    match = _EMAIL_ID.match(text) or _SMS_REF.match(text)
    if not match:
        return None
    return match.group(1), int(match.group(2))


async def record_outcome(
    session: AsyncSession, message_id: str, outcome: str, *, at: datetime | None = None
) -> bool:
    """Note what happened to a message we sent (first time only); a bounce also suppresses the
    address. Returns False for ids that are not ours or outcomes already recorded."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
    parsed = parse_message_id(message_id)
    if parsed is None:
        return False
    kind, delivery_id = parsed
    table = _TABLES[kind]
    column = table.c[f"{outcome}_at"]
    returning = [table.c.channel, table.c.address]
    if kind == "c":
        returning.append(table.c.run_id)
    row = (
        await session.execute(
            update(table)
            .where(table.c.id == delivery_id, table.c.message_id == message_id, column.is_(None))
            .values({column: at or utcnow()})
            .returning(*returning)
        )
    ).first()
    if row is None:
        return False
    if outcome == "bounced":
        if row.address:
            await suppress(session, row.channel, row.address, "bounced", f"bounce of {message_id}")
        if kind == "c":
            await session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == row.run_id)
                .values(bounced_count=CampaignRun.bounced_count + 1)
            )
    return True


async def attribute_replies(
    session: AsyncSession, *, after_id: int | None, now: datetime, limit: int = 2000
) -> int:
    """Mark the latest campaign message before each new inbound email/SMS as replied.

    Returns the new checkpoint (interaction id). On the first call (after_id None) the last
    REPLY_WINDOW is looked at again; re-marking is harmless (first reply only)."""
    if after_id is None:
        after_id = int(
            await session.scalar(
                select(func.coalesce(func.max(Interaction.id), 0)).where(
                    Interaction.occurred_at < now - REPLY_WINDOW
                )
            )
            or 0
        )
    rows = (
        await session.execute(
            select(
                Interaction.id,
                Interaction.customer_id,
                Interaction.channel,
                Interaction.occurred_at,
            )
            .where(
                Interaction.id > after_id,
                Interaction.direction == "inbound",
                Interaction.customer_id.is_not(None),
                Interaction.channel.in_(("email", "sms")),
                Interaction.status != "unsubscribed",
            )
            .order_by(Interaction.id)
            .limit(limit)
        )
    ).all()
    d = CampaignDelivery
    for row in rows:
        latest = (
            select(d.id)
            .where(
                d.customer_id == row.customer_id,
                d.channel == row.channel,
                d.state == "sent",
                d.sent_at <= row.occurred_at,
                d.sent_at >= row.occurred_at - REPLY_WINDOW,
            )
            .order_by(d.sent_at.desc())
            .limit(1)
            .scalar_subquery()
        )
        await session.execute(
            update(d)
            .where(d.id == latest, d.replied_at.is_(None))
            .values(replied_at=row.occurred_at)
            .execution_options(synchronize_session=False)
        )
    if rows:
        return int(rows[-1].id)
    # Nothing new: move the checkpoint to the newest interaction so the next scan starts there.
    newest = await session.scalar(select(func.max(Interaction.id)))
    return max(after_id, int(newest or 0))


def _counts(d: Any, channel: str, interaction: Any) -> list[Any]:
    """Aggregate columns of a delivery report (one row per group)."""
    sent = func.sum(case((d.state == "sent", 1), else_=0))
    # A bounce handler that only suppresses the address (it did not know our message) counts too.
    bounced_later = exists().where(
        Suppression.channel == d.channel,
        Suppression.value == d.address,
        Suppression.reason == "bounced",
        Suppression.created_at >= d.sent_at,
    )
    bounced = func.sum(
        case(
            (
                and_(
                    d.state == "sent",
                    or_(
                        d.bounced_at.is_not(None),
                        interaction.status.in_(BOUNCED_STATUSES),
                        bounced_later,
                    ),
                ),
                1,
            ),
            else_=0,
        )
    )
    if channel == "email":
        # Email has no delivery receipts: accepted and not bounced counts as delivered.
        delivered = sent - bounced
    else:
        delivered = func.sum(
            case(
                (
                    and_(
                        d.state == "sent",
                        or_(
                            d.delivered_at.is_not(None),
                            interaction.status.in_(DELIVERED_STATUSES),
                        ),
                    ),
                    1,
                ),
                else_=0,
            )
        )
    return [
        func.count(d.id).label("total"),
        sent.label("sent"),
        delivered.label("delivered"),
        bounced.label("bounced"),
        func.sum(case((d.state == "failed", 1), else_=0)).label("failed"),
        func.sum(case((d.state == "suppressed", 1), else_=0)).label("suppressed"),
        func.sum(case((d.state == "skipped", 1), else_=0)).label("skipped"),
        func.sum(case((d.state.in_(("pending", "sending")), 1), else_=0)).label("queued"),
        func.count(d.opened_at).label("opened"),
        func.count(d.replied_at).label("replied"),
        func.count(d.unsubscribed_at).label("unsubscribed"),
        func.coalesce(func.sum(d.in_doubt), literal(0)).label("in_doubt_resends"),
    ]


_FIELDS = (
    "total",
    "sent",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
    "skipped",
    "queued",
    "opened",
    "replied",
    "unsubscribed",
    "in_doubt_resends",
)


def _row_dict(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(getattr(row, name) or 0) for name in _FIELDS}
    out["reply_rate"] = round(out["replied"] / out["sent"], 4) if out["sent"] else 0.0
    return out


async def campaign_report(session: AsyncSession, campaign_id: int) -> dict[str, Any]:
    """Sent, delivered, bounced, unsubscribed, replied...: per run, and per customer source."""
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        from hub.errors import NotFound

        raise NotFound(f"campaign {campaign_id} not found")
    d = CampaignDelivery
    i = Interaction
    joined = d.__table__.outerjoin(
        i.__table__, and_(i.channel == d.channel, i.external_id == d.message_id)
    )
    runs = {
        run.id: run
        for run in (
            await session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == campaign_id)
                .order_by(CampaignRun.id)
            )
        ).all()
    }
    per_run = []
    if runs:
        result = await session.execute(
            select(d.run_id, *_counts(d, campaign.channel, i))
            .select_from(joined)
            .where(d.run_id.in_(list(runs)))
            .group_by(d.run_id)
        )
        by_run = {row.run_id: _row_dict(row) for row in result}
        for run_id, run in runs.items():
            entry: dict[str, Any] = by_run.get(run_id) or {
                **dict.fromkeys(_FIELDS, 0),
                "reply_rate": 0.0,
            }
            per_run.append(
                {
                    "run_id": run_id,
                    "scheduled_for": run.scheduled_for.isoformat(),
                    "missed_since": run.missed_since.isoformat() if run.missed_since else None,
                    "status": run.status,
                    "status_reason": run.status_reason,
                    "started_at": run.started_at.isoformat() if run.started_at else None,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    **entry,
                }
            )
    per_source = []
    if runs:
        source = func.coalesce(Customer.source, literal("")).label("source")
        result = await session.execute(
            select(source, *_counts(d, campaign.channel, i))
            .select_from(joined.outerjoin(Customer.__table__, Customer.id == d.customer_id))
            .where(d.run_id.in_(list(runs)))
            .group_by(source)
            .order_by(source)
        )
        per_source = [{"source": row.source or "", **_row_dict(row)} for row in result]
    totals = dict.fromkeys(_FIELDS, 0)
    for entry in per_run:
        for name in _FIELDS:
            totals[name] += entry[name]
    totals_out: dict[str, Any] = dict(totals)
    totals_out["reply_rate"] = (
        round(totals["replied"] / totals["sent"], 4) if totals["sent"] else 0.0
    )
    return {
        "campaign_id": campaign_id,
        "name": campaign.name,
        "channel": campaign.channel,
        "status": campaign.status,
        "totals": totals_out,
        "runs": per_run,
        "by_source": per_source,
    }
