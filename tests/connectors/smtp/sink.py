"""An in-process aiosmtpd server for SMTP tests: records deliveries, scripts refusals, counts sessions."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Delivery:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        """The message as the stdlib's modern parser sees it."""
        # Stored mail uses local line ends; the parser would otherwise keep CRs in 7bit bodies.
        msg = message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Sink:
    """Behaviour and record of the test server. Scripted replies are consumed one per command."""

    deliveries: list[Delivery] = field(default_factory=list)
    sessions: int = 0
    data_commands: int = 0
    rcpt_commands: int = 0
    # Replies to use instead of "250"; each entry is used once, in order.
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    mail_replies: list[str] = field(default_factory=list)
    # The ESMTP options of every MAIL FROM, in order (e.g. ["SIZE=1234"]).
    mail_options: list[list[str]] = field(default_factory=list)
    # When set for the n-th DATA (1-based), the server drops the connection instead of answering.
    drop_on_data: set[int] = field(default_factory=set)
    # When set for the n-th DATA (1-based), the server never answers it (a stuck server).
    hang_on_data: set[int] = field(default_factory=set)
    # When set for the n-th MAIL, RCPT or DATA (1-based), the server answers it after that many
    # seconds (DATA: the reply to the message, after its last line).
    slow_mail: dict[int, float] = field(default_factory=dict)
    slow_rcpt: dict[int, float] = field(default_factory=dict)
    slow_data: dict[int, float] = field(default_factory=dict)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_options.append(list(options))
        await asyncio.sleep(self.slow_mail.get(len(self.mail_options), 0.0))
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_commands += 1
        await asyncio.sleep(self.slow_rcpt.get(self.rcpt_commands, 0.0))
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self.data_commands in self.drop_on_data:
            # uvloop's transports are not asyncio.Transport subclasses, only alike.
            cast(asyncio.Transport, server.transport).abort()
            return "250 never seen"
        if self.data_commands in self.hang_on_data:
            await asyncio.Event().wait()  # cancelled when the test's server shuts down
        await asyncio.sleep(self.slow_data.get(self.data_commands, 0.0))
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        self.deliveries.append(Delivery(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return f"250 OK queued as {len(self.deliveries)}"

    def close_idle_connections(self) -> None:
        """Drop every client connection, as a server's idle timeout would."""
        for transport in self.transports:
            transport.close()
        self.transports.clear()


class _CountingSMTP(SMTP):
    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        super().__init__(sink, hostname="sink.test", **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sink.sessions += 1
        self._sink.transports.append(transport)
        super().connection_made(transport)


def password_check(users: dict[str, str]) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting exactly these user/password pairs."""

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode()
        ok = users.get(user) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False)

    return authenticator


@asynccontextmanager
async def smtp_sink(
    *,
    sink: Sink | None = None,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Sink, int]]:
    """Run a server on 127.0.0.1 (a free port) in this event loop; yields (sink, port)."""
    record = sink or Sink()
    kwargs: dict[str, Any] = {"loop": asyncio.get_running_loop()}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    if users is not None:
        # AUTH only after STARTTLS, as real submission servers do (and aiosmtpd insists).
        assert starttls is not None, "AUTH in tests runs over STARTTLS"
        kwargs.update(authenticator=password_check(users), auth_required=True)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _CountingSMTP(record, **kwargs), "127.0.0.1", 0, ssl=implicit_tls
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield record, port
    finally:
        server.close()
        record.close_idle_connections()
        await server.wait_closed()
