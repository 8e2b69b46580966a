"""Sending and receiving SMS: normalise, check consent, log, track delivery, handle STOP/START.

Every outgoing SMS is one `sms_messages` row plus one timeline row (channel "sms", external_id =
our reference) that move together through queued → sent → delivered | failed | expired. Delivery
reports are applied idempotently: twice is once, out of order never goes backwards, and a report
for an id we do not know yet waits in `sms_pending_reports` until the send is recorded."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import is_suppressed, suppress, unsuppress
from hub.customers import create_customer, find_by_phone, get_customer
from hub.db import insert_for
from hub.errors import CommhubError, NotFound, PermanentError, ValidationError
from hub.messaging.ports import OutgoingSms, SmsGateway
from hub.models.base import utcnow
from hub.models.customers import ContactPoint, Customer
from hub.models.interactions import Interaction
from hub.models.sms import SmsMessage, SmsPendingReport
from hub.phone import normalize_phone
from hub.services import Hub
from hub.sms.events import REPORT_STATUSES, DeliveryReport, InboundSms
from hub.sms.text import MAX_PARTS, analyze
from hub.timeline import record_interaction, update_interaction

log = logging.getLogger(__name__)

# A report may only move a message forward; the first final word stays.
RANK = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2, "expired": 2}
FINAL = frozenset({"delivered", "failed", "expired"})
MAX_TEXT = 160 * MAX_PARTS  # far beyond any sane SMS; protects the database, not the handset
Keyword = Literal["stop", "start"]


class SmsNotConfigured(PermanentError):
    """No SMS gateway is configured ([sms] gateway = "none")."""


class SmsSuppressed(ValidationError):
    """The number opted out (STOP): marketing must not reach it."""


def new_reference() -> str:
    """A fresh reference for one outgoing SMS (ours; echoed back in delivery reports)."""
    return uuid.uuid4().hex


def sms_to_dict(row: SmsMessage) -> dict[str, Any]:
    """JSON shape of one SMS (API answers, the card)."""
    return {
        "id": row.id,
        "reference": row.reference,
        "direction": row.direction,
        "gateway": row.gateway,
        "gateway_id": row.gateway_id,
        "customer_id": row.customer_id,
        "user_id": row.user_id,
        "to": row.to_number,
        "from": row.from_number,
        "text": row.text,
        "encoding": row.encoding,
        "segments": row.segments,
        "cost": row.cost,
        "marketing": row.marketing,
        "source": row.source,
        "status": row.status,
        "history": list(row.history or []),
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "final_at": row.final_at.isoformat() if row.final_at else None,
    }


def check_text(text: Any) -> str:
    """The text if it can be sent as one (possibly concatenated) SMS, else ValidationError."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("text is required", field="text")
    if len(text) > MAX_TEXT:
        raise ValidationError(f"text is longer than {MAX_TEXT} characters", field="text")
    info = analyze(text)
    if info.segments > MAX_PARTS:
        raise ValidationError(
            f"text needs {info.segments} segments; at most {MAX_PARTS} can be joined", field="text"
        )
    return text


def _phone_of(customer: Customer) -> str:
    phones = [c for c in customer.contacts if c.kind == "phone"]
    if not phones:
        raise ValidationError(f"customer {customer.id} has no phone number", field="customer_id")
    mobile = [c for c in phones if c.label == "mobile"]
    return (mobile or phones)[0].value


async def _customer_id_for(session: AsyncSession, e164: str) -> int | None:
    """Who owns the number: one probe of the unique contact-point index (no customer loaded)."""
    found = await session.scalar(
        select(ContactPoint.customer_id).where(
            ContactPoint.kind == "phone", ContactPoint.value == e164
        )
    )
    return None if found is None else int(found)


async def resolve_recipient(
    session: AsyncSession, region: str, to: str | None, customer_id: int | None
) -> tuple[str, int | None]:
    """(E.164 number, customer id) from a number and/or a customer; the number wins if both."""
    if to:
        e164 = normalize_phone(to, region)
        if customer_id is None:
            customer_id = await _customer_id_for(session, e164)
        elif await session.get(Customer, customer_id) is None:
            raise NotFound(f"customer {customer_id} not found")
        return e164, customer_id
    if customer_id is None:
        raise ValidationError("give a number (to) or a customer_id", field="to")
    customer = await get_customer(session, customer_id)
    return _phone_of(customer), customer.id


