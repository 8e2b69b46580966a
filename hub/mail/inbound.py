"""Incoming mail into the hub: the IMAP watcher's sink, customer and thread matching, bounces.

- A message is linked to the customer owning its sender address; when the sender is unknown but
  the message answers one we know (In-Reply-To/References), to that thread's customer (people
  reply from a second address). Otherwise, with [imap] create_leads, a lead is created.
- Its thread is the known message it answers, else the first References entry, else itself.
- A bounce (DSN or a recognisable plain bounce) is not customer mail: the original is marked
  bounced, its timeline row too, and each permanently failed address is suppressed.
- Every customer message gets one timeline row (channel "email", external_id = Message-ID or the
  content-hash key) with subject, snippet and the URL of the full body.
- The watcher's position (UIDVALIDITY, last UID) is stored in the same transaction, so a restart
  neither loses nor repeats a message. A message that cannot be stored for a reason other than
  the database being unreachable is logged as rejected and skipped, not retried forever.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bus import Bus
from hub.consent import suppress
from hub.customers import create_customer, find_by_email
from hub.db import insert_for
from hub.errors import RetryableError, ValidationError
from hub.mail.bounce import BounceReport
from hub.mail.parse import Limits, ParsedEmail, parse_email
from hub.mail.ports import MailboxState, MailRef
from hub.models.base import utcnow
from hub.models.customers import Customer
from hub.models.mail import EmailMessage, ImapState
from hub.phone import normalize_email
from hub.timeline import record_interaction, update_interaction

_LOG = logging.getLogger(__name__)


def message_url(email_id: int) -> str:
    """Where the full body of a stored message is served (the timeline's link)."""
    return f"/api/v1/messages/{email_id}"


@dataclass
class InboundResult:
    """What became of one incoming message."""

    kind: str  # received | duplicate | bounce
    email: EmailMessage | None = None
    customer_id: int | None = None
    lead_created: bool = False
    bounced_original: EmailMessage | None = None
    suppressed: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


async def find_message(session: AsyncSession, message_id: str) -> EmailMessage | None:
    """A stored message by its Message-ID key."""
    return await session.scalar(select(EmailMessage).where(EmailMessage.message_id == message_id))


async def _thread_parent(session: AsyncSession, parsed: ParsedEmail) -> EmailMessage | None:
    """The known message this one answers: In-Reply-To first, else the latest known reference."""
    wanted = [i for i in ([parsed.in_reply_to] if parsed.in_reply_to else []) + parsed.references]
    if not wanted:
        return None
    rows = {
        r.message_id: r
        for r in await session.scalars(
            select(EmailMessage).where(EmailMessage.message_id.in_(set(wanted)))
        )
    }
    if parsed.in_reply_to and parsed.in_reply_to in rows:
        return rows[parsed.in_reply_to]
    for ref in reversed(parsed.references):
        if ref in rows:
            return rows[ref]
    return None


async def _lead(
    session: AsyncSession, parsed: ParsedEmail, region: str
) -> tuple[Customer | None, bool]:
    """Find or create the lead for an unknown sender (safe against a concurrent creation)."""
    try:
        address = normalize_email(parsed.from_address)
    except ValidationError:
        return None, False
    try:
        async with session.begin_nested():
            customer = await create_customer(
                session,
                {
                    "name": (parsed.from_name or address)[:200],
                    "emails": [address],
                    "source": "email",
                },
                region,
            )
        return customer, True
    except (IntegrityError, ValidationError):
        # Someone else created it a moment ago (or the address is taken): use theirs.
        return await find_by_email(session, address), False


async def record_inbound(
    session: AsyncSession,
    parsed: ParsedEmail,
    *,
    ref: MailRef | None = None,
    region: str = "DE",
    create_leads: bool = False,
) -> InboundResult:
    """Store one parsed message (idempotent by its Message-ID key) and log it or its bounce."""
    if await find_message(session, parsed.message_id) is not None:
        return InboundResult("duplicate")
    if parsed.bounce is not None:
        return await _record_bounce(session, parsed, parsed.bounce, ref)

    customer: Customer | None = None
    if parsed.from_address:
        customer = await find_by_email(session, parsed.from_address)
    parent = await _thread_parent(session, parsed)
    customer_id = customer.id if customer else (parent.customer_id if parent else None)
    lead_created = False
    if customer_id is None and create_leads and not parsed.auto_submitted.startswith("auto-"):
        lead, lead_created = await _lead(session, parsed, region)
        customer_id = lead.id if lead else None
    thread_key = (
        parent.thread_key
        if parent
        else (parsed.references[0] if parsed.references else parsed.message_id)
    )
    when = parsed.date or utcnow()
    row = _row(parsed, ref, direction="inbound", status="received", when=when)
    row.customer_id = customer_id
    row.thread_key = thread_key
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return InboundResult("duplicate")  # another process stored it first
    interaction, _ = await record_interaction(
        session,
        channel="email",
        external_id=parsed.message_id,
        customer_id=customer_id,
        direction="inbound",
        status="received",
        occurred_at=when,
        summary=parsed.subject or "(no subject)",
        data=timeline_data(row),
    )
    row.interaction_id = interaction.id
    result = InboundResult("received", row, customer_id, lead_created)
    event = {
        "type": "email.received",
        "email_id": row.id,
        "message_id": row.message_id,
        "in_reply_to": row.in_reply_to,
        "thread_key": row.thread_key,
        "customer_id": customer_id,
        "from": row.from_address,
        "subject": row.subject,
        "snippet": row.snippet,
        "url": message_url(row.id),
    }
    result.events.append(("role:agent", event))
    return result


def timeline_data(row: EmailMessage) -> dict[str, Any]:
    """The timeline row's data: enough for the card, plus the link to the full body."""
    return {
        "email_id": row.id,
        "subject": row.subject,
        "snippet": row.snippet,
        "from": row.from_address,
        "to": row.to_addresses,
        "thread_key": row.thread_key,
        "attachments": len(row.attachments),
        "url": message_url(row.id),
    }


def _row(
    parsed: ParsedEmail, ref: MailRef | None, *, direction: str, status: str, when: Any
) -> EmailMessage:
    return EmailMessage(
        message_id=parsed.message_id,
        direction=direction,
        status=status,
        thread_key=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        refs=parsed.references,
        subject=parsed.subject[:500],
        from_address=parsed.from_address[:254],
        from_name=parsed.from_name[:200],
        to_addresses=parsed.to[:50],
        cc_addresses=parsed.cc[:50],
        body_text=parsed.text,
        body_html=parsed.html,
        snippet=parsed.snippet[:300],
        attachments=[a.to_dict() for a in parsed.attachments],
        problems=parsed.problems[:50],
        mailbox=ref.mailbox if ref else None,
        uidvalidity=ref.uidvalidity if ref else None,
        uid=ref.uid if ref else None,
        detail="",
        occurred_at=when,
        created_at=utcnow(),
    )


async def _record_bounce(
    session: AsyncSession, parsed: ParsedEmail, report: BounceReport, ref: MailRef | None
) -> InboundResult:
    original = (
        await find_message(session, report.original_message_id)
        if report.original_message_id
        else None
    )
    row = _row(parsed, ref, direction="inbound", status="dsn", when=parsed.date or utcnow())
    row.detail = report.summary[:500]
    if original is not None:
        row.thread_key = original.thread_key
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return InboundResult("duplicate")
    result = InboundResult("bounce", row, original.customer_id if original else None)
    result.bounced_original = original
    if report.kind == "dsn":
        failed = [r.address for r in report.permanent_recipients]
    elif original is not None and report.final:
        # A plain-text bounce says little we can trust; the address we sent to is certain.
        failed = list(original.to_addresses[:1])
    else:
        failed = []
    if original is not None and report.final:
        original.status = "bounced"
        original.detail = report.summary[:500]
        await update_interaction(
            session,
            "email",
            original.message_id,
            status="bounced",
            data={"bounce": report.summary[:300]},
        )
    for address in failed:
        try:
            value = normalize_email(address)
        except ValidationError:
            continue
        await suppress(session, "email", value, "bounced", detail=report.summary)
        result.suppressed.append(value)
    result.events.append(
        (
            "role:marketer",
            {
                "type": "email.bounced",
                "message_id": report.original_message_id,
                "email_id": original.id if original else None,
                "customer_id": original.customer_id if original else None,
                "suppressed": result.suppressed,
            },
        )
    )
    return result


def _is_unavailable(err: BaseException) -> bool:
    """True when the database itself is the problem (retry later), not this message."""
    if isinstance(err, (OperationalError, InterfaceError, OSError, ConnectionError)):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


class InboundMail:
    """hub.mail.ports.InboundSink backed by the database: what the IMAP watcher feeds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        attachments_dir: Path | str,
        region: str = "DE",
        create_leads: bool = False,
        bus: Bus | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.sessions = sessions
        self.attachments_dir = Path(attachments_dir)
        self.region = region
        self.create_leads = create_leads
        self.bus = bus
        self.limits = limits or Limits()

    async def load_state(self, account: str, mailbox: str) -> MailboxState | None:
        """The stored (UIDVALIDITY, last UID) of a mailbox."""
        async with self.sessions() as session:
            row = await session.get(ImapState, (account, mailbox))
            return None if row is None else MailboxState(row.uidvalidity, row.last_uid)

    async def save_state(self, account: str, mailbox: str, state: MailboxState) -> None:
        """Store a state outright (first watch, new UIDVALIDITY)."""
        async with self.sessions() as session, session.begin():
            await _put_state(session, account, mailbox, state)

    async def deliver(self, ref: MailRef, raw: bytes, *, headers_only: bool = False) -> None:
        """Parse, store and log one message and advance the mailbox position, in one transaction."""
        where = f"{ref.mailbox} UID {ref.uid}"
        try:
            parsed = await asyncio.to_thread(
                parse_email,
                raw,
                attachments_dir=self.attachments_dir,
                limits=self.limits,
                headers_only=headers_only,
            )
        except OSError as err:
            # Disk full or attachments_dir not writable: retrying later can work.
            raise RetryableError(f"cannot save attachments of {where}: {err}") from err
        except Exception as err:  # the parser is defensive; this is the last guard
            _LOG.error("rejected incoming mail %s: cannot parse it: %r", where, err)
            await self.save_position(ref)
            return
        try:
            async with self.sessions() as session, session.begin():
                result = await record_inbound(
                    session,
                    parsed,
                    ref=ref,
                    region=self.region,
                    create_leads=self.create_leads,
                )
                await _put_state(
                    session, ref.account, ref.mailbox, MailboxState(ref.uidvalidity, ref.uid)
                )
        except Exception as err:
            if _is_unavailable(err):
                raise RetryableError(f"database unavailable while storing {where}: {err}") from err
            _LOG.exception(
                "rejected incoming mail %s (%s from %s): cannot store it",
                where,
                parsed.message_id,
                parsed.from_address or "?",
            )
            await self.save_position(ref)
            return
        self._log(where, parsed, result)
        if self.bus is not None:
            for topic, event in result.events:
                await self.bus.publish(topic, event)

    async def save_position(self, ref: MailRef) -> None:
        """Move past one message without storing it (it was rejected)."""
        async with self.sessions() as session, session.begin():
            await _put_state(
                session, ref.account, ref.mailbox, MailboxState(ref.uidvalidity, ref.uid)
            )

    @staticmethod
    def _log(where: str, parsed: ParsedEmail, result: InboundResult) -> None:
        if parsed.problems:
            _LOG.warning(
                "incoming mail %s (%s) had problems: %s",
                where,
                parsed.message_id,
                "; ".join(parsed.problems[:10]),
            )
        if result.kind == "duplicate":
            _LOG.info("incoming mail %s: %s already stored, skipped", where, parsed.message_id)
        elif result.kind == "bounce":
            original = result.bounced_original
            _LOG.info(
                "bounce report %s for %s: %s; suppressed %s",
                where,
                original.message_id if original else "an unknown message",
                parsed.bounce.summary if parsed.bounce else "",
                ", ".join(result.suppressed) or "nobody",
            )
        else:
            _LOG.info(
                "incoming mail %s from %s -> customer %s%s, %d attachment(s)",
                where,
                parsed.from_address or "?",
                result.customer_id,
                " (new lead)" if result.lead_created else "",
                len(parsed.attachments),
            )


async def _put_state(
    session: AsyncSession, account: str, mailbox: str, state: MailboxState
) -> None:
    """Upsert one mailbox position."""
    values = {
        "account": account,
        "mailbox": mailbox,
        "uidvalidity": state.uidvalidity,
        "last_uid": state.last_uid,
        "updated_at": utcnow(),
    }
    stmt = insert_for(session)(ImapState).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account", "mailbox"],
        set_={
            "uidvalidity": stmt.excluded.uidvalidity,
            "last_uid": stmt.excluded.last_uid,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await session.execute(stmt)
