"""ImapWatcher against the real Dovecot: IDLE, polling, restarts, drops, silent links, limits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.imap import ImapWatcher
from hub.db import session_factory
from hub.errors import AuthError
from hub.mail.inbound import InboundMail
from hub.models.mail import EmailMessage
from tests.conftest import until

from .conftest import Admin, RecordingSink, TcpProxy, message, settings


async def test_idle_delivers_new_mail_in_uid_order(admin: Admin, mailbox: str) -> None:
    await admin.append(mailbox, message("already there"))
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox), sink)
    watcher.start()
    try:
        await watcher.wait_ready(15)
        await until(lambda: watcher.status[mailbox].idling, what="IDLE")
        for i in range(3):
            await admin.append(mailbox, message(f"new {i}"))
        await until(lambda: len(sink.delivered) == 3, what="three deliveries")
    finally:
        await watcher.stop()
    # backfill is off: the message that was there before the first watch is not imported.
    assert sink.subjects() == ["new 0", "new 1", "new 2"]
    uids = [ref.uid for ref, _, _ in sink.delivered]
    assert uids == sorted(uids) and uids[0] == 2
    assert all(not headers_only for _, _, headers_only in sink.delivered)
    assert watcher.status[mailbox].idle_cycles >= 1


async def test_backfill_reads_what_is_already_there(admin: Admin, mailbox: str) -> None:
    await admin.append(mailbox, message("old 1"))
    await admin.append(mailbox, message("old 2"))
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, backfill=True), sink)
    watcher.start()
    try:
        await until(lambda: len(sink.delivered) == 2, what="backfill")
    finally:
        await watcher.stop()
    assert sink.subjects() == ["old 1", "old 2"]


async def test_polling_when_idle_is_not_used(admin: Admin, mailbox: str) -> None:
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, use_idle=False, poll_seconds=0.1), sink)
    watcher.start()
    try:
        await watcher.wait_ready(15)
        await admin.append(mailbox, message("polled"))
        await until(lambda: len(sink.delivered) == 1, what="polled delivery")
    finally:
        await watcher.stop()
    assert sink.subjects() == ["polled"]
    assert watcher.status[mailbox].idle_cycles == 0


async def test_idle_is_renewed_and_keeps_working(admin: Admin, mailbox: str) -> None:
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, idle_renew=0.3), sink)
    watcher.start()
    try:
        await until(lambda: watcher.status[mailbox].idle_cycles >= 3, what="three IDLE renewals")
        await admin.append(mailbox, message("after renewals"))
        await until(lambda: len(sink.delivered) == 1, what="delivery")
    finally:
        await watcher.stop()
    assert watcher.status[mailbox].reconnects == 0


async def test_restart_between_messages_loses_and_repeats_nothing(
    admin: Admin, mailbox: str, sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    sessions = session_factory(sqlite_engine)
    sink = InboundMail(sessions, attachments_dir=tmp_path)
    cfg = settings(mailbox)

    async def stored() -> list[str]:
        async with sessions() as session:
            return list(
                (
                    await session.scalars(select(EmailMessage.subject).order_by(EmailMessage.uid))
                ).all()
            )

    got: list[str] = []

    async def refresh() -> None:
        got[:] = await stored()

    first = ImapWatcher(cfg, sink)
    first.start()
    await first.wait_ready(15)
    await admin.append(mailbox, message("m1"))
    await until(lambda: first.status[mailbox].last_uid == 1, what="m1")
    await first.stop()
    # Mail keeps arriving while commhub is down.
    await admin.append(mailbox, message("m2"))
    await admin.append(mailbox, message("m3"))
    second = ImapWatcher(cfg, sink)
    second.start()
    try:
        await until(lambda: second.status[mailbox].last_uid == 3, what="m2 and m3")
        await admin.append(mailbox, message("m4"))
        await until(lambda: second.status[mailbox].last_uid == 4, what="m4")
    finally:
        await second.stop()
    await refresh()
    assert got == ["m1", "m2", "m3", "m4"]
    # A third start with nothing new changes nothing.
    third = ImapWatcher(cfg, sink)
    third.start()
    await third.wait_ready(15)
    await until(lambda: third.status[mailbox].idling, what="IDLE")
    await third.stop()
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(EmailMessage)) == 4


async def test_new_uidvalidity_rereads_without_duplicates(
    admin: Admin,
    mailbox: str,
    sqlite_engine: AsyncEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sessions = session_factory(sqlite_engine)
    sink = InboundMail(sessions, attachments_dir=tmp_path)
    same = message("kept")
    watcher = ImapWatcher(settings(mailbox), sink)
    watcher.start()
    await watcher.wait_ready(15)
    await admin.append(mailbox, same)
    await until(lambda: watcher.status[mailbox].last_uid == 1, what="first copy")
    await watcher.stop()
    # The mailbox is rebuilt (restore from backup, migration): new UIDVALIDITY, same message.
    await admin.delete(mailbox)
    await admin.create(mailbox)
    await admin.append(mailbox, same)
    await admin.append(mailbox, message("new after rebuild"))
    again = ImapWatcher(settings(mailbox), sink)
    again.start()
    try:
        await until(lambda: again.status[mailbox].last_uid == 2, what="reread")
    finally:
        await again.stop()
    assert "UIDVALIDITY changed" in caplog.text
    async with sessions() as session:
        subjects = sorted((await session.scalars(select(EmailMessage.subject))).all())
    assert subjects == ["kept", "new after rebuild"]


async def test_reconnects_after_the_link_drops(admin: Admin, mailbox: str, proxy: TcpProxy) -> None:
    port = await proxy.start()
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, port=port), sink)
    watcher.start()
    try:
        await until(lambda: watcher.status[mailbox].idling, what="IDLE")
        proxy.drop_all()
        await admin.append(mailbox, message("while reconnecting"))
        await until(lambda: len(sink.delivered) == 1, what="delivery after reconnect")
        assert watcher.status[mailbox].reconnects >= 1
        assert proxy.connections >= 2
    finally:
        await watcher.stop()
    assert sink.subjects() == ["while reconnecting"]


async def test_a_silent_link_during_idle_is_detected(
    admin: Admin, mailbox: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # aioimaplib issue #110: without our bounds, IDLE would wait on a dead link forever.
    port = await proxy.start()
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, port=port, idle_renew=0.5, command_timeout=1.0), sink)
    watcher.start()
    try:
        await until(lambda: watcher.status[mailbox].idling, what="IDLE")
        proxy.frozen = True
        await until(lambda: watcher.status[mailbox].reconnects >= 1, what="reconnect")
        proxy.frozen = False
        proxy.drop_all()
        await admin.append(mailbox, message("after the silence"))
        await until(lambda: len(sink.delivered) == 1, what="delivery")
    finally:
        await watcher.stop()
    assert "no answer to IDLE DONE" in caplog.text or "IDLE" in caplog.text


async def test_wrong_password_is_reported_and_retried_slowly(
    mailbox: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Dovecot delays every failed login (auth_failure_delay, more after repeated failures from
    # one address, and other tests share it): the timeouts here leave room for that.
    cfg = settings(mailbox, password="wrong", reconnect_max=60.0, command_timeout=30.0)
    watcher = ImapWatcher(cfg, RecordingSink())
    with pytest.raises(AuthError, match="refused the login"):
        await watcher.check()
    caplog.set_level(logging.ERROR, logger="connectors.imap")
    watcher.start()
    try:
        await until(
            lambda: "refused the login" in (watcher.status[mailbox].last_error or ""),
            within=60,
            what="the refused login",
        )
    finally:
        await watcher.stop()
    assert "refused the login of bob@example.test" in caplog.text
    assert "retrying in 60s" in caplog.text


async def test_check_refuses_a_missing_mailbox(admin: Admin) -> None:
    watcher = ImapWatcher(settings("no-such-mailbox-here"), RecordingSink())
    with pytest.raises(Exception, match="cannot select mailbox"):
        await watcher.check()


async def test_oversized_message_is_handed_over_as_headers_only(admin: Admin, mailbox: str) -> None:
    sink = RecordingSink()
    watcher = ImapWatcher(settings(mailbox, max_message_bytes=2000), sink)
    watcher.start()
    try:
        await watcher.wait_ready(15)
        await admin.append(mailbox, message("big", body="x" * 5000))
        await admin.append(mailbox, message("small"))
        await until(lambda: len(sink.delivered) == 2, what="two deliveries")
    finally:
        await watcher.stop()
    (ref_big, raw_big, headers_only_big), (_, raw_small, headers_only_small) = sink.delivered
    assert headers_only_big and not headers_only_small
    assert b"Subject: big" in raw_big and b"xxxx" not in raw_big
    assert ref_big.size is not None and ref_big.size > 5000
    assert b"small" in raw_small


async def test_mail_arriving_during_a_catch_up_is_not_left_waiting(
    admin: Admin, mailbox: str
) -> None:
    # Dovecot reports the new message as "* n EXISTS" at the end of whatever command is running
    # (here the FETCH of the next message). aioimaplib drops that line, and the server then
    # considers it told: without the watcher noticing, C would wait for the next IDLE renewal.
    await admin.append(mailbox, message("A"))
    await admin.append(mailbox, message("B"))

    class Arrivals(RecordingSink):
        async def deliver(self, ref, raw, *, headers_only=False):  # type: ignore[no-untyped-def]
            if b"Subject: A" in raw:
                await admin.append(mailbox, message("C"))
            await super().deliver(ref, raw, headers_only=headers_only)

    sink = Arrivals()
    watcher = ImapWatcher(settings(mailbox, backfill=True, idle_renew=600.0), sink)
    watcher.start()
    try:
        await until(lambda: len(sink.delivered) == 3, 20, "A, B and C")
    finally:
        await watcher.stop()
    assert sink.subjects() == ["A", "B", "C"]
