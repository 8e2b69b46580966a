"""Reading the call log: filters, keyset paging, CSV rows and per-agent / per-hour figures."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.csvcells import defuse
from hub.errors import ValidationError
from hub.models.calls import Call
from hub.models.customers import Customer

DISPOSITIONS = ("answered", "missed", "busy", "failed", "abandoned", "transferred")
DIRECTIONS = ("inbound", "outbound", "internal")
CSV_FIELDS = (
    "id",
    "linkedid",
    "direction",
    "caller",
    "callee",
    "agent",
    "rang",
    "queue",
    "started_at",
    "answered_at",
    "ended_at",
    "wait_seconds",
    "talk_seconds",
    "disposition",
    "hangup_cause",
    "recording",
    "customer_id",
    "customer_name",
)


@dataclass(frozen=True)
class CallFilter:
    """What a supervisor (or an agent, for their own calls) asks of the call log."""

    start: datetime | None = None
    end: datetime | None = None
    agent: str | None = None
    disposition: str | None = None
    direction: str | None = None
    queue: str | None = None
    customer_id: int | None = None
    # An agent's own calls: ones they answered or placed, or that rang them.
    mine: tuple[int, str] | None = None


def parse_when(value: str, name: str, tz: ZoneInfo, *, end: bool = False) -> datetime:
    """A date (whole day in `tz`) or an ISO date-time; naive ones are read in `tz`."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=tz)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
    except ValueError:
        raise ValidationError(f"{name} must be a date or ISO date-time", field=name) from None
    return moment


def zone(name: str | None) -> ZoneInfo:
    """An IANA zone or a 400."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}", field="tz") from None


def filter_from_query(query: Any, tz: ZoneInfo) -> CallFilter:
    """Build a CallFilter from request query parameters, validating each."""
    disposition = query.get("status") or query.get("disposition") or None
    if disposition and disposition not in DISPOSITIONS:
        raise ValidationError(f"status must be one of {', '.join(DISPOSITIONS)}", field="status")
    direction = query.get("direction") or None
    if direction and direction not in DIRECTIONS:
        raise ValidationError(
            f"direction must be one of {', '.join(DIRECTIONS)}", field="direction"
        )
    customer_id = query.get("customer_id") or None
    try:
        cid = int(customer_id) if customer_id else None
    except ValueError:
        raise ValidationError("customer_id must be a number", field="customer_id") from None
    return CallFilter(
        start=parse_when(query["from"], "from", tz) if query.get("from") else None,
        end=parse_when(query["to"], "to", tz, end=True) if query.get("to") else None,
        agent=query.get("agent") or None,
        disposition=disposition,
        direction=direction,
        queue=query.get("queue") or None,
        customer_id=cid,
    )


def _where(stmt: Any, f: CallFilter) -> Any:
    if f.start:
        stmt = stmt.where(Call.started_at >= f.start)
    if f.end:
        stmt = stmt.where(Call.started_at < f.end)
    if f.agent:
        stmt = stmt.where(Call.agent == f.agent)
    if f.disposition:
        stmt = stmt.where(Call.disposition == f.disposition)
    if f.direction:
        stmt = stmt.where(Call.direction == f.direction)
    if f.queue:
        stmt = stmt.where(Call.queue == f.queue)
    if f.customer_id is not None:
        stmt = stmt.where(Call.customer_id == f.customer_id)
    if f.mine:
        user_id, username = f.mine
        # rang is a JSON list of user names; a LIKE on its text form is portable and exact
        # enough with the quotes included.

        stmt = stmt.where(
            or_(Call.agent_id == user_id, cast(Call.rang, String).like(f'%"{username}"%'))
        )
    return stmt


async def list_calls(
    session: AsyncSession, f: CallFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[tuple[Call, str | None]], str | None]:
    """Newest first, keyset-paged; each call with its customer's name."""
    limit = max(1, min(limit, 500))
    stmt = _where(
        select(Call, Customer.name).outerjoin(Customer, Customer.id == Call.customer_id), f
    )
    if cursor:
        at, row_id = _decode(cursor)
        stmt = stmt.where((Call.started_at < at) | ((Call.started_at == at) & (Call.id < row_id)))
    rows = list(
        (
            await session.execute(
                stmt.order_by(Call.started_at.desc(), Call.id.desc()).limit(limit + 1)
            )
        ).all()
    )
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1][0]
        nxt = _encode(last.started_at, last.id)
    return [(c, n) for c, n in rows], nxt


