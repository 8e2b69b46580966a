"""Become Kannel's fake SMSC: a TCP client of bearerbox's fakesmsc listener (one at a time).

Line protocol (Kannel 1.4.5, smsc_fake.c), one message per line:
  out of Kannel:  "<from> <to> text <raw text>"  |  "<from> <to> data <url-encoded bytes>"
                  "<from> <to> ucs-2 <url-encoded UTF-16BE>"
                  "<from> <to> udh <url-encoded UDH> data <url-encoded bytes>"   (one part)
  into Kannel:    "<from> <to> text <text>" | "data <url-encoded>" | "ucs2 <url-encoded UTF-16BE>"
A parted message carries no coding word: the test knows which coding it expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import aiohttp

HOST = "127.0.0.1"
SMSC_PORT = 10000
STATUS_URL = "http://127.0.0.1:13000/status.txt?password=statuspw"
# One process at a time may be the SMSC (tests, the bench): a file lock, not an asyncio one.
LOCK_FILE = Path(os.environ.get("PEERS_DIR", "/tmp/commhub-peers")) / "kannel" / "fakesmsc.lock"


@dataclass
class SmscLine:
    """One line Kannel sent to the SMSC."""

    sender: str
    receiver: str
    kind: str  # text | data | ucs-2 | udh
    data: bytes
    udh: bytes = b""


@dataclass
class Delivered:
    """A whole MT message as the SMSC got it (concatenated parts joined back)."""

    sender: str
    receiver: str
    kind: str  # kind of the first part: text, data, ucs-2 or udh
    parts: list[bytes] = field(default_factory=list)
    udhs: list[bytes] = field(default_factory=list)

    @property
    def payload(self) -> bytes:
        """All parts' bytes joined."""
        return b"".join(self.parts)

    def text(self, ucs2: bool) -> str:
        """The text, decoded as UCS-2 (UTF-16BE) or as Kannel's internal UTF-8."""
        return self.payload.decode("utf-16-be" if ucs2 else "utf-8")


def _unquote(data: bytes) -> bytes:
    # Kannel's url-encoding writes the byte 0x20 as '+' (a real '+' comes as %2B).
    return unquote_to_bytes(data.replace(b"+", b" "))


def parse_line(raw: bytes) -> SmscLine:
    """Split one line from bearerbox."""
    line = raw.rstrip(b"\r\n")
    sender, receiver, kind, rest = line.split(b" ", 3)
    k = kind.decode()
    if k == "text":
        return SmscLine(sender.decode(), receiver.decode(), k, rest)
    if k == "udh":
        udh, _data_word, payload = rest.split(b" ", 2)
        return SmscLine(sender.decode(), receiver.decode(), k, _unquote(payload), _unquote(udh))
    return SmscLine(sender.decode(), receiver.decode(), k, _unquote(rest))


def concat_info(udh: bytes) -> tuple[int, int, int] | None:
    """(reference, total, sequence) from a concatenation UDH (IE 0x00 or 0x08), else None."""
    if not udh:
        return None
    body = udh[1 : 1 + udh[0]]
    i = 0
    while i + 2 <= len(body):
        iei, length = body[i], body[i + 1]
        value = body[i + 2 : i + 2 + length]
        if iei == 0x00 and length == 3:
            return value[0], value[1], value[2]
        if iei == 0x08 and length == 4:
            return (value[0] << 8) | value[1], value[2], value[3]
        i += 2 + length
    return None


async def wait_online(online: bool = True, timeout: float = 15.0) -> None:
    """Until bearerbox says our SMSC link is online (or no longer is): no fixed sleeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(STATUS_URL) as resp:
                body = await resp.text()
            if ("FAKE:10000 (online" in body) == online:
                return
            if loop.time() > deadline:
                state = "online" if online else "offline"
                raise TimeoutError(f"bearerbox never marked the fake SMSC {state}")
            await asyncio.sleep(0.05)


class FakeSmsc:
    """Our end of the fakesmsc link: collects MT lines, writes MO lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lines: asyncio.Queue[SmscLine] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())
        self._partial: dict[tuple[str, int], Delivered] = {}

    async def _read(self) -> None:
        while True:
            raw = await self.reader.readline()
            if not raw:
                return
            await self.lines.put(parse_line(raw))

    async def next_message(self, receiver: str | None = None, timeout: float = 20.0) -> Delivered:
        """The next whole message (to `receiver` if given; others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if receiver is not None and line.receiver != receiver:
                    continue
                info = concat_info(line.udh)
                if info is None:
                    return Delivered(line.sender, line.receiver, line.kind, [line.data], [line.udh])
                ref, total, seq = info
                key = (line.receiver, ref)
                msg = self._partial.setdefault(
                    key,
                    Delivered(line.sender, line.receiver, line.kind, [b""] * total, [b""] * total),
                )
                msg.parts[seq - 1] = line.data
                msg.udhs[seq - 1] = line.udh
                if all(msg.udhs):
                    del self._partial[key]
                    return msg

    async def drain(self, quiet: float = 0.3) -> int:
        """Throw away whatever Kannel still had queued for the SMSC; returns how many lines."""
        count = 0
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(self.lines.get(), quiet)
                count += 1
        return count

    async def send_mo(self, sender: str, receiver: str, text: str, *, ucs2: bool = False) -> None:
        """A handset message into Kannel."""
        if ucs2:
            line = f"{sender} {receiver} ucs2 {quote(text.encode('utf-16-be'), safe='')}\n"
        else:
            line = f"{sender} {receiver} data {quote(text.encode('utf-8'), safe='')}\n"
        self.writer.write(line.encode("ascii"))
        await self.writer.drain()

    async def close(self) -> None:
        """Disconnect (frees the single SMSC slot)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        # The next client may connect only once bearerbox has let go of this one.
        await wait_online(online=False)


@contextlib.asynccontextmanager
async def smsc_slot() -> AsyncIterator[None]:
    """Hold the cross-process lock for the single SMSC slot (and our callback port 18080)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.asynccontextmanager
async def fake_smsc() -> AsyncIterator[FakeSmsc]:
    """Connect as the SMSC, wait until bearerbox has us online, always disconnect."""
    reader, writer = await asyncio.open_connection(HOST, SMSC_PORT)
    smsc = FakeSmsc(reader, writer)
    try:
        await wait_online()
        yield smsc
    finally:
        await smsc.close()
