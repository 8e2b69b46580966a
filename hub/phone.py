"""Phone numbers: normalise what people type and what PBXes send to E.164."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import (
    NumberParseException,
    PhoneNumberFormat,
    PhoneNumberType,
    ValidationResult,
)

from hub.errors import ValidationError

# What a PBX or a user writes when there is no number to show.
WITHHELD = frozenset({"", "anonymous", "<unknown>", "unknown", "restricted", "private", "withheld"})
_INTL_PREFIX = re.compile(r"^\s*(00|\+)")


@dataclass(frozen=True)
class PhoneNumber:
    """A parsed number: E.164 text and whether it looks like a mobile (SMS-capable)."""

    e164: str
    is_mobile: bool


def parse_phone(raw: str, default_region: str) -> PhoneNumber:
    """Parse a number as written by a person or a PBX; raises ValidationError saying why not."""
    text = (raw or "").strip()
    if text.lower() in WITHHELD:
        raise ValidationError("no number (withheld or empty)", field="phone")
    if len(text) > 40:
        raise ValidationError(f"not a phone number: {text[:40]!r}…", field="phone")
    # "0049 30 …" is international; phonenumbers handles the region's own exit code only.
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, default_region.upper())
    except NumberParseException as err:
        raise ValidationError(f"not a phone number: {raw!r} ({err})", field="phone") from err
    # IS_POSSIBLE_LOCAL_ONLY ("12", "110", an extension "201") is not a dialable E.164 number.
    if phonenumbers.is_possible_number_with_reason(parsed) != ValidationResult.IS_POSSIBLE:
        raise ValidationError(f"not a possible phone number: {raw!r}", field="phone")
    kind = phonenumbers.number_type(parsed)
    return PhoneNumber(
        e164=phonenumbers.format_number(parsed, PhoneNumberFormat.E164),
        is_mobile=kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE),
    )


def normalize_phone(raw: str, default_region: str) -> str:
    """E.164 text of a number, or ValidationError."""
    return parse_phone(raw, default_region).e164


def normalize_caller(raw: str | None, default_region: str) -> str | None:
    """A caller id from the PBX as E.164, or None when withheld, internal or junk (never a guess)."""
    if raw is None:
        return None
    try:
        return normalize_phone(raw, default_region)
    except ValidationError:
        return None


_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")


def normalize_email(raw: str) -> str:
    """Lower-cased, trimmed email address, or ValidationError."""
    text = (raw or "").strip().lower()
    if not _EMAIL.match(text) or len(text) > 254:
        raise ValidationError(f"not an email address: {raw!r}", field="email")
    return text
