"""Raw message bytes -> ParsedEmail, with the standard library's modern policy, never crashing.

Everything from the outside is hostile until proven otherwise: each header is read raw, cut to a
bounded length and only then decoded; bodies are decoded by their declared charset with fall-backs;
NUL bytes, lone surrogates and control characters are removed (PostgreSQL refuses the first two);
the part tree is walked iteratively with caps on parts, depth and sizes; attachment names are
reduced to a safe base name. What could not be read is listed in `problems`, not raised.
Attachments are written content-addressed under <attachments_dir>/<sha256[:2]>/<sha256>/<name>.
"""

from __future__ import annotations

import contextlib
import hashlib
import html as html_lib
import mimetypes
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from hub.mail.bounce import BounceReport, detect_bounce


@dataclass(frozen=True)
class Limits:
    """Caps applied while parsing; defaults suit a support mailbox."""

    max_header_chars: int = 8_192  # per header value read
    max_subject_chars: int = 500
    max_body_chars: int = 1_000_000  # per stored body (text, html)
    max_parts: int = 500
    max_depth: int = 20
    max_attachments: int = 100
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_references: int = 50


@dataclass(frozen=True)
class Attachment:
    """One saved attachment: safe name, declared type, size, content hash and file path."""

    name: str
    content_type: str
    size: int
    sha256: str
    path: str
    inline: bool = False
    content_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape stored on the message row."""
        return {
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "path": self.path,
            "inline": self.inline,
            "content_id": self.content_id,
        }


@dataclass
class ParsedEmail:
    """What commhub keeps of one message."""

    message_id: str  # the key: real "<id@host>" or a content hash (see message_key)
    has_message_id: bool
    subject: str
    from_address: str
    from_name: str
    to: list[str]
    cc: list[str]
    reply_to: str | None
    date: datetime | None
    in_reply_to: str | None
    references: list[str]
    text: str
    html: str
    snippet: str
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bounce: BounceReport | None = None
    auto_submitted: str = ""
    size: int = 0


_MSGID = re.compile(r"<[^<>\s]{1,250}>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)
MAX_NAME = 150


def clean_text(value: str, fallback_charset: str | None = None) -> str:
    """Text safe to store: surrogate-escaped bytes decoded, NUL and control characters removed."""
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raw = value.encode("utf-8", "surrogateescape") if _escaped_only(value) else None
        if raw is None:
            value = value.encode("utf-8", "replace").decode("utf-8")
        else:
            value = _decode_best(raw, fallback_charset)
    return _CONTROL.sub("", value)


def _escaped_only(value: str) -> bool:
    return all(not ("\ud800" <= ch <= "\udfff") or "\udc80" <= ch <= "\udcff" for ch in value)


def _decode_best(raw: bytes, charset: str | None) -> str:
    """Bytes of unknown encoding: UTF-8, else the declared charset, else Windows-1252."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for candidate in (charset, "cp1252"):
        if candidate:
            with contextlib.suppress(LookupError, UnicodeDecodeError):
                return raw.decode(candidate)
    return raw.decode("latin-1")


def _one_line(value: str, limit: int) -> str:
    return _SPACES.sub(" ", value).strip()[:limit]


class _Headers:
    """Bounded, defensive access to a message's headers."""

    def __init__(self, msg: Message, limits: Limits, problems: list[str]) -> None:
        self.msg = msg
        self.limits = limits
        self.problems = problems
        self.charset = _declared_charset(msg)

    def raw(self, name: str) -> str | None:
        """The first header of that name, unparsed and cut to the limit."""
        wanted = name.lower()
        for key, value in self.msg.raw_items():
            if key.lower() == wanted:
                text = str(value)
                if len(text) > self.limits.max_header_chars:
                    self.problems.append(f"{name} header of {len(text)} characters cut")
                    text = text[: self.limits.max_header_chars]
                return text
        return None

    def decoded(self, name: str) -> Any:
        """The header parsed by the modern policy (decoded words, address lists), or None."""
        raw = self.raw(name)
        if raw is None:
            return None
        try:
            return policy.default.header_factory(name, raw)
        except Exception as err:  # the header parser has raised odd errors on hostile input
            self.problems.append(f"{name} header unreadable: {type(err).__name__}")
            return None

    def text(self, name: str, limit: int) -> str:
        """A header as one clean line of text."""
        value = self.decoded(name)
        if value is None:
            raw = self.raw(name)
            value = raw if raw is not None else ""
        return _one_line(clean_text(str(value), self.charset), limit)

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """(display name, lower-case address) pairs; junk entries are skipped."""
        value = self.decoded(name)
        out: list[tuple[str, str]] = []
        try:
            found: list[Address] = list(getattr(value, "addresses", ()) or ())
            pairs = [(a.display_name, a.addr_spec) for a in found]
        except Exception:
            raw = self.raw(name) or ""
            pairs = getaddresses([raw])
        for display, spec in pairs[:100]:
            spec = clean_text(spec, self.charset).strip().strip("<>").lower()
            if "@" in spec and " " not in spec and len(spec) <= 254:
                out.append((_one_line(clean_text(display, self.charset), 200), spec))
        return out


