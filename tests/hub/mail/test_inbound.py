"""hub.mail.inbound on SQLite and PostgreSQL: matching, threading, leads, bounces, positions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bus import LocalBus
from hub.config import DatabaseConfig
from hub.consent import is_suppressed
from hub.customers import create_customer
from hub.db import create_engine, session_factory
from hub.errors import RetryableError
from hub.mail import inbound
from hub.mail.inbound import InboundMail
from hub.mail.ports import MailboxState, MailRef
from hub.models.base import utcnow
from hub.models.customers import Customer
from hub.models.interactions import Interaction
from hub.models.mail import EmailMessage, ImapState
from hub.timeline import record_interaction
from tests.conftest import free_port

from .test_parse import fixture

ACCOUNT = "imap://support@example.test@127.0.0.1:10143"


def ref(uid: int, mailbox: str = "INBOX", validity: int = 7) -> MailRef:
    """Where a test message 'was read'."""
    return MailRef(ACCOUNT, mailbox, validity, uid, None)


@pytest.fixture
def sink(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> InboundMail:
    """The hub's sink on the parametrised database."""
    return InboundMail(sessions, attachments_dir=tmp_path / "att", region="DE")


async def add_customer(sessions: async_sessionmaker[AsyncSession], name: str, email: str) -> int:
    """A customer with one email address."""
    async with sessions() as session, session.begin():
        return (await create_customer(session, {"name": name, "emails": [email]}, "DE")).id


async def add_outbound(
    sessions: async_sessionmaker[AsyncSession], message_id: str, to: str, customer_id: int | None
) -> int:
    """An outbound message as hub.mail.outbound stores it, with its timeline row."""
    async with sessions() as session, session.begin():
        row = EmailMessage(
            message_id=message_id,
            direction="outbound",
            status="sent",
            customer_id=customer_id,
            thread_key=message_id,
            refs=[],
            subject="Your quote",
            from_address="support@example.test",
            to_addresses=[to],
            cc_addresses=[],
            attachments=[],
            problems=[],
            occurred_at=utcnow(),
            created_at=utcnow(),
        )
        session.add(row)
        await session.flush()
        interaction, _ = await record_interaction(
            session,
            channel="email",
            external_id=message_id,
            customer_id=customer_id,
            direction="outbound",
            status="sent",
            summary="Your quote",
        )
        row.interaction_id = interaction.id
        return row.id


async def count(sessions: async_sessionmaker[AsyncSession], model: Any) -> int:
    """Rows in a table."""
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_customer_mail_logged_once_with_link(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail
) -> None:
    customer_id = await add_customer(sessions, "Anna Schmidt", "anna.schmidt@kunde.example")
    events: list[tuple[str, dict[str, Any]]] = []
    bus = LocalBus()
    bus.subscribe(lambda topic, event: events.append((topic, event)))
    sink.bus = bus
    await sink.deliver(ref(11), fixture("plain.eml"))
    await sink.deliver(ref(11), fixture("plain.eml"))  # a repeat (e.g. after a crash) is ignored
    async with sessions() as session:
        [row] = (await session.scalars(select(EmailMessage))).all()
        assert (row.customer_id, row.direction, row.status) == (customer_id, "inbound", "received")
        assert (row.mailbox, row.uidvalidity, row.uid) == ("INBOX", 7, 11)
        interaction = await session.get(Interaction, row.interaction_id)
        assert interaction is not None
        assert (interaction.channel, interaction.external_id) == ("email", row.message_id)
        assert interaction.customer_id == customer_id
        assert interaction.summary == "Question about my order"
        assert interaction.data["url"] == f"/api/v1/messages/{row.id}"
        assert interaction.data["snippet"].startswith("Hello, my order 4711")
        assert interaction.occurred_at.isoformat() == "2024-05-14T07:11:58+00:00"
        state = await session.get(ImapState, (ACCOUNT, "INBOX"))
        assert state is not None and (state.uidvalidity, state.last_uid) == (7, 11)
        customer = await session.get(Customer, customer_id)
        assert customer is not None and customer.last_contacted_at is not None
    assert [e[1]["type"] for e in events] == ["email.received"]
    assert events[0][0] == "role:agent"
    assert await sink.load_state(ACCOUNT, "INBOX") == MailboxState(7, 11)


async def test_unknown_sender_creates_a_lead_only_when_configured(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail
) -> None:
    await sink.deliver(ref(1), fixture("html_only.eml"))
    async with sessions() as session:
        row = await session.scalar(select(EmailMessage))
        assert row is not None and row.customer_id is None
    assert await count(sessions, Customer) == 0
    sink.create_leads = True
    await sink.deliver(ref(2), fixture("multi_charset.eml"))
    async with sessions() as session:
        lead = await session.scalar(select(Customer))
        assert lead is not None
        assert (lead.name, lead.source) == ("山田 太郎", "email")
        assert [c.value for c in lead.contacts] == ["taro.yamada@shop.example.jp"]
        row = await session.scalar(
            select(EmailMessage).where(
                EmailMessage.message_id == "<multi-charset-0001@shop.example.jp>"
            )
        )
        assert row is not None and row.customer_id == lead.id
        assert row.subject == "Grüße aus Köln / 日本語の件名 / Привет"


