"""Pure helpers for IMAP wire details aioimaplib leaves to us: responses, UIDs, mailbox names."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_SIZE = re.compile(rb"^\d+ FETCH \(.*?\bUID (\d+)\b.*?\bRFC822\.SIZE (\d+)\b")
_FETCH_SIZE_REV = re.compile(rb"^\d+ FETCH \(.*?\bRFC822\.SIZE (\d+)\b.*?\bUID (\d+)\b")
_FETCH_UID = re.compile(rb"^\d+ FETCH \(.*?\bUID (\d+)\b")
_LITERAL = re.compile(rb"\{(\d+)\}$")


def uidvalidity(lines: Sequence[bytes | bytearray]) -> int | None:
    """UIDVALIDITY from a SELECT response."""
    for line in lines:
        found = _UIDVALIDITY.search(bytes(line))
        if found:
            return int(found.group(1))
    return None


def uidnext(lines: Sequence[bytes | bytearray]) -> int | None:
    """UIDNEXT from a SELECT response (None when the server does not say)."""
    for line in lines:
        found = _UIDNEXT.search(bytes(line))
        if found:
            return int(found.group(1))
    return None


def uid_sizes(lines: Sequence[bytes | bytearray], after: int) -> list[tuple[int, int]]:
    """(uid, size) pairs above `after`, ascending, from a "UID FETCH n:* (UID RFC822.SIZE)".

    "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8), so the
    filter on `after` is what keeps an old message from coming back."""
    out: dict[int, int] = {}
    for line in lines:
        if isinstance(line, bytearray):
            continue
        found = _FETCH_SIZE.match(line)
        if found:
            uid, size = int(found.group(1)), int(found.group(2))
        else:
            rev = _FETCH_SIZE_REV.match(line)
            if not rev:
                continue
            size, uid = int(rev.group(1)), int(rev.group(2))
        if uid > after:
            out[uid] = size
    return sorted(out.items())


def literal_for_uid(lines: Sequence[bytes | bytearray], uid: int) -> bytes | None:
    """The literal (message bytes) that follows the FETCH line of `uid`, if present.

    Other untagged FETCH lines (flag changes by another client) may be mixed in: only a FETCH
    line naming this UID and announcing a literal counts."""
    for index, line in enumerate(lines):
        if isinstance(line, bytearray):
            continue
        found = _FETCH_UID.match(line)
        if not found or int(found.group(1)) != uid or not _LITERAL.search(line):
            continue
        if index + 1 < len(lines) and isinstance(lines[index + 1], bytearray):
            return bytes(lines[index + 1])
    return None


def has_new_mail(push: Sequence[bytes | bytearray]) -> bool:
    """True when an IDLE push announces messages (EXISTS), not just flags or expunges."""
    return any(bytes(line).rstrip().endswith(b"EXISTS") for line in push)


def is_bye(push: Sequence[bytes | bytearray]) -> bool:
    """True when the server said BYE (it is about to close the connection)."""
    return any(bytes(line).lstrip(b"* ").upper().startswith(b"BYE") for line in push)


def encode_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    text = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