async def stream_calls(
    session: AsyncSession, f: CallFilter
) -> AsyncIterator[tuple[Call, str | None]]:
    """Every matching call, newest first, streamed (CSV export of a year stays flat in memory)."""
    stmt = _where(
        select(Call, Customer.name).outerjoin(Customer, Customer.id == Call.customer_id), f
    )
    result = await session.stream(
        stmt.order_by(Call.started_at.desc(), Call.id.desc()).execution_options(yield_per=1000)
    )
    async for call, name in result:
        yield call, name


def _encode(at: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), row_id]).encode()).decode()


def _decode(cursor: str) -> tuple[datetime, int]:
    try:
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), int(row_id)
    except (ValueError, TypeError):
        raise ValidationError("bad cursor", field="cursor") from None


@dataclass
class Figures:
    """Counts and averages for one agent or one hour."""

    key: str
    answered: int = 0
    missed: int = 0
    abandoned: int = 0
    busy: int = 0
    failed: int = 0
    transferred: int = 0
    total: int = 0
    wait: list[float] = field(default_factory=list)
    talk: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "key": self.key,
            "answered": self.answered,
            "missed": self.missed,
            "abandoned": self.abandoned,
            "busy": self.busy,
            "failed": self.failed,
            "transferred": self.transferred,
            "total": self.total,
            "avg_wait": round(sum(self.wait) / len(self.wait), 1) if self.wait else 0.0,
            "avg_talk": round(sum(self.talk) / len(self.talk), 1) if self.talk else 0.0,
        }


async def call_stats(
    session: AsyncSession, f: CallFilter, group_by: str, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """Per agent: calls they answered, and missed/abandoned calls that rang them. Per hour (in
    `tz`): every call by the hour it started. Averages: wait over all calls, talk over answered."""
    if group_by not in ("agent", "hour"):
        raise ValidationError("group_by must be agent or hour", field="group_by")
    stmt = _where(
        select(
            Call.agent,
            Call.rang,
            Call.disposition,
            Call.started_at,
            Call.wait_seconds,
            Call.talk_seconds,
        ),
        f,
    )
    groups: dict[str, Figures] = {}
    if group_by == "hour":
        for h in range(24):
            groups[f"{h:02d}"] = Figures(f"{h:02d}")

    def add(key: str, disposition: str, wait: float, talk: float) -> None:
        fig = groups.setdefault(key, Figures(key))
        fig.total += 1
        setattr(fig, disposition, getattr(fig, disposition) + 1)
        fig.wait.append(wait)
        if disposition in ("answered", "transferred"):
            fig.talk.append(talk)

    result = await session.stream(stmt.execution_options(yield_per=2000))
    async for agent, rang, disposition, started, wait, talk in result:
        if group_by == "hour":
            add(f"{started.astimezone(tz).hour:02d}", disposition, wait, talk)
        elif agent and disposition in ("answered", "transferred"):
            add(agent, disposition, wait, talk)
        else:
            for name in rang or ([agent] if agent else []):
                if "/" not in name:  # user names only, not raw devices
                    add(name, disposition, wait, talk)
    ordered = sorted(groups.values(), key=lambda g: g.key)
    return [g.as_dict() for g in ordered]


def csv_row(call: Call, customer_name: str | None) -> list[str]:
    """One call as CSV cells (times in UTC ISO, lists joined with spaces)."""
    values: dict[str, Any] = {
        "id": call.id,
        "linkedid": call.linkedid,
        "direction": call.direction,
        "caller": call.caller or "",
        "callee": call.callee or "",
        "agent": call.agent or "",
        "rang": " ".join(call.rang or []),
        "queue": call.queue or "",
        "started_at": call.started_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else "",
        "ended_at": call.ended_at.isoformat(),
        "wait_seconds": f"{call.wait_seconds:.1f}",
        "talk_seconds": f"{call.talk_seconds:.1f}",
        "disposition": call.disposition,
        "hangup_cause": call.hangup_cause or "",
        "recording": call.recording or "",
        "customer_id": call.customer_id or "",
        "customer_name": customer_name or "",
    }
    return [defuse(str(values[k])) for k in CSV_FIELDS]