async def test_reply_is_threaded_and_linked_through_the_thread(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail
) -> None:
    customer_id = await add_customer(sessions, "Gina", "gina@customer.example")
    await add_outbound(sessions, "<orig-1@example.test>", "gina@customer.example", customer_id)
    # Gina answers from her phone's other address: the thread still finds her.
    reply = (
        b"From: Gina Mobile <gina.phone@other.example>\r\nTo: support@example.test\r\n"
        b"Subject: Re: Your quote\r\nMessage-ID: <reply-1@other.example>\r\n"
        b"In-Reply-To: <orig-1@example.test>\r\nReferences: <orig-1@example.test>\r\n\r\n"
        b"Sounds good.\r\n"
    )
    await sink.deliver(ref(5), reply)
    follow_up = (
        b"From: gina@customer.example\r\nTo: support@example.test\r\nSubject: Re: Your quote\r\n"
        b"Message-ID: <reply-2@customer.example>\r\n"
        b"References: <orig-1@example.test> <unknown-middle@x.example>\r\n\r\nOne more thing.\r\n"
    )
    await sink.deliver(ref(6), follow_up)
    async with sessions() as session:
        rows = {
            r.message_id: r
            for r in await session.scalars(
                select(EmailMessage).where(EmailMessage.direction == "inbound")
            )
        }
    assert rows["<reply-1@other.example>"].customer_id == customer_id
    assert rows["<reply-1@other.example>"].thread_key == "<orig-1@example.test>"
    assert rows["<reply-2@customer.example>"].thread_key == "<orig-1@example.test>"
    assert rows["<reply-2@customer.example>"].in_reply_to is None


async def test_dsn_marks_the_original_bounced_and_suppresses(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail, caplog: pytest.LogCaptureFixture
) -> None:
    customer_id = await add_customer(sessions, "Gone", "gone@customer.example")
    original_id = await add_outbound(
        sessions, "<QUOTE-ORIGINAL-ID@example.test>", "gone@customer.example", customer_id
    )
    caplog.set_level(logging.INFO, logger="hub.mail.inbound")
    await sink.deliver(ref(9), fixture("dsn_bounce.eml"))
    async with sessions() as session:
        original = await session.get(EmailMessage, original_id)
        assert original is not None and original.status == "bounced"
        assert "5.1.1" in original.detail
        timeline_row = await session.get(Interaction, original.interaction_id)
        assert timeline_row is not None and timeline_row.status == "bounced"
        assert await is_suppressed(session, "email", "gone@customer.example")
        dsn = await session.scalar(select(EmailMessage).where(EmailMessage.status == "dsn"))
        assert dsn is not None and dsn.interaction_id is None and dsn.customer_id is None
        # The bounce is not customer mail: only the original's row is in the timeline.
        assert await session.scalar(select(func.count()).select_from(Interaction)) == 1
    assert "bounce report INBOX UID 9 for <QUOTE-ORIGINAL-ID@example.test>" in caplog.text
    assert "suppressed gone@customer.example" in caplog.text


async def test_bounce_of_unknown_message_still_suppresses(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail
) -> None:
    await sink.deliver(ref(1), fixture("dsn_bounce.eml"))
    async with sessions() as session:
        assert await is_suppressed(session, "email", "gone@customer.example")
    assert await count(sessions, Interaction) == 0


async def test_hostile_and_malformed_mail_is_stored(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.mail.inbound")
    await sink.deliver(ref(1), fixture("hostile.eml"))
    await sink.deliver(ref(2), fixture("malformed.eml"))
    await sink.deliver(ref(3), fixture("attachments.eml"))
    async with sessions() as session:
        rows = {r.uid: r for r in await session.scalars(select(EmailMessage))}
    assert set(rows) == {1, 2, 3}
    assert "\x00" not in rows[1].body_text  # PostgreSQL refuses NUL in text
    assert rows[2].message_id.endswith("@commhub.invalid>") and rows[2].problems
    assert [a["name"] for a in rows[3].attachments] == [
        "logo.png",
        "Rechnung März.pdf",
        "orders.csv",
    ]
    assert all(Path(a["path"]).is_file() for a in rows[3].attachments)
    assert "incoming mail INBOX UID 2" in caplog.text and "had problems" in caplog.text
    assert await sink.load_state(ACCOUNT, "INBOX") == MailboxState(7, 3)


async def test_a_message_that_cannot_be_stored_is_rejected_and_skipped(
    sessions: async_sessionmaker[AsyncSession],
    sink: InboundMail,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug met a message")

    monkeypatch.setattr(inbound, "record_inbound", broken)
    await sink.deliver(ref(4), fixture("plain.eml"))
    assert "rejected incoming mail INBOX UID 4" in caplog.text
    assert await sink.load_state(ACCOUNT, "INBOX") == MailboxState(7, 4)
    assert await count(sessions, EmailMessage) == 0


async def test_database_down_is_retryable(tmp_path: Path) -> None:
    engine = create_engine(
        DatabaseConfig(url=f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    )
    try:
        down = InboundMail(session_factory(engine), attachments_dir=tmp_path)
        with pytest.raises(RetryableError, match="database unavailable"):
            await down.deliver(ref(1), fixture("plain.eml"))
    finally:
        await engine.dispose()


async def test_state_is_replaced_on_new_uidvalidity(
    sessions: async_sessionmaker[AsyncSession], sink: InboundMail
) -> None:
    assert await sink.load_state(ACCOUNT, "Support") is None
    await sink.save_state(ACCOUNT, "Support", MailboxState(1, 40))
    await sink.save_state(ACCOUNT, "Support", MailboxState(2, 0))
    assert await sink.load_state(ACCOUNT, "Support") == MailboxState(2, 0)
    # UIDs are unsigned 32-bit: they must fit (PostgreSQL INTEGER would not).
    await sink.save_state(ACCOUNT, "Support", MailboxState(4_294_967_295, 4_294_967_294))
    assert await sink.load_state(ACCOUNT, "Support") == MailboxState(4_294_967_295, 4_294_967_294)
