"""The IMAP watcher: one task per mailbox that IDLEs (or polls), fetches new mail by UID, hands
the raw bytes to the hub, and reconnects with backoff after any failure.

Exactly-once, across restarts: the hub's sink stores (UIDVALIDITY, last UID) in the same
transaction as the message it handled, and the watcher always resumes from that stored state, never
from memory. A message is fetched with BODY.PEEK (it stays unread for people using the mailbox).
The first time a mailbox is watched, reading starts at its current end (`backfill` False: a
mailbox with years of history is not imported) or at its start (`backfill` True). When UIDVALIDITY
changes, the whole mailbox is read again and the hub recognises messages it already has by their
Message-ID (or content hash).

Every wait on the server is bounded twice: by a timeout and by the connection-lost callback,
because aioimaplib 2.0.3 leaves a command (IDLE above all, its issue #110) waiting forever when the
server says BYE or the link drops. IDLE is re-issued every `idle_renew` seconds (29 minutes by
default, RFC 2177), and mail is caught up after every IDLE cycle, whatever woke it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aioimaplib import aioimaplib

from hub.config import ImapConfig
from hub.errors import AuthError, CommhubError, ConfigError, RetryableError
from hub.mail.ports import InboundSink, MailboxState, MailRef

from .const import (
    COMMAND_TIMEOUT,
    FETCH_TIMEOUT,
    IDLE_RENEW_SECONDS,
    MAX_MESSAGE_BYTES,
    RECONNECT_MAX,
    RECONNECT_MIN,
)
from .errors import CommandFailed, CommandTimedOut, ConnectionLost
from .responses import (
    encode_mailbox,
    has_new_mail,
    is_bye,
    literal_for_uid,
    uid_sizes,
    uidnext,
    uidvalidity,
)

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ImapSettings:
    """How to reach the mailboxes and how patiently; times in seconds."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    mailboxes: tuple[str, ...] = ("INBOX",)
    security: str = "none"  # none | tls
    poll_seconds: float = 60.0
    idle_renew: float = IDLE_RENEW_SECONDS
    command_timeout: float = COMMAND_TIMEOUT
    fetch_timeout: float = FETCH_TIMEOUT
    reconnect_min: float = RECONNECT_MIN
    reconnect_max: float = RECONNECT_MAX
    max_message_bytes: int = MAX_MESSAGE_BYTES
    backfill: bool = False
    use_idle: bool = True  # False: poll even when the server has IDLE
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.security == "starttls":
            raise ConfigError(
                "[imap] security = starttls is not supported by aioimaplib: use security = tls "
                "(port 993) or none on a trusted network"
            )
        if self.security not in ("none", "tls"):
            raise ConfigError("[imap] security must be none or tls")
        if not self.username:
            raise ConfigError("[imap] username is required when [imap] enabled = true")
        if not self.mailboxes:
            raise ConfigError("[imap] mailboxes must name at least one mailbox")
        if self.idle_renew <= 0 or self.poll_seconds <= 0:
            raise ConfigError("[imap] poll_seconds and the IDLE renewal must be positive")

    @classmethod
    def from_config(cls, config: ImapConfig, **overrides: Any) -> ImapSettings:
        """Settings from the [imap] section; keyword arguments override (tests shorten times)."""
        base = cls(
            host=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            mailboxes=tuple(config.mailboxes),
            security=config.security,
            poll_seconds=config.poll_seconds,
            backfill=config.backfill,
        )
        return replace(base, **overrides) if overrides else base

    @property
    def account(self) -> str:
        """The key of this account's stored state."""
        return f"imap://{self.username}@{self.host}:{self.port}"

    @property
    def server(self) -> str:
        """host:port for messages."""
        return f"{self.host}:{self.port}"