def _declared_charset(msg: Message) -> str | None:
    with contextlib.suppress(Exception):
        charset = msg.get_content_charset()
        if charset:
            return str(charset)
    return None


def message_key(message_id: str | None, raw: bytes) -> tuple[str, bool]:
    """The stored key for a message: its Message-ID when usable, else a hash of its bytes."""
    if message_id:
        found = _MSGID.search(message_id)
        if found and found.group(0).isascii():
            return found.group(0), True
    return f"<sha256.{hashlib.sha256(raw).hexdigest()}@commhub.invalid>", False


def _ids(value: str | None, limit: int) -> list[str]:
    if not value:
        return []
    return [m for m in _MSGID.findall(value) if m.isascii()][-limit:]


def _date(value: Any, problems: list[str]) -> datetime | None:
    """The Date header as aware UTC, or None when missing or absurd."""
    if value is None:
        return None
    try:
        when = getattr(value, "datetime", None) or parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.append("Date header unreadable")
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # "-0000": zone unknown, RFC 5322 says treat as UTC
    when = when.astimezone(UTC)
    if not datetime(1990, 1, 1, tzinfo=UTC) < when < datetime.now(UTC) + timedelta(days=1):
        problems.append(f"Date header out of range: {when.isoformat()}")
        return None
    return when


class _HtmlText(HTMLParser):
    """Visible text of an HTML body (for the snippet of HTML-only mail)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr", "h1", "h2", "h3"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str, limit: int = 20_000) -> str:
    """Visible text of (a prefix of) an HTML document."""
    parser = _HtmlText()
    try:
        parser.feed(markup[:limit])
        parser.close()
    except Exception:  # HTMLParser is lenient, but never let a snippet break a message
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", markup[:limit]))
    return "".join(parser.out)


def make_snippet(text: str, html: str, limit: int = 200) -> str:
    """The first words of the message, without quoted lines."""
    source = text if text.strip() else html_to_text(html)
    lines = [ln for ln in source[:20_000].splitlines() if not ln.lstrip().startswith(">")]
    return _one_line(" ".join(lines), limit)


def safe_filename(name: str | None, content_type: str, index: int) -> str:
    """A base name that is safe on any file system and in a Content-Disposition header."""
    text = clean_text(name or "")
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE_NAME.sub("_", text).strip().lstrip(".").strip()
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.lower() in _RESERVED_NAMES:
        stem = f"_{stem}"
    ext = ext[:16]
    stem = stem[: MAX_NAME - len(ext) - 1]
    text = f"{stem}.{ext}" if ext and stem else stem
    if not text or text in (".", ".."):
        guessed = mimetypes.guess_extension(content_type) or ".bin"
        text = f"attachment-{index}{guessed}"
    return text


def _store(data: bytes, name: str, root: Path) -> tuple[str, str]:
    """Write `data` once under root/<sha[:2]>/<sha>/<name>; returns (sha256, path)."""
    digest = hashlib.sha256(data).hexdigest()
    folder = root / digest[:2] / digest
    target = folder / name
    # `name` is a base name already; this guards the invariant against future edits.
    if target.resolve().parent != folder.resolve():
        raise ValueError(f"unsafe attachment name {name!r}")
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return digest, str(target)


def _decode_part(part: Message, problems: list[str]) -> str:
    """A text part's content as str, whatever its declared charset and encoding."""
    charset = _declared_charset(part)
    try:
        if isinstance(part, EmailMessage):
            content = part.get_content()
            if isinstance(content, str):
                return clean_text(content, charset)
    except (LookupError, UnicodeError, ValueError, AssertionError, KeyError, TypeError):
        problems.append(f"text part in charset {charset!r} decoded with fall-back")
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        problems.append("text part payload unreadable")
        return ""
    if not isinstance(payload, bytes):
        return ""
    return clean_text(_decode_best(payload, charset), charset)


def _walk(msg: Message, limits: Limits, problems: list[str]) -> list[tuple[Message, int]]:
    """Leaf parts in order, with their depth; message/* parts are leaves (kept as files)."""
    leaves: list[tuple[Message, int]] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            problems.append(f"more than {limits.max_parts} MIME parts: the rest ignored")
            break
        payload: Any = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            if depth >= limits.max_depth:
                problems.append(f"MIME nesting deeper than {limits.max_depth}: ignored below")
                continue
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((c, depth + 1) for c in reversed(children))
        else:
            leaves.append((part, depth))
    return leaves


def _part_bytes(part: Message) -> bytes | None:
    if part.get_content_maintype() == "message":
        payload: Any = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            return inner.as_bytes(policy=policy.default.clone(linesep="\r\n"))
        return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else None
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else None


