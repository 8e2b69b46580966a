"""Read recorded AMI traffic (raw `.ami` byte streams, cacofonisk JSON) into event dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

BANNER_PREFIX = b"Asterisk Call Manager/"
_FRAME_END = b"\r\n\r\n"


def _parse_frame(block: bytes) -> dict[str, str]:
    """Turn one frame (header lines without the blank line) into a dict; first value of a key wins."""
    fields: dict[str, str] = {}
    for raw in block.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = raw.partition(":")
        if not sep or not key:
            continue
        # "Key: value" is the norm; "Key:" with nothing after it is an empty value.
        if value.startswith(" "):
            value = value[1:]
        fields.setdefault(key, value)
    return fields


class AmiStreamParser:
    """Incremental AMI frame parser: feed bytes as they arrive, get complete frames back."""

    def __init__(self, *, include_responses: bool = False) -> None:
        """Events only by default; `include_responses` keeps action responses too."""
        self._buf = b""
        self._banner_pending = True
        self.banner: str | None = None
        self._include_responses = include_responses

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Add bytes; return the frames they completed, in order."""
        self._buf += data
        if self._banner_pending:
            if len(self._buf) < len(BANNER_PREFIX) and BANNER_PREFIX.startswith(self._buf):
                return []
            self._banner_pending = False
            if self._buf.startswith(BANNER_PREFIX):
                line_end = self._buf.find(b"\r\n")
                if line_end < 0:
                    self._banner_pending = True
                    return []
                self.banner = self._buf[:line_end].decode("utf-8", errors="replace")
                self._buf = self._buf[line_end + 2 :]
        out: list[dict[str, str]] = []
        start = 0
        while True:
            end = self._buf.find(_FRAME_END, start)
            if end < 0:
                break
            frame = _parse_frame(self._buf[start:end])
            start = end + len(_FRAME_END)
            if not frame:
                continue
            if "Event" in frame or (self._include_responses and "Response" in frame):
                out.append(frame)
        self._buf = self._buf[start:]
        return out


def parse_ami_stream(data: bytes, *, include_responses: bool = False) -> list[dict[str, str]]:
    """All events of a raw AMI byte stream (banner and, by default, action responses skipped)."""
    return AmiStreamParser(include_responses=include_responses).feed(data)


def read_ami_trace(path: Path | str) -> list[dict[str, str]]:
    """The events of a recorded `.ami` file."""
    return parse_ami_stream(Path(path).read_bytes())


def read_timed_ami_trace(
    ami_path: Path | str, meta_path: Path | str | None = None
) -> list[tuple[float, dict[str, str]]]:
    """Events of a `.ami` file with the offset (s) at which their last byte was read.

    Uses the `chunks_[t_s,offset,len]` list of the scenario's `.meta.json` (by default the file
    beside the trace), so a replay can reproduce the recorded timing.
    """
    ami = Path(ami_path)
    meta = Path(meta_path) if meta_path is not None else ami.with_suffix(".meta.json")
    data = ami.read_bytes()
    chunks = json.loads(meta.read_text(encoding="utf-8"))["chunks_[t_s,offset,len]"]
    parser = AmiStreamParser()
    timed: list[tuple[float, dict[str, str]]] = []
    for t_s, offset, length in chunks:
        for event in parser.feed(data[int(offset) : int(offset) + int(length)]):
            timed.append((float(t_s), event))
    return timed


def read_cacofonisk_trace(path: Path | str) -> list[dict[str, str]]:
    """The events of a cacofonisk JSON fixture, without its non-AMI `content` key."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of events")
    events: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        events.append({str(k): str(v) for k, v in item.items() if k != "content"})
    return events


def encode_ami_event(event: Mapping[str, str]) -> bytes:
    """One event as it travels on the wire: `Key: Value` lines, CRLF, a blank line at the end."""
    lines = [f"{key}: {value}" for key, value in event.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def encode_ami_events(events: Iterable[Mapping[str, str]]) -> Iterator[bytes]:
    """Encode several events, one frame each."""
    for event in events:
        yield encode_ami_event(event)