@dataclass
class MailboxStatus:
    """What one mailbox task is doing (for health checks and tests)."""

    connected: bool = False
    idling: bool = False
    ready: bool = False  # selected and its state known at least once
    last_uid: int | None = None
    last_error: str | None = None
    reconnects: int = 0
    idle_cycles: int = 0


class _Connection:
    """One logged-in aioimaplib client plus the event its connection-lost callback sets."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.lost = asyncio.Event()
        self.done_sent = False
        # Set whenever the server announces "* n EXISTS", whatever command is running.
        self.exists_seen = False
        ctx = settings.ssl_context
        if settings.security == "tls" and ctx is None:
            ctx = ssl.create_default_context()
        self.client = aioimaplib.IMAP4(
            host=settings.host,
            port=settings.port,
            timeout=settings.command_timeout,
            conn_lost_cb=lambda _exc: self.lost.set(),
            ssl_context=ctx if settings.security == "tls" else None,
        )
        # The server reports new mail at the end of any command ("* 5 EXISTS" after a FETCH),
        # and considers us told. aioimaplib only logs such a line when no IDLE is running, so
        # the watcher would wait for the next IDLE renewal. Observe it on its way in.
        protocol = self.client.protocol
        untagged = protocol._untagged_response

        def observe(line: bytes) -> Any:
            if line.rstrip().endswith(b"EXISTS"):
                self.exists_seen = True
            return untagged(line)

        protocol._untagged_response = observe

    async def guard(self, awaitable: Awaitable[T], seconds: float, what: str) -> T:
        """Await a client call, but give up when the link drops or `seconds` pass."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except aioimaplib.CommandTimeout as err:
                raise CommandTimedOut(f"{self.settings.server}: {what} timed out") from err
            except aioimaplib.AioImapException as err:
                raise CommandFailed(f"{self.settings.server}: {what} failed: {err}") from err
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if self.lost.is_set():
            raise ConnectionLost(f"{self.settings.server} closed the connection during {what}")
        raise CommandTimedOut(f"{self.settings.server}: no answer to {what} in {seconds:.0f}s")

    async def open(self) -> None:
        """Connect and log in; AuthError when the credentials are refused."""
        s = self.settings
        try:
            await self.guard(self.client.wait_hello_from_server(), s.command_timeout, "greeting")
        except OSError as err:
            raise RetryableError(f"cannot reach IMAP server {s.server}: {err}") from err
        response = await self.guard(
            self.client.login(s.username, s.password), s.command_timeout, "LOGIN"
        )
        if response.result != "OK":
            raise AuthError(
                f"IMAP server {s.server} refused the login of {s.username}: {_last(response)}"
            )

    @property
    def has_idle(self) -> bool:
        """The server offers IDLE."""
        return bool(self.client.has_capability("IDLE"))

    def idle_done(self) -> None:
        """Send DONE once per IDLE: a second DONE is a BAD command that aioimaplib chokes on."""
        if not self.done_sent and not self.lost.is_set() and self.client.has_pending_idle():
            self.done_sent = True
            self.client.idle_done()

    async def close(self) -> None:
        """LOGOUT politely (briefly), then drop the socket whatever happened."""
        connecting = self.client._client_task
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        elif not self.lost.is_set() and not connecting.cancelled() and not connecting.exception():
            with contextlib.suppress(Exception):
                self.idle_done()
                if not self.client.has_pending_idle():
                    await self.guard(self.client.logout(), 2.0, "LOGOUT")
        transport = getattr(self.client.protocol, "transport", None)
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)  # the socket is closed by a callback: let it run now
        waiter = getattr(self.client, "_idle_waiter", None)
        if waiter is not None:
            waiter.cancel()


def _last(response: Any) -> str:
    lines = getattr(response, "lines", None) or [b""]
    return bytes(lines[-1]).decode("utf-8", "replace")[:200]


