"""Phone numbers and email addresses as people type them, normalised (or refused)."""

from __future__ import annotations

import pytest

from hub.errors import ValidationError
from hub.phone import normalize_caller, normalize_email, normalize_phone, parse_phone

# (as written, default region, E.164, looks like a mobile)
GOOD = [
    ("030 123456", "DE", "+4930123456", False),  # national, Berlin
    ("+49 (0)30 12 34 56", "DE", "+4930123456", False),  # the German "(0)" habit
    ("0049 30 123456", "DE", "+4930123456", False),  # 00 international prefix
    ("(030) 123-456", "DE", "+4930123456", False),  # parentheses and a dash
    ("030/123456", "DE", "+4930123456", False),
    ("+49-30-123456", "DE", "+4930123456", False),
    ("  030 123456  ", "DE", "+4930123456", False),
    ("tel:+4930123456", "DE", "+4930123456", False),
    ("+1 415 555 0100", "DE", "+14155550100", True),  # foreign, given in full
    ("+1 (415) 555-0100", "DE", "+14155550100", True),
    ("0151 23456789", "DE", "+4915123456789", True),  # German mobile
    ("+49 151 23456789", "DE", "+4915123456789", True),
    ("0043 1 5123456", "DE", "+4315123456", False),  # Vienna via 00
    ("020 7946 0958", "GB", "+442079460958", False),  # national in another default region
    ("(415) 555-0100", "US", "+14155550100", True),
]

JUNK = ["abc", "12", "", "   ", "anonymous", "Anonymous", "<unknown>", "+999 1234", "201", "+49 1"]


@pytest.mark.parametrize(("raw", "region", "e164", "mobile"), GOOD)
def test_real_world_formats(raw, region, e164, mobile):
    number = parse_phone(raw, region)
    assert number.e164 == e164
    assert number.is_mobile is mobile
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize("raw", JUNK)
def test_junk_is_refused_with_a_reason(raw):
    with pytest.raises(ValidationError) as caught:
        parse_phone(raw, "DE")
    assert caught.value.field == "phone"
    assert str(caught.value)  # says why


def test_overlong_input_is_refused():
    with pytest.raises(ValidationError, match="not a phone number"):
        parse_phone("0" * 41, "DE")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+4930123456", "+4930123456"),
        ("030123456", "+4930123456"),
        (None, None),
        ("anonymous", None),
        ("", None),
        ("201", None),  # an internal extension is not a guessable outside number
        ("abc", None),
    ],
)
def test_caller_ids_from_the_pbx(raw, expected):
    assert normalize_caller(raw, "DE") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Max.Mustermann@Example.COM", "max.mustermann@example.com"),
        ("  info@firma.de ", "info@firma.de"),
        ("a+tag@sub.example.org", "a+tag@sub.example.org"),
    ],
)
def test_emails_are_lower_cased_and_trimmed(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "no-at-sign", "two@@example.com", "a@b", "Max <max@example.com>", "a b@example.com"]
)
def test_bad_emails_are_refused(raw):
    with pytest.raises(ValidationError) as caught:
        normalize_email(raw)
    assert caught.value.field == "email"
