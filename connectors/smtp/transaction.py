"""One MAIL / RCPT / DATA transaction driven by the server's replies themselves.

Without PIPELINING each command waits for the previous reply. Awaiting every reply in a task
costs a future, a task step and a trip through the event loop's queue, behind whatever else
the loop has to do (a campaign worker renders and records meanwhile): the server idles for
all of that, four times per message. Here the connection's transport is lent to a small
protocol for the length of one transaction; it writes the next command from inside
data_received, the moment a good reply is parsed, and wakes the caller once, with the final
reply or the first refusal. Afterwards (or when the connection fails) the transport goes back
to aiosmtplib's protocol untouched, which never saw the exchange and stays in step.

Replies are parsed as aiosmtplib parses them (same limits, same exceptions), and refusals raise
what aiosmtplib.sendmail raises, so the sender's error mapping is shared."""

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
    ) -> None:
        self._owner = owner
        self._transport = transport
        self._lines = lines
        self._recipient = recipient
        self._sender = sender
        self._done = done
        self._step = 0
        self._buffer = bytearray()

    def start(self) -> None:
        self._transport.set_protocol(self)
        self._transport.write(self._lines[0])

    def give_back(self) -> None:
        """Return the transport to aiosmtplib (idempotent)."""
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._owner)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return  # unsolicited: aiosmtplib drops it as well
        self._buffer += data
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(
                aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
            )
            return
        try:
            reply = self._reply()
        except aiosmtplib.SMTPResponseException as err:
            self._fail(err)
            return
        if reply is None:
            return  # partial: wait for the rest
        code, text = reply
        step = self._step
        if code not in _GOOD[step]:
            self._fail(self._refusal(step, code, text))
            return
        self._step = step = step + 1
        if step == len(self._lines):
            self.give_back()
            self._done.set_result(None)
        else:
            self._transport.write(self._lines[step])

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
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response, "Response too long"
                )
            try:
                code = int(line[:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response,
                    f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}",
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
        if not self._done.done():
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
) -> None:
    """Send MAIL, RCPT, DATA and the dot-terminated payload (`lines`, each ready to write),
    each after the previous command's good reply; raise aiosmtplib's exception for the first
    refusal, SMTPServerDisconnected if the connection ends, TimeoutError after `deadline` seconds."""
    transport = cast(asyncio.Transport | None, protocol.transport)
    if transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    exchange = _Exchange(protocol, transport, lines, recipient, sender, done)
    exchange.start()
    try:
        async with asyncio.timeout(deadline):
            await done
    finally:
        exchange.give_back()