class ImapWatcher:
    """Watches the configured mailboxes and hands every new message to an InboundSink."""

    def __init__(self, settings: ImapSettings, sink: InboundSink) -> None:
        self.settings = settings
        self.sink = sink
        self.status: dict[str, MailboxStatus] = {m: MailboxStatus() for m in settings.mailboxes}
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def check(self) -> None:
        """Log in once and select each mailbox: raises AuthError/RetryableError/CommandFailed."""
        conn = _Connection(self.settings)
        try:
            await conn.open()
            for mailbox in self.settings.mailboxes:
                await self._select(conn, mailbox)
        finally:
            await conn.close()

    def start(self) -> None:
        """Start one watching task per mailbox (returns at once; see wait_ready)."""
        if self._tasks:
            return
        for mailbox in self.settings.mailboxes:
            self._tasks.append(
                asyncio.create_task(self._watch(mailbox), name=f"imap-watch:{mailbox}")
            )

    async def wait_ready(self, within: float) -> None:
        """Wait (at most `within` seconds) until every mailbox is selected and its state stored."""
        await asyncio.wait_for(self._ready.wait(), within)

    async def stop(self) -> None:
        """Stop every task (each logs out on its way)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- one mailbox ------------------------------------------------------------------------

    async def _watch(self, mailbox: str) -> None:
        s = self.settings
        status = self.status[mailbox]
        delay = s.reconnect_min
        while True:
            conn = _Connection(s)
            try:
                await conn.open()
                status.connected = True
                validity, last = await self._select(conn, mailbox)
                status.ready = True
                status.last_error = None
                status.last_uid = last
                if all(st.ready for st in self.status.values()):
                    self._ready.set()
                idle = s.use_idle and conn.has_idle
                if not idle:
                    _LOG.info("IMAP %s: polling %s every %.0fs", s.server, mailbox, s.poll_seconds)
                while True:
                    # Again while the server announced mail during the pass: that mail may not
                    # be in it, and IDLE will not announce it a second time.
                    conn.exists_seen = True
                    while conn.exists_seen:
                        conn.exists_seen = False
                        last = await self._catch_up(conn, mailbox, validity, last)
                    status.last_uid = last
                    # Backoff resets only once mail was handed over: a hub that cannot store
                    # (database down) must not make us reconnect every second.
                    delay = s.reconnect_min
                    if idle:
                        status.idling = True
                        await self._idle_once(conn)
                        status.idling = False
                        status.idle_cycles += 1
                    else:
                        await self._poll_wait(conn)
            except asyncio.CancelledError:
                raise
            except AuthError as err:
                _LOG.error("%s; retrying in %.0fs", err, s.reconnect_max)
                status.last_error = str(err)
                delay = s.reconnect_max
            except CommhubError as err:
                _LOG.warning("IMAP %s %s: %s; reconnecting", s.server, mailbox, err)
                status.last_error = str(err)
            except Exception as err:  # a bug in the sink must not end the watch for good
                _LOG.exception("IMAP %s %s: unexpected error; reconnecting", s.server, mailbox)
                status.last_error = f"{type(err).__name__}: {err}"
            finally:
                status.connected = status.idling = False
                await conn.close()
            status.reconnects += 1
            wait = random.uniform(delay / 2, delay)
            await asyncio.sleep(wait)
            delay = min(s.reconnect_max, delay * 2)

    async def _select(self, conn: _Connection, mailbox: str) -> tuple[int, int]:
        """SELECT the mailbox and reconcile the stored state; returns (uidvalidity, last_uid)."""
        s = self.settings
        response = await conn.guard(
            conn.client.select(encode_mailbox(mailbox)), s.command_timeout, f"SELECT {mailbox}"
        )
        if response.result != "OK":
            raise CommandFailed(f"cannot select mailbox {mailbox!r}: {_last(response)}")
        validity = uidvalidity(response.lines)
        if validity is None:
            raise CommandFailed(f"server sent no UIDVALIDITY for {mailbox!r}")
        state = await self.sink.load_state(s.account, mailbox)
        if state is not None and state.uidvalidity == validity:
            return validity, state.last_uid
        if state is None:
            start = 0 if s.backfill else await self._current_end(conn, mailbox, response.lines)
            _LOG.info(
                "IMAP %s %s: first watch, reading from UID %d on (backfill=%s)",
                s.server,
                mailbox,
                start + 1,
                s.backfill,
            )
        else:
            start = 0
            _LOG.warning(
                "IMAP %s %s: UIDVALIDITY changed from %d to %d: reading the whole mailbox again"
                " (messages already stored are recognised by Message-ID)",
                s.server,
                mailbox,
                state.uidvalidity,
                validity,
            )
        await self.sink.save_state(s.account, mailbox, MailboxState(validity, start))
        return validity, start

    async def _current_end(self, conn: _Connection, mailbox: str, lines: list[Any]) -> int:
        """The highest UID in use now (UIDNEXT - 1, or asked for when the server omits it)."""
        nxt = uidnext(lines)
        if nxt is not None:
            return max(0, nxt - 1)
        response = await conn.guard(
            conn.client.uid("fetch", "*", "(UID RFC822.SIZE)"),
            self.settings.command_timeout,
            "FETCH",
        )
        pairs = uid_sizes(response.lines, 0) if response.result == "OK" else []
        return pairs[-1][0] if pairs else 0

    async def _catch_up(self, conn: _Connection, mailbox: str, validity: int, last: int) -> int:
        """Fetch and hand over every message above `last`, in UID order; returns the new last."""
        s = self.settings
        response = await conn.guard(
            conn.client.uid("fetch", f"{last + 1}:*", "(UID RFC822.SIZE)"),
            s.command_timeout,
            "UID FETCH sizes",
        )
        if response.result != "OK":
            raise CommandFailed(f"UID FETCH in {mailbox!r} refused: {_last(response)}")
        for uid, size in uid_sizes(response.lines, last):
            headers_only = size > s.max_message_bytes
            part = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
            body = await conn.guard(
                conn.client.uid("fetch", str(uid), f"(UID {part})"), s.fetch_timeout, "UID FETCH"
            )
            raw = literal_for_uid(body.lines, uid) if body.result == "OK" else None
            if raw is None:
                _LOG.info("IMAP %s %s: UID %d vanished before it was read", s.server, mailbox, uid)
                continue
            if headers_only:
                _LOG.warning(
                    "IMAP %s %s: UID %d is %d bytes, over the %d limit: only its header is read",
                    s.server,
                    mailbox,
                    uid,
                    size,
                    s.max_message_bytes,
                )
            ref = MailRef(s.account, mailbox, validity, uid, size)
            await self.sink.deliver(ref, raw, headers_only=headers_only)
            last = uid
            self.status[mailbox].last_uid = uid
        return last

    async def _idle_once(self, conn: _Connection) -> None:
        """One IDLE cycle: returns on new mail or when IDLE is due for renewal."""
        s = self.settings
        client = conn.client
        conn.done_sent = False
        idle = await conn.guard(client.idle_start(timeout=s.idle_renew), s.command_timeout, "IDLE")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.idle_renew
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    push = await conn.guard(
                        client.wait_server_push(timeout=remaining), remaining + 1.0, "IDLE wait"
                    )
                except TimeoutError:
                    break
                except CommandTimedOut:
                    break
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if is_bye(push):
                    raise ConnectionLost(f"{s.server} said BYE during IDLE")
                if has_new_mail(push):
                    break
        finally:
            conn.idle_done()
        await conn.guard(idle, s.command_timeout, "IDLE DONE")

    async def _poll_wait(self, conn: _Connection) -> None:
        """Sleep one poll interval, but wake at once if the link drops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.lost.wait(), self.settings.poll_seconds)
        if conn.lost.is_set():
            raise ConnectionLost(f"{self.settings.server} closed the connection")
