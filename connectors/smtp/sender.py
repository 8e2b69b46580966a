"""SmtpSender: a small pool of long-lived SMTP connections, rate limit, retries, error mapping.

Policy:
- Up to `pool_size` connections per server, opened on first need and kept for the next messages
  (MAIL, RCPT and DATA share one round trip when the server offers PIPELINING; throughput still
  comes mostly from parallel connections).
  A connection idle for longer than IDLE_REUSE_SECONDS, or one the server closed, is reopened.
- `rate_per_second` > 0 spaces message starts evenly across the whole pool (per server).
- A 4xx reply or a network error is retried up to MAX_ATTEMPTS with capped, jittered backoff,
  then GaveUp (a RetryableError). A network error also drops that connection.
- A 5xx reply is final: EmailRejected (a PermanentError) with the code, the stage, and the
  recipient when the address itself was refused, so that the caller can suppress it. The sender
  never touches the database.
- A refused login is AuthError: retrying with the same password cannot help.

A network error after the end of DATA may mean the server accepted the message but its reply was
lost: the retry can then deliver it twice. SMTP offers no way around that (RFC 5321 4.1.1.4); it
is rare, and a duplicate beats a lost mail. Such retries are counted (`in_doubt`); a caller that
keeps its own count (the campaign engine) passes retry_in_doubt=False and gets DeliveryInDoubt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from hub.config import SmtpConfig
from hub.errors import CommhubError, ConfigError, DeliveryInDoubt, PermanentError, RetryableError
from hub.messaging.ports import EmailRejected, OutgoingEmail

from .compose import Rendered, parse_address, render
from .const import BACKOFF_BASE, BACKOFF_MAX, IDLE_REUSE_SECONDS, MAX_ATTEMPTS
from .errors import NETWORK_ERRORS, GaveUp, auth_failed, rejected, reply_text, unreachable
from .transaction import ReplyLost, run_transaction

_LOG = logging.getLogger(__name__)


_PERIOD_AT_LINE_START = re.compile(rb"(?m)^\.")


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message in SMTP's own form, prepared before a connection is taken: the envelope
    commands and the DATA payload, dot-stuffed and ending with <CRLF>.<CRLF> (RFC 5321 4.5.2).

    Preparing is the CPU part of sending (composition, quoting); doing it ahead means a
    connection goes from one message's 250 to the next MAIL FROM without waiting for it."""

    envelope_from: str
    recipient: str
    message_id: str
    size: int  # of the message itself, for the SIZE parameter
    mail_from: bytes  # b"MAIL FROM:<addr>" (SIZE, when offered, is added per connection)
    rcpt_to: bytes  # b"RCPT TO:<addr>\r\n"
    payload: bytes


def _dot_stuffed(data: bytes) -> bytes:
    # Most messages have no line starting with a dot: a substring search is far cheaper than
    # the regex pass (the data starts with a header, never with a dot).
    return _PERIOD_AT_LINE_START.sub(b"..", data) if b"\n." in data else data


def _outbound(rendered: Rendered) -> Outbound:
    # compose.render writes CRLF-only lines and a final CRLF and has validated both ASCII
    # addr-specs, so only the transparency dots are left to add.
    return Outbound(
        envelope_from=rendered.envelope_from,
        recipient=rendered.recipient,
        message_id=rendered.message_id,
        size=len(rendered.data),
        mail_from=b"MAIL FROM:<" + rendered.envelope_from.encode("ascii") + b">",
        rcpt_to=b"RCPT TO:<" + rendered.recipient.encode("ascii") + b">\r\n",
        payload=_dot_stuffed(rendered.data) + b".\r\n",
    )


async def _transaction(
    smtp: aiosmtplib.SMTP, message: Outbound, deadline: float, pipelining: bool
) -> None:
    """MAIL, RCPT, DATA for one prepared message, raising what aiosmtplib.sendmail raises.

    The commands bypass aiosmtplib's command layer: the pool gives a connection to one
    transaction at a time (its per-command lock has nothing to guard), the envelope was
    validated when the message was composed (no per-command control-character scan), the
    payload is already in wire form (no line-ending and dot rewriting), and each command goes
    out from the previous reply's callback (transaction.py), MAIL/RCPT/DATA together when the
    server offers PIPELINING and `pipelining` says to use it. Each reply has `deadline`
    seconds. A connection that fails, times out or is cancelled mid-transaction is closed
    (here or by the caller); it is never reused out of step."""
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    size = b" SIZE=%d" % message.size if smtp.supports_extension("size") else b""
    try:
        await run_transaction(
            protocol,
            (message.mail_from + size + b"\r\n", message.rcpt_to, b"DATA\r\n", message.payload),
            sender=message.envelope_from,
            recipient=message.recipient,
            deadline=deadline,
            pipelining=pipelining,
        )
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as err:
        if isinstance(err, aiosmtplib.SMTPResponseException) and err.code < 0:
            raise  # an unreadable reply: the connection is dropped, no RSET to wait for
        # Reset the envelope so the connection can carry the next message (as sendmail does).
        with contextlib.suppress(aiosmtplib.SMTPException, *NETWORK_ERRORS):
            await smtp.rset()
        raise


