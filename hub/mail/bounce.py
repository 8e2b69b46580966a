"""Recognise bounce reports: RFC 3464 DSNs (multipart/report) and the common non-standard kinds.

A bounce is never customer mail: hub.mail.inbound links it to the message it bounces (by the
original's Message-ID), marks that one bounced and suppresses the failed address."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from typing import Any

_MSGID = re.compile(r"<[^<>\s]{1,250}>")
_MSGID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_ADDRESS = re.compile(r"[^\s<>\"';,()]+@[^\s<>\"';,()]+\.[^\s<>\"';,()]+")
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster", "mail-daemon", "mailer_daemon")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed)|returned mail|"
    r"failure notice|mail delivery (failed|system)|non[- ]?delivery|rejected:",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(r"delay|warning|will retry", re.IGNORECASE)


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient block of a report: address, action, status (e.g. 5.1.1) and diagnostic."""

    address: str
    action: str
    status: str
    diagnostic: str = ""

    @property
    def permanent(self) -> bool:
        """A final failure (so the address should not be mailed again)."""
        return self.action == "failed" and not self.status.startswith("4")


@dataclass(frozen=True)
class BounceReport:
    """What a bounce says: which message it returns and which recipients failed how."""

    kind: str  # dsn | heuristic
    original_message_id: str | None
    recipients: tuple[FailedRecipient, ...]
    # A final failure (not a "delayed, will retry" warning): the original counts as bounced.
    final: bool = True

    @property
    def permanent_recipients(self) -> list[FailedRecipient]:
        """Recipients that failed for good."""
        return [r for r in self.recipients if r.permanent]

    @property
    def summary(self) -> str:
        """One line for the log and the bounced message's detail."""
        parts = [
            f"{r.address}: {r.action} {r.status} {r.diagnostic}".strip() for r in self.recipients
        ]
        return "; ".join(parts)[:500] or f"{self.kind} bounce without recipient details"


def _text(part: Message) -> str:
    try:
        if isinstance(part, EmailMessage):
            content = part.get_content()
            if isinstance(content, str):
                return content
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload.decode("utf-8", "replace")
    except (LookupError, ValueError, TypeError, AttributeError, KeyError):
        return ""
    return ""


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    return " ".join(str(value).split())[:300] if value is not None else ""


def _typed_value(value: str) -> str:
    """'rfc822; user@example.org' -> 'user@example.org'."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (stdlib parses them as a list)."""
    payload: Any = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return payload
    # message/global-delivery-status and odd generators: parse the text ourselves.
    text = payload if isinstance(payload, str) else _text(part)
    blocks = re.split(r"\r?\n\s*\r?\n", text.strip())
    parser = HeaderParser()
    return [parser.parsestr(b + "\n") for b in blocks if b.strip()]


def _original_id(part: Message) -> str | None:
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        payload: Any = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            found = _MSGID.search(str(inner.get("Message-ID", "")))
            return found.group(0) if found else None
        return None
    found = _MSGID_LINE.search(_text(part))
    return found.group(1) if found else None


def _parts(msg: Message, limit: int = 50) -> list[Message]:
    """The direct and nested parts of a report, without descending into the returned message."""
    out: list[Message] = []
    stack: list[Message] = [msg]
    while stack and len(out) < limit:
        part = stack.pop(0)
        out.append(part)
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            payload: Any = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
    return out


def detect_bounce(msg: Message, from_address: str, subject: str) -> BounceReport | None:
    """A BounceReport when `msg` is a delivery report or looks like a bounce; else None."""
    parts = _parts(msg)
    status_parts = [
        p
        for p in parts
        if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    ]
    original = next(
        (
            found
            for p in parts
            if p.get_content_type()
            in ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
            for found in [_original_id(p)]
            if found
        ),
        None,
    )
    if status_parts:
        recipients = []
        for block in _status_blocks(status_parts[0])[:100]:
            final = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
            if not final:
                continue
            recipients.append(
                FailedRecipient(
                    address=_typed_value(final).strip("<>").lower(),
                    action=_field(block, "Action").lower(),
                    status=_field(block, "Status"),
                    diagnostic=_typed_value(_field(block, "Diagnostic-Code"))[:200],
                )
            )
        return BounceReport(
            "dsn", original, tuple(recipients), any(r.permanent for r in recipients)
        )
    if msg.get_content_type() == "multipart/report":
        # A report of another kind (e.g. disposition-notification, a read receipt): not a bounce.
        return None
    local = from_address.partition("@")[0].lower()
    if local not in _BOUNCE_SENDERS and str(msg.get("Return-Path", "")).strip() != "<>":
        return None
    if not _BOUNCE_SUBJECT.search(subject):
        return None
    return _heuristic(msg, parts, original, subject)


def _heuristic(
    msg: Message, parts: list[Message], original: str | None, subject: str
) -> BounceReport:
    """A plain-text bounce (qmail, old Exchange, Exim without DSN): dig what we can."""
    body = "\n".join(_text(p) for p in parts if p.get_content_maintype() == "text")[:200_000]
    if original is None:
        found = _MSGID_LINE.search(body)
        original = found.group(1) if found else None
    delayed = bool(_DELAY_SUBJECT.search(subject))
    status_match = _STATUS.search(body)
    status = status_match.group(0) if status_match else ("4.0.0" if delayed else "5.0.0")
    action = "delayed" if delayed or status.startswith("4") else "failed"
    addresses = [a.strip() for a in str(msg.get("X-Failed-Recipients", "")).split(",") if a.strip()]
    if not addresses:
        addresses = [
            a for a in dict.fromkeys(_ADDRESS.findall(body[:20_000])) if "mailer-daemon" not in a
        ][:1]
    recipients = tuple(FailedRecipient(a.lower(), action, status) for a in addresses[:20])
    return BounceReport("heuristic", original, recipients, action == "failed")
