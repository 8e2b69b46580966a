"""hub/wiring/email.py: the running hub gets an SMTP sender always and an IMAP watcher when enabled."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from connectors.imap import ImapWatcher
from connectors.smtp import SmtpSender
from hub.config import load_config
from hub.runtime import running_hub
from tests.conftest import free_port, until
from tests.connectors.imap.conftest import Admin, message
from tests.connectors.smtp.sink import smtp_sink


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/hub.db",
        "COMMHUB_WEB_SECRET_KEY": "test-secret-key-0123456789abcdef",
        **extra,
    }


async def test_sender_registered_and_closed(tmp_path: Path) -> None:
    async with smtp_sink() as (sink, port):
        config = load_config(
            environ=_env(
                tmp_path, COMMHUB_SMTP_PORT=str(port), COMMHUB_SMTP_FROM_ADDRESS="hub@example.test"
            )
        )
        async with running_hub(config) as hub:
            sender = hub.part("email")
            assert isinstance(sender, SmtpSender)
            assert hub.part("email_watcher") is None  # [imap] enabled = false
            from hub.messaging.ports import OutgoingEmail

            await sender.send(OutgoingEmail(to="a@example.test", subject="wired", text="x"))
            assert sender.open_connections == 1
        assert sender.open_connections == 0
    assert len(sink.deliveries) == 1


async def test_unreachable_relay_does_not_stop_the_hub(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.smtp")
    config = load_config(environ=_env(tmp_path, COMMHUB_SMTP_PORT=str(free_port())))
    async with running_hub(config) as hub:
        sender = hub.part("email")
        assert isinstance(sender, SmtpSender)
        await until(lambda: "SMTP server not usable at start" in caplog.text, 10, "the warning")


async def test_watcher_feeds_the_timeline(tmp_path: Path, admin: Admin) -> None:
    mailbox = f"commhub-wiring-{uuid.uuid4().hex[:8]}"
    await admin.create(mailbox)
    try:
        config = load_config(
            environ=_env(
                tmp_path,
                COMMHUB_IMAP_ENABLED="true",
                COMMHUB_IMAP_PORT="10143",
                COMMHUB_IMAP_USERNAME="bob@example.test",
                COMMHUB_IMAP_PASSWORD="secret",
                COMMHUB_IMAP_MAILBOXES=mailbox,
                COMMHUB_IMAP_ATTACHMENTS_DIR=str(tmp_path / "att"),
                COMMHUB_IMAP_CREATE_LEADS="true",
                COMMHUB_SMTP_PORT=str(free_port()),
            )
        )
        async with running_hub(config) as hub:
            watcher = hub.part("email_watcher")
            assert isinstance(watcher, ImapWatcher)
            await watcher.wait_ready(30)
            await admin.append(mailbox, message("wired in", sender="dora@customer.example"))
            await until(
                lambda: watcher.status[mailbox].last_uid == 1,
                30,
                f"delivery (watcher status {watcher.status[mailbox]})",
            )
            from sqlalchemy import select

            from hub.models.customers import Customer

            async with hub.sessions() as session:
                lead = await session.scalar(select(Customer))
                assert lead is not None and lead.source == "email"
        assert all(task.done() is not False for task in watcher._tasks)
    finally:
        await admin.delete(mailbox)
