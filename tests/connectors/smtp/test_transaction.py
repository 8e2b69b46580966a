"""run_transaction against a scripted SMTP peer on a real socket: replies split across reads,
multi-line replies, malformed and refused replies, a peer that hangs up; and the connection
goes back to aiosmtplib in step (a NOOP afterwards gets its own reply)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiosmtplib
import pytest
from aiosmtplib.typing import SMTPStatus

from connectors.smtp.transaction import ReplyLost, run_transaction
from tests.conftest import until

LINES = (
    b"MAIL FROM:<hub@example.test>\r\n",
    b"RCPT TO:<a@example.test>\r\n",
    b"DATA\r\n",
    b"Subject: s\r\n\r\nbody\r\n.\r\n",
)

# What the peer answers to each step; a callable gets the writer and does what it likes.
Answer = bytes | Callable[[asyncio.StreamWriter], object]


class Peer:
    """What a scripted peer saw: the commands (a message shows as "<message>" or, when it had
    no lines, "<empty message>"), and which commands arrived together, before any reply."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.batches: list[list[bytes]] = []


@asynccontextmanager
async def scripted_peer(
    answers: list[Answer], *, byte_by_byte: bool = False, pipelining: bool = False
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An SMTP peer that greets, answers EHLO, then answers each command from `answers`
    (NOOP always gets "250 noop"); yields its port and the commands it received."""
    async with peer_with(answers, byte_by_byte=byte_by_byte, pipelining=pipelining) as (
        port,
        peer,
    ):
        yield port, peer.received


@asynccontextmanager
async def peer_with(
    answers: list[Answer], *, byte_by_byte: bool = False, pipelining: bool = False
) -> AsyncIterator[tuple[int, Peer]]:
    """The scripted peer itself. With `pipelining` it offers PIPELINING and, after MAIL,
    waits for RCPT and DATA before it answers anything (a client that waits instead times out
    the peer's read and shows up as separate batches)."""
    peer = Peer()

    async def reply(writer: asyncio.StreamWriter, data: bytes) -> None:
        if byte_by_byte:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
        else:
            writer.write(data)
            await writer.drain()

    async def read_message(reader: asyncio.StreamReader) -> bytes:
        lines = 0
        while await reader.readline() not in (b".\r\n", b""):
            lines += 1
        return b"<message>" if lines else b"<empty message>"

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = list(answers)
        await reply(writer, b"220 peer.test ready\r\n")
        ehlo = b"250-peer.test\r\n250-PIPELINING\r\n" if pipelining else b"250-peer.test\r\n"
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line.upper()[:4]
                fixed = {
                    b"EHLO": ehlo + b"250 8BITMIME\r\n",
                    b"NOOP": b"250 noop\r\n",
                    b"RSET": b"250 reset\r\n",
                    b"QUIT": b"221 bye\r\n",
                }
                if verb in fixed:
                    await reply(writer, fixed[verb])
                    if verb == b"QUIT":
                        return
                    continue
                batch = [line]
                if pipelining and verb == b"MAIL":
                    with contextlib.suppress(TimeoutError):
                        while not batch[-1].upper().startswith(b"DATA"):
                            batch.append(await asyncio.wait_for(reader.readline(), 1.0))
                peer.batches.append(batch)
                for command in batch:
                    peer.received.append(command)
                    usual = b"354 go\r\n" if command.upper().startswith(b"DATA") else b"250 ok\r\n"
                    answer = script.pop(0) if script else usual
                    if callable(answer):
                        answer(writer)
                        continue
                    await reply(writer, answer)
                    if answer.startswith(b"354"):
                        message = await read_message(reader)
                        peer.received.append(message)
                        peer.batches.append([message])
                        answer = script.pop(0) if script else b"250 ok\r\n"
                        if callable(answer):
                            answer(writer)
                            continue
                        await reply(writer, answer)
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, peer
    finally:
        server.close()
        await server.wait_closed()


async def _client(port: int) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="client.test")
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def _run(smtp: aiosmtplib.SMTP, deadline: float = 5.0) -> None:
    assert smtp.protocol is not None
    await run_transaction(
        smtp.protocol,
        LINES,
        sender="hub@example.test",
        recipient="a@example.test",
        deadline=deadline,
        pipelining=smtp.supports_extension("pipelining"),
    )


async def test_replies_split_across_reads_and_multiline_replies() -> None:
    answers: list[Answer] = [
        b"250 sender ok\r\n",
        b"250-recipient ok\r\n250-more detail\r\n250 last line\r\n",
        b"354 go ahead\r\n",
        b"250 queued as X1\r\n",
    ]
    async with scripted_peer(answers, byte_by_byte=True) as (port, received):
        smtp = await _client(port)
        await _run(smtp)
        # The transport is aiosmtplib's again, in step: NOOP gets NOOP's reply.
        reply = await smtp.noop()
        assert (reply.code, reply.message) == (250, "noop")
        await smtp.quit()
    assert received == [LINES[0], LINES[1], LINES[2], b"<message>"]


async def test_each_refusal_raises_what_sendmail_raises_and_stops_there() -> None:
    cases: list[tuple[int, bytes, type[Exception]]] = [
        (0, b"550 5.7.1 sender refused\r\n", aiosmtplib.SMTPSenderRefused),
        (1, b"550 5.1.1 no such user\r\n", aiosmtplib.SMTPRecipientsRefused),
        (2, b"451 4.3.0 not now\r\n", aiosmtplib.SMTPDataError),
        (3, b"554 5.6.0 content refused\r\n", aiosmtplib.SMTPDataError),
    ]
    for step, refusal, error in cases:
        answers: list[Answer] = [b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n"]
        answers[step] = refusal
        async with scripted_peer(answers) as (port, received):
            smtp = await _client(port)
            with pytest.raises(error) as raised:
                await _run(smtp)
            if isinstance(raised.value, aiosmtplib.SMTPRecipientsRefused):
                refused = raised.value.recipients[0]
                assert (refused.code, refused.recipient) == (550, "a@example.test")
            else:
                assert isinstance(raised.value, aiosmtplib.SMTPResponseException)
                assert raised.value.code == int(refusal[:3])
            assert (await smtp.noop()).message == "noop"  # still in step
            await smtp.quit()
        # Nothing after the refused step was sent.
        assert len(received) == step + 1, (step, received)


async def test_malformed_reply_is_an_invalid_response() -> None:
    async with scripted_peer([b"hello there\r\n"]) as (port, _received):
        smtp = await _client(port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await _run(smtp)
        assert raised.value.code == SMTPStatus.invalid_response
        assert "Malformed SMTP response line: hello there" in raised.value.message
        smtp.close()


def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()


def say_nothing(writer: asyncio.StreamWriter) -> None:
    return None


async def test_peer_hanging_up_mid_transaction_disconnects_the_client() -> None:
    async with scripted_peer([b"250 ok\r\n", hang_up]) as (port, received):
        smtp = await _client(port)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected) as raised:
            await _run(smtp)
        # Before the message went out: nothing can have been delivered.
        assert not isinstance(raised.value, ReplyLost)
        await asyncio.sleep(0.05)
        # aiosmtplib learned it too: the pool would reopen rather than reuse this connection.
        assert not smtp.is_connected
    assert received == [LINES[0], LINES[1]]


async def test_silent_peer_times_out_and_the_transport_is_given_back() -> None:
    async with scripted_peer([b"250 ok\r\n", say_nothing]) as (port, _received):
        smtp = await _client(port)
        with pytest.raises(TimeoutError):
            await _run(smtp, deadline=0.2)
        assert smtp.transport is not None
        assert smtp.transport.get_protocol() is smtp.protocol
        # The late reply must never be read as the next transaction's: the connection is cut.
        await until(lambda: not smtp.is_connected, what="the timed-out connection to close")


@pytest.mark.parametrize("after_the_message", [hang_up, say_nothing], ids=["hang-up", "silence"])
async def test_a_reply_lost_after_the_whole_message_is_in_doubt(
    after_the_message: Callable[[asyncio.StreamWriter], None],
) -> None:
    # The server read the final dot and may have queued the message: the caller must be told
    # that this failure, unlike the others, may have delivered it.
    async with scripted_peer([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", after_the_message]) as (
        port,
        received,
    ):
        smtp = await _client(port)
        with pytest.raises(ReplyLost):
            await _run(smtp, deadline=0.3)
        await until(lambda: not smtp.is_connected, what="the connection to be dropped")
    assert received == [LINES[0], LINES[1], LINES[2], b"<message>"]


async def test_the_deadline_is_per_reply_not_per_transaction() -> None:
    # Each reply comes within the deadline, the transaction as a whole takes longer: a large
    # message on a slow link must not be cut off.
    def late(writer: asyncio.StreamWriter) -> None:
        asyncio.get_running_loop().call_later(0.15, writer.write, b"250 ok\r\n")

    async with scripted_peer([late, late]) as (port, received):
        smtp = await _client(port)
        started = asyncio.get_running_loop().time()
        await _run(smtp, deadline=0.25)
        assert asyncio.get_running_loop().time() - started > 0.25  # the premise, not a timing
        assert (await smtp.noop()).message == "noop"
        await smtp.quit()
    assert received[:4] == [LINES[0], LINES[1], LINES[2], b"<message>"]


async def test_pipelining_sends_mail_rcpt_and_data_in_one_round_trip() -> None:
    async with peer_with([], pipelining=True) as (port, peer):
        smtp = await _client(port)
        await _run(smtp)
        assert (await smtp.noop()).message == "noop"
        await smtp.quit()
    assert peer.batches == [[LINES[0], LINES[1], LINES[2]], [b"<message>"]]


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with peer_with([]) as (port, peer):
        smtp = await _client(port)
        await _run(smtp)
        await smtp.quit()
    assert peer.batches == [[LINES[0]], [LINES[1]], [LINES[2]], [b"<message>"]]


async def test_pipelined_refusal_reads_every_reply_and_reports_the_first() -> None:
    answers: list[Answer] = [
        b"550 5.7.1 sender refused\r\n",
        b"503 5.5.1 sender first\r\n",
        b"503 5.5.1 no valid recipients\r\n",
    ]
    async with peer_with(answers, pipelining=True) as (port, peer):
        smtp = await _client(port)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as raised:
            await _run(smtp)
        assert raised.value.code == 550
        # The replies to RCPT and DATA were consumed: the next command gets its own reply.
        assert (await smtp.noop()).message == "noop"
        await smtp.quit()
    assert peer.batches == [[LINES[0], LINES[1], LINES[2]]]


async def test_pipelined_data_accepted_after_a_refused_recipient_is_ended_empty() -> None:
    # RFC 2920 3.1: a server may say 354 although no recipient was accepted; the client then
    # sends a lone dot and nothing of the message.
    answers: list[Answer] = [
        b"250 ok\r\n",
        b"550 5.1.1 no such user\r\n",
        b"354 go ahead\r\n",
        b"554 5.5.1 no valid recipients\r\n",
    ]
    async with peer_with(answers, pipelining=True) as (port, peer):
        smtp = await _client(port)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as raised:
            await _run(smtp)
        assert raised.value.recipients[0].code == 550
        assert (await smtp.noop()).message == "noop"
        await smtp.quit()
    assert peer.received == [LINES[0], LINES[1], LINES[2], b"<empty message>"]


async def test_a_reply_nobody_asked_for_is_a_protocol_error() -> None:
    async with scripted_peer([b"250 ok\r\n250 and another\r\n"]) as (port, received):
        smtp = await _client(port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await _run(smtp)
        assert raised.value.code == SMTPStatus.invalid_response
        smtp.close()
    assert received == [LINES[0]]  # RCPT never went out on a connection out of step