def parse_email(
    raw: bytes,
    *,
    attachments_dir: Path | None = None,
    limits: Limits | None = None,
    headers_only: bool = False,
) -> ParsedEmail:
    """Parse one message. Never raises for bad input; what went wrong is in `problems`.

    Attachments are saved under `attachments_dir` (when given; else only described)."""
    limits = limits or Limits()
    problems: list[str] = []
    try:
        msg = message_from_bytes(raw, policy=policy.default)
    except Exception as err:  # RecursionError included
        # The feedparser recurses once per nesting level: thousands of nested multiparts end
        # here. The header alone is still worth logging.
        problems.append(f"MIME structure unreadable ({type(err).__name__}): body not read")
        msg = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        headers_only = True
    for defect in list(getattr(msg, "defects", []))[:10]:
        problems.append(f"defect: {type(defect).__name__}")
    h = _Headers(msg, limits, problems)
    message_id, has_id = message_key(h.raw("Message-ID"), raw)
    if not has_id:
        problems.append("no usable Message-ID: keyed by content hash")
    senders = h.addresses("From") or h.addresses("Sender")
    from_name, from_address = senders[0] if senders else ("", "")
    if not from_address:
        problems.append("no usable From address")
    reply_to = h.addresses("Reply-To")
    subject = h.text("Subject", limits.max_subject_chars)
    refs = _ids(h.raw("References"), limits.max_references)
    in_reply = _ids(h.raw("In-Reply-To"), 1)
    parsed = ParsedEmail(
        message_id=message_id,
        has_message_id=has_id,
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=[a for _, a in h.addresses("To")],
        cc=[a for _, a in h.addresses("Cc")],
        reply_to=reply_to[0][1] if reply_to else None,
        date=_date(h.decoded("Date"), problems),
        in_reply_to=in_reply[0] if in_reply else None,
        references=refs,
        text="",
        html="",
        snippet="",
        problems=problems,
        auto_submitted=h.text("Auto-Submitted", 64).lower(),
        size=len(raw),
    )
    if headers_only:
        problems.append(
            f"message of {len(raw)} bytes or more over the size limit: body not fetched"
        )
        return parsed
    try:
        parsed.bounce = detect_bounce(msg, from_address, subject)
    except Exception as err:  # a broken report is still not a crash
        problems.append(f"bounce report unreadable: {type(err).__name__}")
    try:
        _bodies_and_files(parsed, msg, limits, attachments_dir)
    except RecursionError:
        problems.append("MIME structure too deep to read")
    parsed.snippet = make_snippet(parsed.text, parsed.html)
    return parsed


def _bodies_and_files(parsed: ParsedEmail, msg: Message, limits: Limits, root: Path | None) -> None:
    problems = parsed.problems
    texts: list[str] = []
    htmls: list[str] = []
    index = 0
    for part, _depth in _walk(msg, limits, problems):
        try:
            ctype = part.get_content_type()
            disposition = part.get_content_disposition()
            filename = part.get_filename()
        except Exception:
            problems.append("part headers unreadable: part skipped")
            continue
        if part.get_content_maintype() == "multipart":
            # Declared multipart but no boundary found: the stdlib leaves the body as one string.
            # Showing it as text beats hiding it in a file nobody opens.
            problems.append("multipart body without its boundary: kept as text")
            payload: Any = part.get_payload()
            if isinstance(payload, str):
                raw = payload.encode("utf-8", "surrogateescape")
                texts.append(clean_text(_decode_best(raw, _declared_charset(part))))
            continue
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            (texts if ctype == "text/plain" else htmls).append(_decode_part(part, problems))
            continue
        if parsed.bounce is not None:
            continue  # the returned copy of our own mail is not worth a file
        if ctype in ("message/delivery-status", "message/disposition-notification"):
            continue
        index += 1
        if len(parsed.attachments) >= limits.max_attachments:
            problems.append(f"more than {limits.max_attachments} attachments: the rest dropped")
            break
        name = safe_filename(filename, ctype, index)
        try:
            data = _part_bytes(part)
        except Exception as err:
            problems.append(f"attachment {name!r} unreadable: {type(err).__name__}")
            continue
        if data is None:
            problems.append(f"attachment {name!r} has no content")
            continue
        if len(data) > limits.max_attachment_bytes:
            problems.append(f"attachment {name!r} of {len(data)} bytes over the limit: dropped")
            continue
        cid = part.get("Content-ID")
        if root is not None:
            digest, path = _store(data, name, root)
        else:
            digest, path = hashlib.sha256(data).hexdigest(), ""
        parsed.attachments.append(
            Attachment(
                name=name,
                content_type=ctype[:100],
                size=len(data),
                sha256=digest,
                path=path,
                inline=disposition == "inline",
                content_id=_one_line(str(cid), 200) if cid else None,
            )
        )
    text = "\n".join(t for t in texts if t).replace("\r\n", "\n").replace("\r", "\n")
    html = "\n".join(h for h in htmls if h)
    for label, value in (("text", text), ("html", html)):
        if len(value) > limits.max_body_chars:
            problems.append(f"{label} body of {len(value)} characters cut")
    parsed.text = text[: limits.max_body_chars]
    parsed.html = html[: limits.max_body_chars]
