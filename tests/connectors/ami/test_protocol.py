"""The AMI parser fed bytes directly: framing, decoding, junk, limits, answers (pure logic)."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.ami.const import MAX_FRAME_BYTES
from connectors.ami.errors import LinkLost
from connectors.ami.protocol import AmiProtocol
from hub.errors import ValidationError

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"


class ListQueue:
    """The EventQueue the protocol writes to, as a plain bounded list."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.items: deque[Any] = deque()
        self.limit = limit
        self.dropped: list[dict[str, str]] = []

    def drop(self, event: dict[str, str]) -> None:
        self.dropped.append(event)

    def wake(self) -> None:
        pass

    @property
    def events(self) -> list[dict[str, str]]:
        return [item[0] for item in self.items]


class WriteLog(asyncio.Transport):
    """A transport that keeps what is written (enough for connection_made and send_action)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)


def make(limit: int = 1_000_000) -> tuple[AmiProtocol, ListQueue, list[str]]:
    queue = ListQueue(limit)
    lost: list[str] = []
    proto = AmiProtocol(queue, lambda: datetime.now(UTC), lost.append)
    proto.connection_made(WriteLog())
    return proto, queue, lost


def reference_events(raw: bytes) -> list[dict[str, str]]:
    """Event frames of a trace, split the obvious way (no chunking, no junk)."""
    out = []
    for chunk in raw.decode().split("\r\n\r\n"):
        lines = [ln for ln in chunk.split("\r\n") if ": " in ln]
        fields: dict[str, str] = {}
        for ln in lines:
            k, v = ln.split(": ", 1)
            fields[k] = f"{fields[k]}\n{v}" if k in fields else v
        if "Event" in fields:
            out.append(fields)
    return out


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
async def test_trace_parses_the_same_at_any_chunk_size(step: int) -> None:
    raw = (TRACES / "click-to-call.ami").read_bytes()
    proto, queue, _ = make()
    for i in range(0, len(raw), step):
        proto.data_received(raw[i : i + step])
    assert proto.version == "11.0.0"
    assert queue.events == reference_events(raw)
    assert len(queue.events) == 121
    assert queue.events[0]["Event"] == "FullyBooted"
    # Trailing spaces are part of the value ("AccountCode: " is an empty value, not junk).
    cel = queue.events[2]
    assert cel["Event"] == "CEL" and cel["AccountCode"] == ""


async def test_repeated_keys_blank_lines_and_bare_colon() -> None:
    proto, queue, _ = make()
    proto.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    proto.data_received(
        b"\r\n\r\nEvent: Status\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nExtra:\r\n\r\n\r\n"
        b"Event: Next\r\n\r\n"
    )
    assert queue.events == [
        {"Event": "Status", "ChanVariable": "A=1\nB=2", "Extra": ""},
        {"Event": "Next"},
    ]


async def test_oversize_frame_is_discarded_and_parsing_resumes() -> None:
    proto, queue, _ = make()
    proto.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    for _ in range(MAX_FRAME_BYTES // 65536 + 2):
        proto.data_received(b"y" * 65536)
    assert len(proto._pending) < 16  # nothing of the junk is kept
    proto.data_received(b"yyy\r")
    proto.data_received(b"\n\r\nEvent: After\r\n\r\n")
    assert queue.events == [{"Event": "After"}]


async def test_no_banner_is_tolerated() -> None:
    proto, queue, _ = make()
    proto.data_received(b"Event: X\r\nA: b\r\n\r\n")
    assert queue.events == [{"Event": "X", "A": "b"}]
    assert proto.version is None


async def test_full_queue_drops_instead_of_blocking() -> None:
    proto, queue, _ = make(limit=2)
    proto.data_received(b"".join(b"Event: E\r\nN: %d\r\n\r\n" % i for i in range(5)))
    assert [e["N"] for e in queue.events] == ["0", "1"]
    assert [e["N"] for e in queue.dropped] == ["2", "3", "4"]


async def test_answers_go_to_their_action_events_with_unknown_ids_to_the_queue() -> None:
    proto, queue, _ = make()
    seen: list[str] = []
    ping = proto.send_action({"Action": "Ping"}, on_answer=lambda a, m: seen.append(m.response))
    assert b"Action: Ping\r\n" in proto.transport.written
    proto.data_received(
        f"Response: Success\r\nActionID: {ping.id}\r\nPing: Pong\r\n\r\n".encode()
        + b"Response: Success\r\nActionID: stray\r\n\r\n"
        + b"Event: OriginateResponse\r\nActionID: gone\r\nResponse: Failure\r\nReason: 5\r\n\r\n"
    )
    answer = await ping.future
    assert answer["Ping"] == "Pong" and seen == ["Success"]
    assert [e["Event"] for e in queue.events] == ["OriginateResponse"]
    assert proto.responses == {}


async def test_line_breaks_in_values_are_refused() -> None:
    proto, _, _ = make()
    with pytest.raises(ValidationError):
        proto.send_action({"Action": "Originate", "CallerID": "x\r\nAction: Hangup"})
    with pytest.raises(ValidationError):
        proto.send_action({"Action": "Originate", "Variable": ["A=1", "B=\n"]})
    assert proto.transport.written == b""


async def test_connection_lost_fails_pending_actions_and_resends_nothing() -> None:
    proto, _, lost = make()
    originate = proto.send_action({"Action": "Originate", "ActionID": "c2c-1"}, as_list=False)
    written = proto.transport.written
    proto.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(LinkLost, match="reset by peer"):
        await originate.future
    assert lost == ["connection lost: reset by peer"]
    assert proto.responses == {}
    with pytest.raises(LinkLost):
        proto.send_action({"Action": "Ping"})
    assert proto.transport.written == written
