"""AMI wire format: `Key: Value` lines ended by CRLF, a blank line ends a frame."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import overload

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

Fields = list[tuple[str, str]]

# A peer that never ends a frame must not grow our buffer without bound; Asterisk itself
# drops lines past 1 KiB, we are more lenient but still bounded.
MAX_PENDING = 1 << 20


def encode_frame(fields: Iterable[tuple[str, str]]) -> bytes:
    """Serialise header fields as one AMI frame (CRLF lines, blank line at the end)."""
    return ("".join(f"{key}: {value}\r\n" for key, value in fields) + "\r\n").encode("utf-8")


def parse_lines(lines: Iterable[str]) -> Fields:
    """Turn `Key: Value` lines into ordered fields; lines without a colon are ignored."""
    fields: Fields = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            continue
        fields.append((key.strip(), value.lstrip(" \t")))
    return fields


class Frame:
    """One AMI frame: ordered fields with case-insensitive lookup, as Asterisk reads headers."""

    __slots__ = ("fields",)

    def __init__(self, fields: Fields) -> None:
        self.fields = fields

    @overload
    def get(self, key: str) -> str | None: ...

    @overload
    def get(self, key: str, default: str) -> str: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of a header (case-insensitive), or the default."""
        lowered = key.lower()
        for name, value in self.fields:
            if name.lower() == lowered:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated header (e.g. `Variable`)."""
        lowered = key.lower()
        return [value for name, value in self.fields if name.lower() == lowered]

    def as_dict(self) -> dict[str, str]:
        """Fields as a dict (first occurrence wins, original key spelling kept)."""
        out: dict[str, str] = {}
        for name, value in self.fields:
            out.setdefault(name, value)
        return out

    def __repr__(self) -> str:
        return f"Frame({self.fields!r})"


class FrameParser:
    """Incremental parser: feed bytes, get complete frames (accepts CRLF or bare LF)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes and return the frames they complete."""
        self._buffer += data
        frames: list[Frame] = []
        while True:
            end, skip = _frame_end(self._buffer)
            if end < 0:
                break
            raw, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            lines = raw.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
            fields = parse_lines(lines)
            if fields:
                frames.append(Frame(fields))
        if len(self._buffer) > MAX_PENDING:
            self._buffer = b""
        return frames


def _frame_end(buffer: bytes) -> tuple[int, int]:
    """Index of the first blank-line separator and its length, or (-1, 0)."""
    candidates = [(buffer.find(sep), len(sep)) for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n")]
    found = [(index, size) for index, size in candidates if index >= 0]
    if not found:
        return -1, 0
    return min(found)


def split_raw_frames(data: bytes) -> Iterator[bytes]:
    """Split a recorded CRLF byte stream into frames, each with its terminating blank line."""
    start = 0
    while start < len(data):
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            yield data[start:]
            return
        yield data[start : end + 4]
        start = end + 4


def fields_of(raw: bytes) -> Fields:
    """Fields of one raw frame."""
    return parse_lines(raw.decode("utf-8", "replace").split("\r\n"))
