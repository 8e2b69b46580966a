"""One MAIL / RCPT / DATA transaction driven by the server's replies themselves.

Without PIPELINING each command waits for the previous reply. Awaiting every reply in a task
costs a future, a task step and a trip through the event loop's queue, behind whatever else
the loop has to do (a campaign worker renders and records meanwhile): the server idles for
all of that, four times per message. Here the connection's transport is lent to a small
protocol for the length of one transaction; it writes the next command from inside
data_received, the moment a good reply is parsed, and wakes the caller once, with the final
reply or the first refusal. Afterwards (or when the connection fails) the transport goes back
to aiosmtplib's protocol untouched, which never saw the exchange and stays in step.

When the server offers PIPELINING (RFC 2920; Postfix, Exim and most relays do), MAIL, RCPT
and DATA go out together and the message after DATA's 354: two round trips instead of four,
which is what limits a campaign sent to a distant relay. The replies are still read one by
one in order; the first refusal is the one reported, and if a server says 354 to DATA after
refusing the recipient, a lone dot ends that empty message before the refusal is raised.

Replies are parsed as aiosmtplib parses them (same limits, same exceptions), and refusals raise
what aiosmtplib.sendmail raises, so the sender's error mapping is shared. A reply that no
command asked for is a protocol error: the connection is not trusted again."""

from __future__ import annotations

import asyncio
from typing import cast

import aiosmtplib
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.typing import SMTPStatus

# Which replies let the transaction go on, step by step: MAIL, RCPT, DATA, the message.
_GOOD: tuple[tuple[int, ...], ...] = (
    (SMTPStatus.completed,),
    (SMTPStatus.completed, SMTPStatus.will_forward),
    (SMTPStatus.start_input,),
    (SMTPStatus.completed,),
)
_DATA = 2  # the step whose good reply (354) lets the message itself go
_END_OF_EMPTY_DATA = b".\r\n"


class ReplyLost(aiosmtplib.SMTPServerDisconnected):
    """The message went out in full (its final dot written) and then the connection broke or
    the reply timed out: the server may have accepted it. A network error like the others for
    whoever does not care (it is an SMTPServerDisconnected)."""


def _invalid(text: str) -> aiosmtplib.SMTPResponseException:
    """A reply we cannot pair with a command: the connection is out of step (and is dropped)."""
    return aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, text)


