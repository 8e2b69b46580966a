"""IMAP test helpers: a scratch mailbox on the real Dovecot, a recording sink, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aioimaplib import aioimaplib

from connectors.imap import ImapSettings
from connectors.imap.responses import encode_mailbox
from hub.mail.ports import MailboxState, MailRef
from tests.conftest import require_peer

HOST, PORT = "127.0.0.1", 10143
USER, PASSWORD = "bob@example.test", "secret"


def message(subject: str, *, sender: str = "carol@customer.example", body: str = "hello") -> bytes:
    """A small well-formed message with a unique Message-ID."""
    return (
        f"From: Carol <{sender}>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@customer.example>\r\n"
        f"Date: Mon, 20 May 2024 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


class Admin:
    """A separate IMAP session that plays the outside world: creates mailboxes, delivers mail."""

    def __init__(self) -> None:
        self.client = aioimaplib.IMAP4(host=HOST, port=PORT, timeout=10)

    async def open(self) -> None:
        """Log in."""
        await self.client.wait_hello_from_server()
        response = await self.client.login(USER, PASSWORD)
        assert response.result == "OK", response

    async def create(self, name: str) -> None:
        """CREATE a mailbox."""
        response = await self.client.create(encode_mailbox(name))
        assert response.result == "OK", response

    async def delete(self, name: str) -> None:
        """DELETE a mailbox (and its messages)."""
        await self.client.delete(encode_mailbox(name))

    async def append(self, name: str, raw: bytes) -> None:
        """Deliver one message into a mailbox (APPEND, as an MDA would drop it)."""
        response = await self.client.append(raw, mailbox=encode_mailbox(name))
        assert response.result == "OK", response

    async def close(self) -> None:
        """Log out."""
        with contextlib.suppress(Exception):
            await self.client.logout()
        transport = self.client.protocol.transport
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    """An admin session on the real Dovecot (skips locally / fails in CI when it is down)."""
    require_peer("dovecot")
    session = Admin()
    await session.open()
    yield session
    await session.close()


@pytest.fixture
async def mailbox(admin: Admin) -> AsyncIterator[str]:
    """A fresh mailbox of its own for one test (the accounts are shared with other tests)."""
    name = f"commhub-test-{uuid.uuid4().hex[:10]}"
    await admin.create(name)
    yield name
    await admin.delete(name)


def settings(mailbox: str, port: int = PORT, **kw: object) -> ImapSettings:
    """Watcher settings with test-sized timeouts."""
    base: dict[str, object] = {
        "host": HOST,
        "port": port,
        "username": USER,
        "password": PASSWORD,
        "mailboxes": (mailbox,),
        "idle_renew": 30.0,
        "command_timeout": 5.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "poll_seconds": 0.2,
    }
    base.update(kw)
    return ImapSettings(**base)  # type: ignore[arg-type]


@dataclass
class RecordingSink:
    """An in-memory InboundSink: the hub side reduced to what the watcher must honour."""

    states: dict[tuple[str, str], MailboxState] = field(default_factory=dict)
    delivered: list[tuple[MailRef, bytes, bool]] = field(default_factory=list)

    async def load_state(self, account: str, mailbox: str) -> MailboxState | None:
        return self.states.get((account, mailbox))

    async def save_state(self, account: str, mailbox: str, state: MailboxState) -> None:
        self.states[(account, mailbox)] = state

    async def deliver(self, ref: MailRef, raw: bytes, *, headers_only: bool = False) -> None:
        self.delivered.append((ref, raw, headers_only))
        self.states[(ref.account, ref.mailbox)] = MailboxState(ref.uidvalidity, ref.uid)

    def subjects(self) -> list[str]:
        """Subjects of delivered messages, in order."""
        out = []
        for _, raw, _ in self.delivered:
            for line in raw.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    out.append(line[9:].decode())
        return out


class TcpProxy:
    """A loopback TCP forwarder in front of Dovecot that can cut or freeze every connection."""

    def __init__(self, upstream_port: int = PORT) -> None:
        self.upstream_port = upstream_port
        self.frozen = False
        self.connections = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        self._pairs.append((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.05)  # a silent link: bytes are held, nothing closes
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def drop_all(self) -> None:
        """Close every connection on both sides, as a NAT timeout or server restart would."""
        for client, upstream in self._pairs:
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        """Stop listening and drop everything."""
        self.frozen = False
        self.drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A TcpProxy in front of the real Dovecot."""
    require_peer("dovecot")
    p = TcpProxy()
    yield p
    await p.close()
