"""Render an OutgoingEmail into RFC 5322 bytes, cheaply (no email.message tree per message).

The stdlib EmailMessage + generator costs several hundred microseconds per message, which is as
much as the SMTP round trips themselves on loopback. Outgoing mail has a fixed shape here (one
text part, one HTML part, or both as multipart/alternative), so it is written directly: headers
are encoded with email.header/email.utils only when they are not plain ASCII, bodies are 7bit
when they can be and quoted-printable (binascii, in C) otherwise.
"""

from __future__ import annotations

import binascii
import itertools
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, getaddresses
from functools import lru_cache

from hub.errors import ValidationError
from hub.messaging.ports import OutgoingEmail

from .const import FOLD_AT, MAX_LINE

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
# Headers the composer owns; callers may not override them through `headers`.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "in-reply-to",
        "references",
        "reply-to",
    }
)


@dataclass(frozen=True)
class Address:
    """One mailbox: display name (may be empty) and ASCII addr-spec."""

    name: str
    addr: str

    @property
    def domain(self) -> str:
        """The part after the @."""
        return self.addr.rpartition("@")[2]

    def render(self) -> str:
        """The header form, with an RFC 2047 encoded name when it is not ASCII."""
        return _formataddr(self.name, self.addr) if self.name else self.addr


@lru_cache(maxsize=64)
def _formataddr(name: str, addr: str) -> str:
    return formataddr((name, addr), charset="utf-8")


def _no_newlines(value: str, what: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValidationError(f"{what} must not contain line breaks or NUL", field=what)
    return value


_PLAIN_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")


def parse_address(value: str, what: str) -> Address:
    """Exactly one address from 'a@b.example' or 'Name <a@b.example>'; ValidationError otherwise."""
    if _PLAIN_ADDRESS.match(value):
        # The common case (a bare ASCII address) without the general parser's cost.
        return Address("", value)
    return _parse_address(value, what)


@lru_cache(maxsize=64)
def _parse_address(value: str, what: str) -> Address:
    """The general case; cached because the same From is parsed for every message."""
    _no_newlines(value, what)
    found = [(n, a) for n, a in getaddresses([value]) if a]
    if len(found) != 1:
        raise ValidationError(
            f"{what} must be exactly one email address, got {value!r}", field=what
        )
    name, addr = found[0]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or " " in addr:
        raise ValidationError(f"{what} is not an email address: {value!r}", field=what)
    if not local.isascii():
        # SMTPUTF8 local parts are rare and aiosmtplib only sends them when the server agrees.
        raise ValidationError(
            f"{what}: non-ASCII local part is not supported: {addr!r}", field=what
        )
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as err:
            raise ValidationError(f"{what}: bad domain in {addr!r}", field=what) from err
    return Address(name.strip(), f"{local}@{domain}")


def _header(name: str, value: str) -> str:
    """'Name: value' CRLF, RFC 2047-encoded and folded when needed."""
    if value.isascii():
        if len(name) + 2 + len(value) <= FOLD_AT:
            return f"{name}: {value}\r\n"
        return _fold_ascii(name, value)
    encoded = Header(value, "utf-8", header_name=name, maxlinelen=FOLD_AT).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n"


def _fold_ascii(name: str, value: str) -> str:
    """Fold a long ASCII header at spaces (RFC 5322 2.2.3: unfolding removes each CRLF before a
    space, giving the value back). email.header.Header does the same at ~30x the cost, and every
    campaign mail has a long List-Unsubscribe."""
    lines = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > FOLD_AT and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """RFC 5322 date of now in UTC, cached per second (formatting is not free)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


# 64 random bits per process, then time and a counter: unique across processes and restarts
# without a system call per message (uuid4 reads the OS random source every time).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def _new_boundary() -> str:
    # Unique, not secret (the parts are checked not to contain it): a random process prefix and
    # a counter, because os.urandom per message costs as much as the rest of the header block.
    return f"=_{_ID_PREFIX}{next(_ID_COUNTER):x}"


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID for a message sent from `domain`."""
    return (
        f"<{time.time_ns() // 1000:x}.{next(_ID_COUNTER):x}.{_ID_PREFIX}@{domain or 'localhost'}>"
    )


def _body(text: str, subtype: str) -> bytes:
    """One text/<subtype> part: headers + CRLF body, 7bit if possible else quoted-printable."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if normalised.isascii() and all(len(line) <= MAX_LINE for line in normalised.split("\n")):
        body = normalised.replace("\n", "\r\n").encode("ascii")
        cte = "7bit"
    else:
        raw = normalised.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
        body = binascii.b2a_qp(raw, istext=True)
        cte = "quoted-printable"
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    head = (
        f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True)
class Rendered:
    """A message ready for SMTP: envelope sender, recipient, bytes, and its Message-ID."""

    envelope_from: str
    recipient: str
    message_id: str
    data: bytes


def render(message: OutgoingEmail, default_from: str) -> Rendered:
    """Turn an OutgoingEmail into bytes; ValidationError on a header that cannot be sent."""
    sender = parse_address(message.from_address or default_from, "from_address")
    to = parse_address(message.to, "to")
    if message.message_id:
        message_id = _no_newlines(message.message_id.strip(), "message_id")
        if not _MESSAGE_ID.match(message_id):
            raise ValidationError(
                f"message_id must look like <id@domain>, got {message_id!r}", field="message_id"
            )
    else:
        message_id = new_message_id(sender.domain)
    subject = _no_newlines(message.subject or "", "subject")

    out = [
        _header("From", sender.render()),
        _header("To", to.render()),
        _header("Subject", subject),
        f"Date: {_date_now()}\r\n",
        f"Message-ID: {message_id}\r\n",
    ]
    if message.reply_to:
        out.append(_header("Reply-To", parse_address(message.reply_to, "reply_to").render()))
    if message.in_reply_to:
        in_reply_to = _no_newlines(message.in_reply_to.strip(), "in_reply_to")
        out.append(f"In-Reply-To: {in_reply_to}\r\n")
    if message.references:
        refs = [_no_newlines(r.strip(), "references") for r in message.references if r.strip()]
        # One reference per folded line keeps every line short whatever the thread length.
        out.append("References: " + "\r\n ".join(refs) + "\r\n")
    out.extend(_extra_headers(message.headers))
    out.append("MIME-Version: 1.0\r\n")

    head = "".join(out).encode("ascii")
    text, html = message.text, message.html
    if text is not None and html is not None:
        parts = (_body(text, "plain"), _body(html, "html"))
        boundary = _new_boundary()
        # "=_" never occurs in quoted-printable output; 7bit parts are checked to be sure.
        while any(boundary.encode() in p for p in parts):  # pragma: no cover
            boundary = _new_boundary()
        b = boundary.encode("ascii")
        data = b"".join(
            (
                head,
                b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n',
                b"--" + b + b"\r\n",
                parts[0],
                # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1): one more
                # keeps the part's own final line break.
                b"\r\n--" + b + b"\r\n",
                parts[1],
                b"\r\n--" + b + b"--\r\n",
            )
        )
    elif html is not None:
        data = head + _body(html, "html")
    else:
        data = head + _body(text or "", "plain")
    return Rendered(sender.addr, to.addr, message_id, data)


def _extra_headers(headers: Mapping[str, str]) -> list[str]:
    out = []
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValidationError(f"bad header name {name!r}", field="headers")
        if name.lower() in _RESERVED:
            raise ValidationError(f"header {name} is set by the sender itself", field="headers")
        out.append(_header(name, _no_newlines(str(value), f"header {name}")))
    return out