class _Exchange(asyncio.Protocol):
    """The transport's protocol while one transaction runs."""

    def __init__(
        self,
        owner: SMTPProtocol,
        transport: asyncio.Transport,
        lines: tuple[bytes, bytes, bytes, bytes],
        recipient: str,
        sender: str,
        done: asyncio.Future[None],
        pipelining: bool,
        deadline: float,
    ) -> None:
        self._owner = owner
        self._transport = transport
        self._lines = lines
        self._recipient = recipient
        self._sender = sender
        self._done = done
        self._pipelining = pipelining
        self._step = 0  # replies read so far
        self._written = 0  # commands written so far
        self._refused: Exception | None = None  # first refusal while pipelining
        self._buffer = bytearray()
        # Each reply has `deadline` seconds. Rescheduling a timer on every reply would cost a
        # timer handle per reply; instead one timer runs, and when it fires after a reply came
        # it is re-armed from that reply.
        self._loop = done.get_loop()
        self._deadline = deadline
        self._last_reply = 0.0
        self._armed_from = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.timed_out = False

    def start(self) -> None:
        self._transport.set_protocol(self)
        self._last_reply = self._loop.time()
        self._arm()
        self._write(_DATA + 1 if self._pipelining else 1)

    def _arm(self) -> None:
        self._armed_from = self._last_reply
        self._timer = self._loop.call_at(self._last_reply + self._deadline, self._expired)

    def _expired(self) -> None:
        if self._done.done():
            return
        if self._last_reply != self._armed_from:
            self._arm()  # a reply came since: the next one has its full deadline
            return
        self.timed_out = True
        self._fail(TimeoutError(f"no SMTP reply within {self._deadline:g} seconds"))

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self, count: int) -> None:
        first = self._written
        self._written += count
        self._transport.write(b"".join(self._lines[first : first + count]))

    def give_back(self) -> None:
        """Return the transport to aiosmtplib (idempotent)."""
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._owner)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return  # unsolicited: aiosmtplib drops it as well
        self._buffer += data
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(_invalid("Response too long"))
            return
        while not self._done.done():
            try:
                reply = self._reply()
            except aiosmtplib.SMTPResponseException as err:
                self._fail(err)
                return
            if reply is None:
                return  # partial: wait for the rest
            self._on_reply(*reply)

    def _on_reply(self, code: int, text: str) -> None:
        self._last_reply = self._loop.time()
        step = self._step  # below self._written: a reply beyond them fails before it is read
        self._step = step + 1
        good = code in _GOOD[step]
        if not good and self._refused is None:
            self._refused = self._refusal(step, code, text)
        if self._refused is not None:
            if step < _DATA:
                if not self._pipelining:
                    self._fail(self._refused)
                return  # pipelined: the replies to RCPT and DATA are still on their way
            if step == _DATA and good:
                # A server that took DATA although the envelope was refused (RFC 2920 3.1):
                # a lone dot, in the message's place, ends it empty; its reply does not matter.
                self._transport.write(_END_OF_EMPTY_DATA)
                self._written += 1
                return
            self._fail(self._refused)
            return
        if self._step == len(self._lines):
            self.give_back()
            self._done.set_result(None)
        elif self._step == self._written:
            if self._buffer:  # more than every command sent so far asked for
                self._fail(_invalid("Reply to no command"))
                return
            self._write(1)

    def _reply(self) -> tuple[int, str] | None:
        """The first complete (possibly multi-line) reply in the buffer, consumed; or None."""
        buffer = self._buffer
        offset = 0
        parts: list[bytes] = []
        while True:
            end = buffer.find(b"\n", offset)
            if end == -1:
                return None
            line = bytes(buffer[offset : end + 1])
            if len(line) > MAX_LINE_LENGTH:
                raise _invalid("Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                raise _invalid(
                    f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}"
                ) from None
            offset = end + 1
            parts.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del buffer[:offset]
                return code, b"\n".join(parts).decode("utf-8", "surrogateescape")

    def _refusal(self, step: int, code: int, text: str) -> Exception:
        if step == 0:
            return aiosmtplib.SMTPSenderRefused(code, text, self._sender)
        if step == 1:
            return aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(code, text, self._recipient)]
            )
        return aiosmtplib.SMTPDataError(code, text)

    def _fail(self, err: BaseException) -> None:
        self.give_back()
        if self._done.done():
            return
        if (
            self._written == len(self._lines)
            and self._refused is None
            and isinstance(err, aiosmtplib.SMTPServerDisconnected | TimeoutError)
        ):
            lost = ReplyLost(f"no reply to the message: {err}")
            lost.__cause__ = err
            err = lost
        self._done.set_exception(err)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        # aiosmtplib must learn it too, or it would consider the connection usable.
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()


async def run_transaction(
    protocol: SMTPProtocol,
    lines: tuple[bytes, bytes, bytes, bytes],
    *,
    sender: str,
    recipient: str,
    deadline: float,
    pipelining: bool = False,
) -> None:
    """Send MAIL, RCPT, DATA and the dot-terminated payload (`lines`, each ready to write),
    each after the previous command's good reply (MAIL, RCPT and DATA at once when
    `pipelining`, i.e. the server offers it). Raises aiosmtplib's exception for the first
    refusal (the connection stays in step), SMTPServerDisconnected if the connection ends, and
    TimeoutError when a reply takes longer than `deadline` seconds (each reply has its own
    deadline, as in aiosmtplib, so a large message is not cut short). Either of the last two
    after the whole message went out is ReplyLost: the server may have the message.

    A transaction that ends without its reply (timeout, cancellation) aborts the connection:
    the late reply would otherwise be read as the next message's."""
    transport = cast(asyncio.Transport | None, protocol.transport)
    if transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    exchange = _Exchange(protocol, transport, lines, recipient, sender, done, pipelining, deadline)
    try:
        exchange.start()
        await done
    finally:
        exchange.stop_timer()
        exchange.give_back()
        # A cancelled await cancels `done` too.
        if not done.done() or done.cancelled() or exchange.timed_out:
            transport.abort()
