"""Triggered messages: rules that queue a template when something happens in commhub.

Events come from the bus (`internal:call.missed`, `internal:customer.created`) and from periodic
scans (new customers the bus did not report, customers not contacted for N days). Each becomes at
most one trigger delivery per (rule, subject key): the unique constraint makes a repeated event,
a second process on the Redis bus, or a scan that overlaps the bus all harmless. The engine then
sends them through the same claim / journal / consent / rate-limit path as campaigns.

Subject keys: "call:<linkedid>" (or "caller:<number>:<local date>" for dedupe=day),
"customer:<id>", "nocontact:<id>:<last contact or never>" (one follow-up per silence)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, case, cast, exists, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.campaigns.context import address_expr
from hub.campaigns.schedule import zone
from hub.campaigns.segments import Clock, compile_filter, dialect_of
from hub.consent import is_suppressed
from hub.db import insert_for
from hub.errors import ValidationError
from hub.models.base import JSONType, UTCDateTime
from hub.models.campaigns import TriggerDelivery, TriggerRule
from hub.models.consent import Suppression
from hub.models.customers import ContactPoint, Customer
from hub.phone import normalize_caller, parse_phone

TOPICS = ("internal:call.missed", "internal:customer.created")
SCAN_BATCH = 500


async def _rules(session: AsyncSession, event: str) -> list[TriggerRule]:
    return list(
        (
            await session.scalars(
                select(TriggerRule).where(TriggerRule.event == event, TriggerRule.active.is_(True))
            )
        ).all()
    )


async def _matches(
    session: AsyncSession, rule: TriggerRule, customer_id: int | None, now: datetime
) -> bool:
    if not rule.condition:
        return True
    if customer_id is None:
        return False  # a condition is about a customer; an unknown caller cannot meet it
    where = compile_filter(rule.condition, Clock(now, zone(rule.timezone)), dialect_of(session))
    found = await session.scalar(select(Customer.id).where(Customer.id == customer_id, where))
    return found is not None


async def _customer_address(session: AsyncSession, customer_id: int, channel: str) -> str:
    value = await session.scalar(
        select(address_expr(channel)).select_from(Customer).where(Customer.id == customer_id)
    )
    return value or ""


async def _mobile_of(session: AsyncSession, customer_id: int) -> str:
    value = await session.scalar(
        select(ContactPoint.value)
        .where(
            ContactPoint.customer_id == customer_id,
            ContactPoint.kind == "phone",
            ContactPoint.label == "mobile",
        )
        .order_by(ContactPoint.id)
        .limit(1)
    )
    return value or ""


async def _insert(
    session: AsyncSession,
    rule: TriggerRule,
    *,
    subject_key: str,
    customer_id: int | None,
    address: str,
    now: datetime,
    context: dict[str, Any],
    missing: str,
) -> bool:
    """One delivery for (rule, subject key), once; True if it was new."""
    if not address:
        state, error = "skipped", missing
    elif await is_suppressed(session, rule.channel, address):
        state, error = "suppressed", "on the suppression list"
    else:
        state, error = "pending", ""
    stmt = (
        insert_for(session)(TriggerDelivery)
        .values(
            rule_id=rule.id,
            subject_key=subject_key[:200],
            customer_id=customer_id,
            channel=rule.channel,
            address=address,
            state=state,
            error=error,
            due_at=now + timedelta(seconds=rule.delay_seconds),
            attempts=0,
            in_doubt=0,
            context=context,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["rule_id", "subject_key"])
        .returning(TriggerDelivery.id)
    )
    return (await session.scalar(stmt)) is not None and state == "pending"


async def enqueue_event(
    session: AsyncSession, event: dict[str, Any], *, region: str, now: datetime
) -> int:
    """Queue the messages an event triggers; returns how many new ones will be sent."""
    kind = event.get("type")
    if kind == "call.missed":
        return await _missed_call(session, event, region, now)
    if kind == "customer.created":
        customer_id = event.get("customer_id")
        if not isinstance(customer_id, int):
            return 0
        return await _new_customer(session, customer_id, now)
    return 0


async def _missed_call(
    session: AsyncSession, event: dict[str, Any], region: str, now: datetime
) -> int:
    caller = normalize_caller(str(event.get("caller") or ""), region)
    customer_id = event.get("customer_id") if isinstance(event.get("customer_id"), int) else None
    if customer_id is None and caller:
        customer_id = await session.scalar(
            select(ContactPoint.customer_id).where(
                ContactPoint.kind == "phone", ContactPoint.value == caller
            )
        )
    linkedid = str(event.get("linkedid") or "")
    created = 0
    for rule in await _rules(session, "call.missed"):
        if not await _matches(session, rule, customer_id, now):
            continue
        if rule.channel == "sms":
            mobile = bool(caller) and _is_mobile(caller or "", region)
            address = caller if mobile and caller else ""
            if not address and customer_id is not None:
                address = await _mobile_of(session, customer_id)
            missing = "the caller has no mobile number"
        else:
            address = await _customer_address(session, customer_id, "email") if customer_id else ""
            missing = "no email address for the caller"
        local_day = now.astimezone(zone(rule.timezone)).date().isoformat()
        who = caller or (f"customer{customer_id}" if customer_id else "unknown")
        if rule.dedupe == "day" or not linkedid:
            key = f"caller:{who}:{local_day}"
        else:
            key = f"call:{linkedid}"
        context = {
            "type": "call.missed",
            "caller": caller or "",
            "linkedid": linkedid,
            "occurred_at": str(event.get("occurred_at") or now.isoformat()),
        }
        if await _insert(
            session,
            rule,
            subject_key=key,
            customer_id=customer_id,
            address=address,
            now=now,
            context=context,
            missing=missing,
        ):
            created += 1
    return created


def _is_mobile(number: str, region: str) -> bool:
    try:
        return parse_phone(number, region).is_mobile
    except ValidationError:
        return False


async def _new_customer(session: AsyncSession, customer_id: int, now: datetime) -> int:
    if await session.get(Customer, customer_id) is None:
        return 0
    created = 0
    for rule in await _rules(session, "customer.created"):
        created += await _new_customer_for(session, rule, customer_id, now)
    return created


async def scan(session: AsyncSession, *, now: datetime) -> int:
    """Catch-up and periodic rules: new customers past each rule's cursor, long silences."""
    created = 0
    for rule in await _rules(session, "customer.created"):
        ids = list(
            (
                await session.scalars(
                    select(Customer.id)
                    .where(Customer.id > rule.scan_cursor)
                    .order_by(Customer.id)
                    .limit(SCAN_BATCH)
                )
            ).all()
        )
        for customer_id in ids:
            created += await _new_customer_for(session, rule, customer_id, now)
        if ids:
            await session.execute(
                update(TriggerRule).where(TriggerRule.id == rule.id).values(scan_cursor=ids[-1])
            )
    for rule in await _rules(session, "no_contact"):
        created += await _scan_silence(session, rule, now)
    return created