def _history_entry(status: str, at: datetime, detail: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"status": status, "at": at.isoformat()}
    if detail:
        entry["detail"] = detail[:200]
    return entry


def _is_no_op(current: str, status: str) -> bool:
    return current in FINAL or status == current or RANK.get(status, -1) < RANK.get(current, 0)


def apply_status(row: SmsMessage, status: str, at: datetime, detail: str = "") -> bool:
    """Move one outgoing message forward; False (and no change) for a duplicate or a step back."""
    # Two different final words (delivered, then expired): the first one stands.
    if _is_no_op(row.status, status):
        return False
    row.status = status
    row.history = [*row.history, _history_entry(status, at, detail)]
    if status == "sent" and row.sent_at is None:
        row.sent_at = at
    if status in FINAL:
        row.final_at = at
        if status != "delivered" and detail and not row.error:
            row.error = detail[:500]
    row.updated_at = utcnow()
    return True


async def _lock(session: AsyncSession, where: ColumnElement[bool]) -> SmsMessage | None:
    """Load one message for change, after taking its write lock (one UPDATE ... RETURNING).

    A plain SELECT first would read a version that a concurrent report may change before we
    write (PostgreSQL row lock; SQLite's write lock is taken by the first write)."""
    found = await session.scalars(
        update(SmsMessage)
        .where(where)
        .values(updated_at=utcnow())
        .returning(SmsMessage)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    rows = sorted(found.all(), key=lambda r: r.id)
    return rows[0] if rows else None


async def _sync_timeline(session: AsyncSession, row: SmsMessage) -> None:
    """Mirror the message's status on its timeline row (one UPDATE; the data keeps the error)."""
    values: dict[str, Any] = {"status": row.status, "ended_at": row.final_at}
    if row.error:
        interaction = await update_interaction(
            session, "sms", row.reference, data={"gateway_id": row.gateway_id, "error": row.error}
        )
        if interaction is None:
            return
    await session.execute(
        update(Interaction)
        .where(Interaction.channel == "sms", Interaction.external_id == row.reference)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def _drain_pending(session: AsyncSession, row: SmsMessage) -> int:
    """Apply (and delete) reports that arrived before this message was known; returns how many."""
    keys = [and_(SmsPendingReport.key_kind == "ref", SmsPendingReport.key == row.reference)]
    if row.gateway_id:
        keys.append(
            and_(SmsPendingReport.key_kind == "gid", SmsPendingReport.key == row.gateway_id)
        )
    taken = await session.execute(
        delete(SmsPendingReport)
        .where(SmsPendingReport.gateway == row.gateway, or_(*keys))
        .returning(
            SmsPendingReport.id,
            SmsPendingReport.status,
            SmsPendingReport.detail,
            SmsPendingReport.occurred_at,
        )
    )
    reports = sorted(taken.all(), key=lambda r: (r.occurred_at, r.id))
    for report in reports:
        apply_status(row, report.status, report.occurred_at, report.detail)
    return len(reports)


async def send_sms(
    hub: Hub,
    *,
    text: str,
    to: str | None = None,
    customer_id: int | None = None,
    marketing: bool = False,
    reference: str | None = None,
    sender: str | None = None,
    user_id: int | None = None,
    source: str = "",
    gateway: SmsGateway | None = None,
) -> dict[str, Any]:
    """Send one SMS and log it against its customer; returns the message (sms_to_dict).

    A `reference` given twice sends once: a message already handed to the gateway is returned
    as it is, one that failed or never left is sent again. Marketing to a number that said STOP
    raises SmsSuppressed; gateway errors (RetryableError, PermanentError) are raised after the
    message is marked failed."""
    gw: SmsGateway | None = gateway or hub.part("sms")
    if gw is None:
        raise SmsNotConfigured("no SMS gateway is configured ([sms] gateway)")
    check_text(text)
    info = analyze(text, hub.config.sms.cost_per_segment)
    ref = reference or new_reference()
    if len(ref) > 64:
        raise ValidationError("reference is longer than 64 characters", field="reference")
    sender = sender or hub.config.sms.sender
    now = utcnow()
    async with hub.sessions() as session, session.begin():
        e164, cid = await resolve_recipient(session, hub.region, to, customer_id)
        if marketing and await is_suppressed(session, "sms", e164):
            raise SmsSuppressed(f"{e164} opted out of marketing SMS (STOP)", field="to")
        new_id = await session.scalar(
            insert_for(session)(SmsMessage)
            .values(
                reference=ref,
                direction="out",
                gateway=gw.name,
                customer_id=cid,
                user_id=user_id,
                to_number=e164,
                from_number=sender,
                text=text,
                encoding=info.encoding,
                segments=info.segments,
                cost=info.cost,
                marketing=marketing,
                source=source[:64],
                status="queued",
                history=[_history_entry("queued", now)],
                error="",
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(SmsMessage.id)
        )
        created_at = now
        if new_id is None:
            # The reference is known: a retry (campaign resume, client re-post).
            row = await _lock(session, SmsMessage.reference == ref)
            assert row is not None
            if row.direction != "out":
                raise ValidationError(f"reference {ref} is an inbound message", field="reference")
            if row.status not in ("queued", "failed"):
                return sms_to_dict(row)
            # It failed or never left: back to queued, same row, and send again.
            row.status, row.error, row.final_at = "queued", "", None
            row.text, row.to_number, row.customer_id = text, e164, cid
            row.history = [*row.history, _history_entry("queued", now, "retry")]
            new_id, created_at = row.id, row.created_at
        await record_interaction(
            session,
            channel="sms",
            external_id=ref,
            customer_id=cid,
            direction="outbound",
            status="queued",
            occurred_at=created_at,
            user_id=user_id,
            summary=text[:500],
            data={
                "to": e164,
                "from": sender,
                "gateway": gw.name,
                "encoding": info.encoding,
                "segments": info.segments,
                "cost": info.cost,
            },
        )
        row_id = int(new_id)

    try:
        gateway_id = await gw.send(OutgoingSms(to=e164, text=text, reference=ref, sender=sender))
    except CommhubError as err:
        await _mark_failed(hub, row_id, f"{type(err).__name__}: {err}")
        raise
    except Exception as err:
        await _mark_failed(hub, row_id, f"unexpected: {type(err).__name__}: {err}")
        raise

    async with hub.sessions() as session, session.begin():
        locked = await _lock(session, SmsMessage.id == row_id)
        assert locked is not None
        locked.gateway_id = gateway_id
        sent_at = utcnow()
        apply_status(locked, "sent", sent_at)
        if locked.sent_at is None:
            locked.sent_at = sent_at
        await _drain_pending(session, locked)
        await _sync_timeline(session, locked)
        result = sms_to_dict(locked)
    if user_id is not None:
        await hub.bus.publish(f"user:{user_id}", _status_event(result))
    return result


async def _mark_failed(hub: Hub, row_id: int, error: str) -> None:
    async with hub.sessions() as session, session.begin():
        row = await _lock(session, SmsMessage.id == row_id)
        if row is None:
            return
        row.error = error[:500]
        if apply_status(row, "failed", utcnow(), error):
            await _sync_timeline(session, row)


def _status_event(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "sms.status",
        "id": message["id"],
        "reference": message["reference"],
        "customer_id": message["customer_id"],
        "status": message["status"],
    }


async def apply_report(hub: Hub, report: DeliveryReport) -> str:
    """Apply one delivery report: "applied", "duplicate" (no change) or "pending" (unknown id yet)."""
    if report.status not in REPORT_STATUSES:
        raise ValidationError(f"unknown delivery status {report.status!r}", field="status")
    if report.gateway_id:
        kind, key = "gid", report.gateway_id
        where = and_(SmsMessage.gateway == report.gateway, SmsMessage.gateway_id == key)
    elif report.reference:
        kind, key = "ref", report.reference
        where = and_(SmsMessage.reference == key, SmsMessage.direction == "out")
    else:
        raise ValidationError("a delivery report needs the gateway's id or our reference")
    if len(key) > 128:
        raise ValidationError("message id is longer than 128 characters", field="id")
    at = report.occurred_at or utcnow()
    async with hub.sessions() as session:
        # Statuses only move forward, so a report that changes nothing against what we read now
        # changes nothing later either: most duplicates (Kannel's "8" after our own "sent") need
        # no write transaction.
        seen = (await session.execute(select(SmsMessage.status).where(where).limit(1))).first()
    if seen is not None and _is_no_op(seen.status, report.status):
        return "duplicate"
    async with hub.sessions() as session, session.begin():
        row = await _lock(session, where)
        if row is None:
            session.add(
                SmsPendingReport(
                    gateway=report.gateway,
                    key_kind=kind,
                    key=key,
                    status=report.status,
                    detail=report.detail[:500],
                    occurred_at=at,
                    raw=dict(report.raw),
                    created_at=utcnow(),
                )
            )
            outcome = "pending"
            message = None
        elif apply_status(row, report.status, at, report.detail):
            await _sync_timeline(session, row)
            outcome = "applied"
            message = sms_to_dict(row)
        else:
            outcome = "duplicate"
            message = None
    if outcome == "pending":
        # The send may have been recorded between our look-up and our commit: look once more
        # now that the pending row is visible to it (see _drain_pending on the send side).
        async with hub.sessions() as session, session.begin():
            row = await _lock(session, where)
            if row is not None and await _drain_pending(session, row):
                await _sync_timeline(session, row)
                outcome = "applied"
                message = sms_to_dict(row)
        if outcome == "pending":
            log.info(
                "sms: delivery report for unknown %s %s=%s (%s) kept pending",
                report.gateway,
                kind,
                key,
                report.status,
            )
    if message is not None and message["user_id"] is not None:
        await hub.bus.publish(f"user:{message['user_id']}", _status_event(message))
    return outcome


async def expire_stale(hub: Hub, *, older_than: timedelta | None = None) -> int:
    """Mark messages sent long ago and never reported on as expired; returns how many."""
    age = timedelta(hours=hub.config.sms.expire_hours) if older_than is None else older_than
    cutoff = utcnow() - age
    count = 0
    async with hub.sessions() as session, session.begin():
        ids = (
            await session.scalars(
                select(SmsMessage.id).where(
                    SmsMessage.direction == "out",
                    SmsMessage.status.in_(("queued", "sent")),
                    SmsMessage.created_at < cutoff,
                )
            )
        ).all()
        for row_id in ids:
            row = await _lock(session, SmsMessage.id == row_id)
            if row is not None and apply_status(row, "expired", utcnow(), "no delivery report"):
                await _sync_timeline(session, row)
                count += 1
    return count


async def purge_pending_reports(hub: Hub, *, older_than: timedelta = timedelta(days=2)) -> int:
    """Drop reports that never found their message (unknown ids); returns how many, logged."""
    cutoff = utcnow() - older_than
    async with hub.sessions() as session, session.begin():
        gone = await session.execute(
            delete(SmsPendingReport)
            .where(SmsPendingReport.created_at < cutoff)
            .returning(SmsPendingReport.gateway, SmsPendingReport.key)
        )
        rows = gone.all()
    for gateway, key in rows:
        log.warning("sms: dropped delivery report for unknown %s id %s", gateway, key)
    return len(rows)


def keyword_of(text: str, stop_words: Iterable[str], start_words: Iterable[str]) -> Keyword | None:
    """Classify a message as "stop" or "start" when it is exactly one configured word (any case)."""
    word = " ".join(text.strip().strip(".!?;,").split()).upper()
    if not word:
        return None
    if word in {w.strip().upper() for w in stop_words}:
        return "stop"
    if word in {w.strip().upper() for w in start_words}:
        return "start"
    return None


def inbound_reference(sms: InboundSms) -> str:
    """Our key for an inbound SMS: the gateway's id, or a digest when it gives none."""
    if sms.gateway_id:
        ref = f"{sms.gateway}:{sms.gateway_id}"
        if len(ref) <= 64:
            return ref
    when = sms.received_at.isoformat() if sms.received_at else ""
    digest = hashlib.sha256(
        "\x1f".join((sms.sender, sms.recipient, sms.text, when, sms.gateway_id or "")).encode()
    ).hexdigest()
    return f"{sms.gateway}:{digest[:40]}"


async def receive_sms(hub: Hub, sms: InboundSms) -> dict[str, Any]:
    """Log an inbound SMS on its customer's timeline (or a new lead); STOP/START change consent.

    Idempotent per gateway id: a second delivery of the same message changes nothing and sends
    no second confirmation. Returns {"message", "duplicate", "keyword", "lead_created"}."""
    cfg = hub.config.sms
    ref = inbound_reference(sms)
    try:
        e164: str | None = normalize_phone(sms.sender, hub.region)
    except ValidationError:
        e164 = None  # a short code or an alphanumeric sender: logged, never matched
    info = analyze(sms.text, 0.0)
    at = sms.received_at or utcnow()
    keyword = keyword_of(sms.text, cfg.stop_words, cfg.start_words) if e164 else None
    lead_created = False
    async with hub.sessions() as session, session.begin():
        new_id = await session.scalar(
            insert_for(session)(SmsMessage)
            .values(
                reference=ref,
                direction="in",
                gateway=sms.gateway,
                gateway_id=sms.gateway_id,
                to_number=sms.recipient[:32],
                from_number=(e164 or sms.sender)[:32],
                text=sms.text,
                encoding=info.encoding,
                segments=info.segments,
                cost=0.0,
                marketing=False,
                source="inbound",
                status="received",
                history=[_history_entry("received", at)],
                error="",
                created_at=at,
                updated_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(SmsMessage.id)
        )
        row = await session.scalar(select(SmsMessage).where(SmsMessage.reference == ref))
        assert row is not None
        if new_id is None:
            return {
                "message": sms_to_dict(row),
                "duplicate": True,
                "keyword": keyword,
                "lead_created": False,
            }
        customer = await find_by_phone(session, e164) if e164 else None
        if customer is None and e164 and cfg.create_leads:
            customer = await create_customer(
                session, {"name": e164, "phones": [e164], "source": "sms"}, hub.region
            )
            lead_created = True
        row.customer_id = customer.id if customer else None
        owner_id = customer.owner_id if customer else None
        await record_interaction(
            session,
            channel="sms",
            external_id=ref,
            customer_id=row.customer_id,
            direction="inbound",
            status="received",
            occurred_at=at,
            summary=sms.text[:500],
            data={
                "from": row.from_number,
                "to": row.to_number,
                "gateway": sms.gateway,
                "keyword": keyword,
            },
        )
        if keyword == "stop" and e164:
            await suppress(session, "sms", e164, "stop", detail=f"SMS {ref}")
        elif keyword == "start" and e164:
            await unsuppress(session, "sms", e164)
        message = sms_to_dict(row)
    topic = f"user:{owner_id}" if owner_id else "role:agent"
    await hub.bus.publish(
        topic,
        {
            "type": "sms.received",
            "id": message["id"],
            "customer_id": message["customer_id"],
            "from": message["from"],
            "text": sms.text[:500],
            "keyword": keyword,
        },
    )
    if keyword and e164:
        await _confirm(hub, keyword, e164, message)
    return {
        "message": message,
        "duplicate": False,
        "keyword": keyword,
        "lead_created": lead_created,
    }


async def _confirm(hub: Hub, keyword: Keyword, e164: str, inbound: dict[str, Any]) -> None:
    """Answer STOP/START; a failure is logged, never raised (the opt-out itself is already kept)."""
    text = hub.config.sms.stop_reply if keyword == "stop" else hub.config.sms.start_reply
    if not text or hub.part("sms") is None:
        return
    try:
        await send_sms(
            hub,
            to=e164,
            text=text,
            customer_id=inbound["customer_id"],
            reference=f"re-{hashlib.sha256(inbound['reference'].encode()).hexdigest()[:40]}",
            source=f"{keyword}-reply",
        )
    except CommhubError as err:
        log.warning("sms: could not confirm %s to %s: %s", keyword.upper(), e164, err)


class SmsEvents:
    """The SmsEventSink a gateway with its own connection (SMPP) reports into."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def on_inbound(self, sms: InboundSms) -> None:
        """A handset sent us a message."""
        await receive_sms(self.hub, sms)

    async def on_report(self, report: DeliveryReport) -> None:
        """A delivery report for one of our messages."""
        await apply_report(self.hub, report)
