"""The audit log: who changed what, for supervisors and admins (newest first, keyset-paged)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import ValidationError
from hub.models.users import AuditEntry, User
from web.auth import require_role
from web.keys import HUB

MAX_LIMIT = 200


def parse_when(value: str, name: str, *, end: bool = False) -> datetime | None:
    """An ISO date or date-time (naive = UTC); a bare date as `end` means the end of that day."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be an ISO date like 2024-05-01", field=name) from None
    if end and len(value) == 10:
        parsed += timedelta(days=1)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def query_audit(
    session: AsyncSession,
    *,
    username: str = "",
    action: str = "",
    target: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Audit entries matching the filters, newest first; returns (items, next before_id)."""
    limit = max(1, min(limit, MAX_LIMIT))
    stmt = select(AuditEntry, User.username).outerjoin(User, User.id == AuditEntry.user_id)
    if username:
        stmt = stmt.where(User.username == username)
    if action:
        # "customer" finds customer.create, customer.update ...; "login.failed" finds itself.
        stmt = stmt.where(
            (AuditEntry.action == action) | AuditEntry.action.startswith(action + ".")
        )
    if target:
        stmt = stmt.where(AuditEntry.target == target)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    rows = (await session.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1))).all()
    items: list[dict[str, Any]] = [
        {
            "id": entry.id,
            "at": entry.at.isoformat(),
            "user_id": entry.user_id,
            "user": name,
            "action": entry.action,
            "target": entry.target,
            "details": entry.details or {},
        }
        for entry, name in rows[:limit]
    ]
    return items, (int(items[-1]["id"]) if len(rows) > limit else None)


async def list_audit(request: web.Request) -> web.Response:
    """GET /api/v1/audit?user=&action=&target=&from=&to=&limit=&cursor="""
    require_role(request, "supervisor")
    hub = request.app[HUB]
    qs = request.query
    try:
        limit = int(qs.get("limit") or 50)
        cursor = int(qs["cursor"]) if qs.get("cursor") else None
    except ValueError:
        raise ValidationError("limit and cursor must be whole numbers", field="limit") from None
    async with hub.sessions() as session:
        items, nxt = await query_audit(
            session,
            username=qs.get("user", ""),
            action=qs.get("action", ""),
            target=qs.get("target", ""),
            since=parse_when(qs.get("from", ""), "from"),
            until=parse_when(qs.get("to", ""), "to", end=True),
            limit=limit,
            before_id=cursor,
        )
    return web.json_response({"items": items, "next": str(nxt) if nxt is not None else None})


def setup(app: web.Application) -> None:
    """Register routes."""
    app.router.add_get("/api/v1/audit", list_audit)
