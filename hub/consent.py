"""Consent: suppress and re-allow addresses and numbers; every sender checks here."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import among, insert_for
from hub.driver_sql import DriverQuery
from hub.errors import ValidationError
from hub.models.base import utcnow
from hub.models.consent import Suppression

CHANNELS = ("email", "sms")
REASONS = ("unsubscribed", "bounced", "stop", "complaint", "manual")


async def suppress(
    session: AsyncSession, channel: str, value: str, reason: str, detail: str = ""
) -> bool:
    """Put a normalised address/number on the list; True if it was not there yet."""
    if channel not in CHANNELS:
        raise ValidationError(f"channel must be email or sms, got {channel!r}")
    if reason not in REASONS:
        raise ValidationError(f"reason must be one of {', '.join(REASONS)}")
    insert = insert_for(session)
    stmt = (
        insert(Suppression)
        .values(
            channel=channel, value=value, reason=reason, detail=detail[:500], created_at=utcnow()
        )
        .on_conflict_do_nothing(index_elements=["channel", "value"])
        .returning(Suppression.id)
    )
    return (await session.scalar(stmt)) is not None


async def unsuppress(session: AsyncSession, channel: str, value: str) -> bool:
    """Take an address/number off the list (START by SMS, re-subscribe); True if it was on it."""
    result = await session.execute(
        delete(Suppression).where(Suppression.channel == channel, Suppression.value == value)
    )
    return bool(getattr(result, "rowcount", 0))


async def is_suppressed(session: AsyncSession, channel: str, value: str) -> bool:
    """True when marketing must not reach this address/number."""
    found = await session.scalar(
        select(Suppression.id).where(Suppression.channel == channel, Suppression.value == value)
    )
    return found is not None


async def suppressed_among(session: AsyncSession, channel: str, values: Iterable[str]) -> set[str]:
    """Which of these values are suppressed (one query for a whole batch)."""
    wanted = list(set(values))
    if not wanted:
        return set()
    rows = await _SUPPRESSED_AMONG.rows(session, {"channel": channel, "values": wanted})
    return {value for (value,) in rows}


# Run for every batch a campaign claims: compiled once, through the driver (hub/driver_sql.py).
_SUPPRESSED_AMONG = DriverQuery(
    lambda dialect: select(Suppression.value).where(
        Suppression.channel == bindparam("channel"),
        among(Suppression.value, dialect, key="values"),
    )
)
