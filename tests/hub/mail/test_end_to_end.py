"""Email end to end on the real peers: commhub -> Postfix -> Dovecot -> IMAP watcher -> timeline,
and every fixture dropped into a real mailbox logged (or rejected) as it should be."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiohttp.test_utils import TestClient
from aioimaplib import aioimaplib
from sqlalchemy import select

from connectors.imap import ImapWatcher
from connectors.smtp import SmtpSender
from hub.config import SmtpConfig
from hub.consent import is_suppressed
from hub.mail.inbound import InboundMail
from hub.models.interactions import Interaction
from hub.models.mail import EmailMessage
from hub.services import Hub
from tests.conftest import add_user, bearer, require_peer, until
from tests.connectors.imap.conftest import Admin, settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mail"
POSTFIX = 10525


async def imap_has(user: str, message_id: str) -> bool:
    """True once `user`'s INBOX holds a message with that Message-ID (read over IMAP)."""
    client = aioimaplib.IMAP4(host="127.0.0.1", port=10143, timeout=10)
    try:
        await client.wait_hello_from_server()
        await client.login(user, "secret")
        await client.select("INBOX")
        found = await client.uid_search("HEADER", "Message-ID", f'"{message_id}"', charset=None)
        # aioimaplib strips "SEARCH": the first line is the list of UIDs, maybe empty.
        return found.result == "OK" and bool(found.lines[0].split())
    finally:
        await client.logout()
        if client.protocol.transport is not None:
            client.protocol.transport.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    """Poll an async check until it holds (bounded wait, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


async def _found(row: Awaitable[Any]) -> bool:
    return (await row) is not None


async def test_send_arrive_reply_thread_and_refusal(
    client: TestClient[Any, Any], hub: Hub, tmp_path: Path
) -> None:
    require_peer("postfix")
    require_peer("dovecot")
    sender = SmtpSender(
        SmtpConfig(host="127.0.0.1", port=POSTFIX, from_address="Support <support@example.test>"),
        backoff_base=0.05,
    )
    hub.parts["email"] = sender
    hub.config = replace(hub.config, smtp=sender.config)
    sink = InboundMail(hub.sessions, attachments_dir=tmp_path)
    # The hub watches the support mailbox it sends from (shared by other tests: new mail only).
    watcher = ImapWatcher(settings("INBOX", username="support@example.test", idle_renew=60.0), sink)
    watcher.start()
    agent = bearer(await add_user(hub, "ann", "agent"))
    try:
        await watcher.wait_ready(20)
        resp = await client.post(
            "/api/v1/customers",
            json={"name": "Alice Example", "emails": ["alice@example.test"]},
            headers=agent,
        )
        customer_id = (await resp.json())["id"]
        tag = uuid.uuid4().hex[:8]
        resp = await client.post(
            "/api/v1/messages/email",
            json={"customer_id": customer_id, "subject": f"Offer {tag}", "text": "Best price."},
            headers=agent,
        )
        assert resp.status == 201, await resp.text()
        sent = await resp.json()
        # It arrived in Alice's real mailbox.
        await eventually(lambda: imap_has("alice@example.test", sent["message_id"]), "arrival")
        # Alice answers from her mail client, through Postfix, to the support mailbox.
        reply = (
            f"From: Alice <alice@example.test>\r\nTo: support@example.test\r\n"
            f"Subject: Re: Offer {tag}\r\nMessage-ID: <reply-{tag}@example.test>\r\n"
            f"In-Reply-To: {sent['message_id']}\r\nReferences: {sent['message_id']}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nDeal. Grüße, Alice\r\n"
        ).encode()
        await aiosmtplib.send(
            reply,
            sender="alice@example.test",
            recipients=["support@example.test"],
            hostname="127.0.0.1",
            port=POSTFIX,
        )

        async def inbound_row() -> EmailMessage | None:
            async with hub.sessions() as session:
                return await session.scalar(
                    select(EmailMessage).where(
                        EmailMessage.message_id == f"<reply-{tag}@example.test>"
                    )
                )

        await eventually(lambda: _found(inbound_row()), "the reply in the timeline")
        row = await inbound_row()
        assert row is not None
        assert row.customer_id == customer_id
        assert row.thread_key == sent["message_id"]
        assert row.body_text == "Deal. Grüße, Alice\n"
        resp = await client.get(f"/api/v1/customers/{customer_id}/timeline", headers=agent)
        items = (await resp.json())["items"]
        # Both directions on one timeline (the order within one second follows the Date header).
        assert sorted((i["direction"], i["summary"]) for i in items) == [
            ("inbound", f"Re: Offer {tag}"),
            ("outbound", f"Offer {tag}"),
        ]
        # Postfix refuses an unknown local user at RCPT: 502, logged as failed, suppressed.
        resp = await client.post(
            "/api/v1/messages/email",
            json={"to": f"nobody-{tag}@example.test", "subject": "Hi", "text": "x"},
            headers=agent,
        )
        assert resp.status == 502, await resp.text()
        async with hub.sessions() as session:
            assert await is_suppressed(session, "email", f"nobody-{tag}@example.test")
        # Postfix offers PIPELINING: the delivery and the refusal both went pipelined.
        assert sender.pipelined == 2
    finally:
        await watcher.stop()
        await sender.close()


async def test_fixtures_dropped_into_a_real_mailbox(
    hub: Hub, admin: Admin, scratch: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.mail.inbound")
    from hub.customers import create_customer
    from hub.timeline import record_interaction

    async with hub.sessions() as session, session.begin():
        anna = await create_customer(
            session, {"name": "Anna", "emails": ["anna.schmidt@kunde.example"]}, "DE"
        )
        gone = await create_customer(
            session, {"name": "Gone", "emails": ["gone@customer.example"]}, "DE"
        )
        original = EmailMessage(
            message_id="<QUOTE-ORIGINAL-ID@example.test>",
            direction="outbound",
            status="sent",
            customer_id=gone.id,
            thread_key="<QUOTE-ORIGINAL-ID@example.test>",
            refs=[],
            subject="Your quote",
            to_addresses=["gone@customer.example"],
            cc_addresses=[],
            attachments=[],
            problems=[],
        )
        session.add(original)
        await record_interaction(
            session,
            channel="email",
            external_id=original.message_id,
            customer_id=gone.id,
            direction="outbound",
            status="sent",
        )
    sink = InboundMail(hub.sessions, attachments_dir=tmp_path / "att", create_leads=True)
    watcher = ImapWatcher(settings(scratch), sink)
    watcher.start()
    names = [
        "plain.eml",
        "html_only.eml",
        "multi_charset.eml",
        "attachments.eml",
        "dsn_bounce.eml",
        "malformed.eml",
        "hostile.eml",
    ]
    try:
        await watcher.wait_ready(15)
        for name in names:
            await admin.append(scratch, (FIXTURES / name).read_bytes())
        await until(lambda: watcher.status[scratch].last_uid == len(names), 30, "all fixtures")
    finally:
        await watcher.stop()
    async with hub.sessions() as session:
        rows = {
            (r.uid or 0): r
            for r in await session.scalars(
                select(EmailMessage).where(EmailMessage.uid.is_not(None))
            )
        }
        assert sorted(rows) == list(range(1, len(names) + 1))
        by_name = dict(zip(names, (rows[i] for i in range(1, len(names) + 1)), strict=True))
        assert by_name["plain.eml"].customer_id == anna.id
        assert by_name["html_only.eml"].snippet.startswith("Hallo Welt")
        assert "お世話になっております" in by_name["multi_charset.eml"].body_text
        files = by_name["attachments.eml"].attachments
        assert [(a["name"], a["size"]) for a in files] == [
            ("logo.png", 70),
            ("Rechnung März.pdf", 51),
            ("orders.csv", 15),
        ]
        assert all(Path(a["path"]).is_file() for a in files)
        assert by_name["dsn_bounce.eml"].status == "dsn"
        assert by_name["dsn_bounce.eml"].interaction_id is None
        bounced = await session.scalar(
            select(EmailMessage).where(
                EmailMessage.message_id == "<QUOTE-ORIGINAL-ID@example.test>"
            )
        )
        assert bounced is not None and bounced.status == "bounced"
        assert await is_suppressed(session, "email", "gone@customer.example")
        assert by_name["malformed.eml"].problems
        assert by_name["hostile.eml"].problems
        timeline = list(
            (
                await session.scalars(select(Interaction).where(Interaction.direction == "inbound"))
            ).all()
        )
        # Six customer messages (not the DSN) are in the timeline; leads were made for senders.
        assert len(timeline) == 6
    assert "bounce report" in caplog.text and "had problems" in caplog.text
    raw = message_from_bytes((FIXTURES / "plain.eml").read_bytes(), policy=policy.default)
    assert raw["Message-ID"] == by_name["plain.eml"].message_id