class RateLimiter:
    """Evenly spaced starts at `rate` per second (0 = unlimited), shared by every caller."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next start is allowed; each caller reserves its own slot first."""
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class _Slot:
    """One pooled connection (or the place for one, when `smtp` is None)."""

    smtp: aiosmtplib.SMTP | None = None
    last_used: float = 0.0
    sent: int = 0


class SmtpSender:
    """hub.messaging.ports.EmailSender over aiosmtplib with a connection pool."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if config.pool_size < 1:
            raise ConfigError(f"[smtp] pool_size must be at least 1, got {config.pool_size}")
        if config.security not in ("none", "starttls", "tls"):
            raise ConfigError("[smtp] security must be none, starttls or tls")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        parse_address(config.from_address, "[smtp] from_address")
        self.config = config
        self.server = f"{config.host}:{config.port}"
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._limiter = RateLimiter(config.rate_per_second)
        self._slots = [_Slot() for _ in range(config.pool_size)]
        # LIFO: under light load the same warm connection serves every message and the others
        # stay closed, instead of each slot opening its own connection in turn.
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in self._slots:
            self._idle.put_nowait(slot)
        self._closed = False
        self.pipelined = 0  # transactions sent with PIPELINING (for tests and health)
        self.in_doubt = 0  # messages sent in full whose reply was lost (may have arrived)

    # -- connections ------------------------------------------------------------------------

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.config
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username or None,
            password=cfg.password or None,
            local_hostname=self._local_hostname,
            timeout=cfg.timeout,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=self._tls_context,
        )

    async def _open(self) -> aiosmtplib.SMTP:
        """Connect, EHLO, STARTTLS and AUTH as configured; errors mapped onto hub.errors."""
        if self._local_hostname is None:
            # socket.getfqdn may do a DNS lookup: once, off the loop.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = self._client()
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # plain sessions: connect() leaves EHLO to sendmail
                await client.ehlo()
        except aiosmtplib.SMTPAuthenticationError as err:
            client.close()
            raise auth_failed(err, self.server) from err
        except aiosmtplib.SMTPResponseException as err:
            client.close()
            if 500 <= err.code < 600:
                raise PermanentError(
                    f"SMTP server {self.server} refused the session: {reply_text(err)}"
                ) from err
            raise RetryableError(
                f"SMTP server {self.server} refused the session for now: {reply_text(err)}"
            ) from err
        except aiosmtplib.SMTPException as err:
            client.close()
            if isinstance(err, NETWORK_ERRORS):
                raise unreachable(err, self.server) from err
            # e.g. SMTPNotSupported: STARTTLS or AUTH asked for but not offered.
            raise ConfigError(f"SMTP server {self.server}: {err}") from err
        except NETWORK_ERRORS as err:
            client.close()
            raise unreachable(err, self.server) from err
        return client

    async def _usable(self, slot: _Slot) -> aiosmtplib.SMTP:
        """The slot's connection, (re)opened when missing, closed by the server, or stale."""
        smtp = slot.smtp
        if smtp is not None and (
            not smtp.is_connected or time.monotonic() - slot.last_used > IDLE_REUSE_SECONDS
        ):
            await self._quit(smtp)
            slot.smtp = smtp = None
        if smtp is None:
            smtp = await self._open()
            slot.smtp = smtp
            slot.sent = 0
        return smtp

    @staticmethod
    async def _quit(smtp: aiosmtplib.SMTP) -> None:
        if smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, *NETWORK_ERRORS):
                await asyncio.wait_for(smtp.quit(), 2.0)
        smtp.close()

    # -- sending ----------------------------------------------------------------------------

    def prepare(self, message: OutgoingEmail) -> Outbound:
        """Compose the message for sending (ValidationError for a header that cannot be sent);
        the CPU work of a send, done before a connection is taken."""
        return _outbound(render(message, self.config.from_address))

    async def send(self, message: OutgoingEmail) -> str:
        """Send one message; its Message-ID once the server accepted it (see module policy)."""
        return await self.send_prepared(self.prepare(message))

    async def send_prepared(self, message: Outbound, *, retry_in_doubt: bool = True) -> str:
        """Send a message from prepare(); its Message-ID once the server accepted it.

        With retry_in_doubt=False a message whose reply was lost after it went out in full is
        not sent again here: DeliveryInDoubt goes to the caller, which decides (and counts)."""
        if self._closed:
            raise RetryableError("the SMTP sender is closed")
        await self._limiter.wait()
        attempt = 0
        last: CommhubError | None = None
        while True:
            attempt += 1
            try:
                await self._attempt(message)
                return message.message_id
            except RetryableError as err:
                if self._closed or (isinstance(err, DeliveryInDoubt) and not retry_in_doubt):
                    raise
                last = err
            if attempt >= self.max_attempts:
                assert last is not None
                raise GaveUp(
                    f"gave up after {attempt} attempts to send to {message.recipient} via "
                    f"{self.server}: {last}",
                    attempts=attempt,
                    last=last,
                ) from last
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: retries do not align
            _LOG.info(
                "SMTP send to %s failed (attempt %d/%d): %s; retrying in %.1fs",
                message.recipient,
                attempt,
                self.max_attempts,
                last,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, message: Outbound) -> None:
        """One try on one pooled connection; RetryableError means 'may pass, try again'."""
        slot = await self._idle.get()
        try:
            if self._closed:
                raise RetryableError("the SMTP sender is closed")
            smtp = await self._usable(slot)
            try:
                # A timeout leaves the session mid-command: the TimeoutError drops the connection.
                pipelining = self.config.pipelining and smtp.supports_extension("pipelining")
                self.pipelined += pipelining
                await _transaction(smtp, message, self.config.timeout, pipelining)
            except aiosmtplib.SMTPRecipientsRefused as err:
                # One recipient per message: this wraps its single SMTPRecipientRefused.
                raise self._response_error(err.recipients[0], message, slot) from err
            except aiosmtplib.SMTPResponseException as err:
                raise self._response_error(err, message, slot) from err
            except ReplyLost as err:
                await self._drop(slot)
                self.in_doubt += 1
                _LOG.warning(
                    "SMTP %s: the message %s to %s went out in full, then %s; the server may have it",
                    self.server,
                    message.message_id,
                    message.recipient,
                    err,
                )
                raise DeliveryInDoubt(
                    f"{self.server} got the whole message to {message.recipient}, then {err}:"
                    " it may have been delivered"
                ) from err
            except NETWORK_ERRORS as err:
                await self._drop(slot)
                raise unreachable(err, self.server) from err
            except aiosmtplib.SMTPException as err:
                await self._drop(slot)
                raise RetryableError(f"SMTP error from {self.server}: {err}") from err
            slot.last_used = time.monotonic()
            slot.sent += 1
        finally:
            self._idle.put_nowait(slot)

    def _response_error(
        self, err: aiosmtplib.SMTPResponseException, message: Outbound, slot: _Slot
    ) -> CommhubError:
        slot.last_used = time.monotonic()
        if err.code == 421 or err.code < 400:
            # 421: the server is closing this connection; anything odd: do not trust it either.
            if slot.smtp is not None:
                slot.smtp.close()
            slot.smtp = None
        if 500 <= err.code < 600:
            return rejected(err, message.recipient, self.server)
        return RetryableError(
            f"{self.server} deferred the message to {message.recipient}: {reply_text(err)}"
        )

    async def _drop(self, slot: _Slot) -> None:
        if slot.smtp is not None:
            slot.smtp.close()
        slot.smtp = None

    # -- lifecycle --------------------------------------------------------------------------

    async def check(self) -> None:
        """Connect and log in once (STARTTLS/TLS as configured), then QUIT: validates settings."""
        smtp = await self._open()
        await self._quit(smtp)

    async def close(self) -> None:
        """Refuse new sends, let the messages on the wire finish (up to the timeout), then QUIT
        every pooled connection. A QUIT never cuts into a transaction: it waits for the slot."""
        self._closed = True
        taken: list[_Slot] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout):
                while len(taken) < len(self._slots):
                    taken.append(await self._idle.get())
        for slot in self._slots:
            if all(slot is not t for t in taken) and slot.smtp is not None:
                slot.smtp.close()  # still mid-transaction after the wait: cut it
        await asyncio.gather(*(self._quit(slot.smtp) for slot in taken if slot.smtp is not None))
        for slot in self._slots:
            slot.smtp = None
        for slot in taken:
            self._idle.put_nowait(slot)  # a send still waiting for a slot sees _closed and stops

    @property
    def open_connections(self) -> int:
        """How many pooled connections are currently open (for tests and health)."""
        return sum(1 for s in self._slots if s.smtp is not None and s.smtp.is_connected)


__all__ = ["EmailRejected", "GaveUp", "Outbound", "RateLimiter", "SmtpSender"]
