"""Fixtures for the PBX simulator tests: a running simulator and a raw AMI client over TCP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from connectors.pbxsim import PbxSimulator
from connectors.pbxsim.frames import Frame, FrameParser, encode_frame

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "asterisk22"
READ_LIMIT = 10.0


def shared_traces() -> Path:
    """shared/traces beside the repository, or under $COMMHUB_SHARED (tests/conftest.py)."""
    from tests.conftest import SHARED

    return SHARED / "traces"


def need_cacofonisk() -> Path:
    """The third-party traces, read in place; missing is a skip locally, an error in CI."""
    from tests.conftest import require_path

    return require_path(shared_traces() / "cacofonisk", "cacofonisk traces (set COMMHUB_SHARED)")


class AmiClient:
    """A deliberately plain AMI client: raw bytes in, frames out, nothing hidden."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.banner = b""

    @classmethod
    async def connect(cls, port: int, *, banner: bool = True) -> AmiClient:
        """Open a TCP connection and (by default) read the banner line."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if banner:
            client.banner = await client.read_line()
        return client

    async def _fill(self) -> None:
        async with asyncio.timeout(READ_LIMIT):
            data = await self.reader.read(65536)
        if not data:
            raise ConnectionResetError("server closed the connection")
        self.buffer += data

    async def read_line(self) -> bytes:
        """One CRLF-terminated line (the banner)."""
        while b"\r\n" not in self.buffer:
            await self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    async def read_exact(self, size: int) -> bytes:
        """Exactly `size` bytes."""
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def read_frame(self) -> Frame:
        """The next complete frame."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        raw, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        frames = FrameParser().feed(raw + b"\r\n\r\n")
        assert len(frames) == 1, raw
        return frames[0]

    async def read_raw_frame(self) -> bytes:
        """The next frame as bytes, terminator included."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        raw, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return raw + b"\r\n\r\n"

    async def read_until(self, done: Callable[[Frame], bool]) -> list[Frame]:
        """Frames up to and including the first one for which `done` is true."""
        frames: list[Frame] = []
        while True:
            frame = await self.read_frame()
            frames.append(frame)
            if done(frame):
                return frames

    async def eof(self) -> bool:
        """Wait until the server closes (or resets) the connection; times out otherwise."""
        try:
            async with asyncio.timeout(READ_LIMIT):
                while data := await self.reader.read(65536):
                    self.buffer += data
        except ConnectionError:
            pass
        return True

    async def send(self, *fields: tuple[str, str]) -> None:
        """Send one action frame."""
        self.writer.write(encode_frame(fields))
        await self.writer.drain()

    async def action(self, name: str, action_id: str, *extra: tuple[str, str]) -> Frame:
        """Send an action and return the response with its ActionID (events skipped)."""
        await self.send(("Action", name), ("ActionID", action_id), *extra)
        frames = await self.read_until(
            lambda f: f.get("Response") is not None and f.get("ActionID") == action_id
        )
        return frames[-1]

    async def login(self, events: str = "on", action_id: str = "login-1") -> Frame:
        """Log in with the simulator's default credentials."""
        return await self.action(
            "Login",
            action_id,
            ("Username", "hub"),
            ("Secret", "hubsecret"),
            ("Events", events),
        )

    async def login_and_settle(self) -> None:
        """Log in and read up to the SuccessfulAuth event that follows an accepted login."""
        response = await self.login()
        assert response.get("Message") == "Authentication accepted"
        await self.read_until(lambda f: f.get("Event") == "SuccessfulAuth")

    async def sync(self, action_id: str = "sync") -> list[Frame]:
        """Everything the server sent before answering a Ping (a barrier)."""
        await self.send(("Action", "Ping"), ("ActionID", action_id))
        frames = await self.read_until(lambda f: f.get("ActionID") == action_id)
        return frames[:-1]

    async def close(self) -> None:
        """Close the socket."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def sim() -> AsyncIterator[PbxSimulator]:
    """A running simulator on an ephemeral loopback port."""
    async with PbxSimulator() as simulator:
        yield simulator


@pytest.fixture
async def client(sim: PbxSimulator) -> AsyncIterator[AmiClient]:
    """A logged-in raw AMI client."""
    ami = await AmiClient.connect(sim.port)
    await ami.login_and_settle()
    yield ami
    await ami.close()
