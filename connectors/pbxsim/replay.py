"""Recorded AMI traffic turned into timed byte chunks for replay.

Two formats: a raw `.ami` byte stream as Asterisk sent it (optionally with a `.meta.json` beside
it holding per-read timings), and a cacofonisk JSON list of event objects.
"""

from __future__ import annotations

import json
from pathlib import Path

from connectors.pbxsim.frames import encode_frame, fields_of

Chunk = tuple[float, bytes]

META_CHUNKS_KEY = "chunks_[t_s,offset,len]"


def load_trace(path: Path, *, timed: bool = False) -> list[Chunk]:
    """Chunks (seconds after the start, bytes) to send after the client's login."""
    if path.suffix == ".json":
        return [(0.0, data) for data in render_json_events(path)]
    data = path.read_bytes()
    skip = login_prefix_length(data)
    if timed:
        chunks = _timed_chunks(path, data, skip)
        if chunks:
            return chunks
    return [(0.0, data[skip:])]


def login_prefix_length(data: bytes) -> int:
    """Bytes of the recorded banner and login response, which the server sends itself."""
    offset = 0
    if data.startswith(b"Asterisk Call Manager/"):
        offset = data.find(b"\r\n") + 2
    end = data.find(b"\r\n\r\n", offset)
    if end >= 0:
        first = dict(fields_of(data[offset : end + 4]))
        if "Response" in first and "Authentication" in first.get("Message", ""):
            offset = end + 4
    return offset


def _timed_chunks(path: Path, data: bytes, skip: int) -> list[Chunk]:
    meta_path = path.with_name(path.name.removesuffix(".ami") + ".meta.json")
    if not meta_path.exists():
        return []
    meta = json.loads(meta_path.read_text())
    chunks: list[Chunk] = []
    origin: float | None = None
    for stamp, offset, length in meta.get(META_CHUNKS_KEY, []):
        begin, end = max(int(offset), skip), int(offset) + int(length)
        if end <= begin:
            continue
        if origin is None:
            origin = float(stamp)
        chunks.append((float(stamp) - origin, data[begin:end]))
    covered = sum(len(chunk) for _, chunk in chunks)
    if covered != len(data) - skip:
        # Timings that do not cover the file are not worth trusting: send it whole.
        return []
    return chunks


def render_json_events(path: Path) -> list[bytes]:
    """Each recorded event as an AMI frame: Event and Privilege first, `content` dropped."""
    events = json.loads(path.read_text())
    frames: list[bytes] = []
    for event in events:
        head = [(key, str(event[key])) for key in ("Event", "Privilege") if key in event]
        rest = [
            (key, str(value))
            for key, value in event.items()
            if key not in ("Event", "Privilege", "content")
        ]
        frames.append(encode_frame(head + rest))
    return frames