async def _new_customer_for(
    session: AsyncSession, rule: TriggerRule, customer_id: int, now: datetime
) -> int:
    if not await _matches(session, rule, customer_id, now):
        return 0
    address = await _customer_address(session, customer_id, rule.channel)
    new = await _insert(
        session,
        rule,
        subject_key=f"customer:{customer_id}",
        customer_id=customer_id,
        address=address,
        now=now,
        context={"type": "customer.created"},
        missing=f"no {'email address' if rule.channel == 'email' else 'phone number'}",
    )
    return int(new)


async def _scan_silence(session: AsyncSession, rule: TriggerRule, now: datetime) -> int:
    """One follow-up per customer per silence of `days` (set-based: one INSERT ... SELECT)."""
    days = rule.days or 0
    if days <= 0:
        return 0
    since = func.coalesce(Customer.last_contacted_at, Customer.created_at)
    where = [since < now - timedelta(days=days)]
    if rule.condition:
        where.append(
            compile_filter(rule.condition, Clock(now, zone(rule.timezone)), dialect_of(session))
        )
    key = (
        literal("nocontact:")
        + cast(Customer.id, String)
        + literal(":")
        + func.coalesce(cast(Customer.last_contacted_at, String), literal("never"))
    )
    picked = (
        select(
            Customer.id.label("cid"),
            key.label("key"),
            address_expr(rule.channel).label("addr"),
        )
        .where(*where)
        .subquery()
    )
    suppressed = exists().where(
        Suppression.channel == rule.channel, Suppression.value == picked.c.addr
    )
    already = exists().where(
        TriggerDelivery.rule_id == rule.id, TriggerDelivery.subject_key == picked.c.key
    )
    missing = "no email address" if rule.channel == "email" else "no phone number"
    rows = select(
        literal(rule.id),
        picked.c.key,
        picked.c.cid,
        literal(rule.channel),
        func.coalesce(picked.c.addr, ""),
        case((picked.c.addr.is_(None), "skipped"), (suppressed, "suppressed"), else_="pending"),
        case((picked.c.addr.is_(None), missing), else_=""),
        literal(now + timedelta(seconds=rule.delay_seconds), UTCDateTime),
        literal(0),
        literal(0),
        literal({"type": "no_contact", "days": days}, JSONType),
        literal(now, UTCDateTime),
    ).where(~already)
    result = await session.execute(
        insert_for(session)(TriggerDelivery)
        .from_select(
            [
                "rule_id",
                "subject_key",
                "customer_id",
                "channel",
                "address",
                "state",
                "error",
                "due_at",
                "attempts",
                "in_doubt",
                "context",
                "created_at",
            ],
            rows,
        )
        .on_conflict_do_nothing(index_elements=["rule_id", "subject_key"])
    )
    return int(getattr(result, "rowcount", 0) or 0)
