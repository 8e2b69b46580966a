"""CSV cells that a spreadsheet will not run: customer-written text can start with "=" (CSV
injection, e.g. "=HYPERLINK(...)" as a name), so such cells get a leading apostrophe."""

from __future__ import annotations

import re

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Phone numbers and lists of them ("+4930123456; +4915123456789"): no function to call.
_PHONES = re.compile(r"[+0-9; ]+")


def defuse(cell: str) -> str:
    """The cell, with a leading "'" when a spreadsheet would read it as a formula; numbers such
    as "-3.5" and phone numbers or lists of them stay as they are."""
    if cell[:1] in _TRIGGERS and not _is_number(cell) and not _PHONES.fullmatch(cell):
        return "'" + cell
    return cell


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
