"""SMS text: GSM 03.38 7-bit versus UCS-2, segment counting with concatenation, cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["gsm7", "ucs2"]

# GSM 03.38 default alphabet, in code order (0x00-0x7F). 0x1B is the escape to the extension
# table, so it stands for no character here.
_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
ESCAPE: Final = 0x1B
GSM_BASIC: Final[dict[str, int]] = {ch: code for code, ch in enumerate(_BASIC) if code != ESCAPE}
# The extension table: each costs two septets (escape + code) on the air.
GSM_EXTENSION: Final[dict[str, int]] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_BASIC_BY_CODE: Final = {code: ch for ch, code in GSM_BASIC.items()}
_EXT_BY_CODE: Final = {code: ch for ch, code in GSM_EXTENSION.items()}

# Units per message: one part alone, or each part of a concatenated message (the 6-octet
# concatenation header takes 7 septets, or 3 UCS-2 units).
SINGLE: Final[dict[Encoding, int]] = {"gsm7": 160, "ucs2": 70}
MULTI: Final[dict[Encoding, int]] = {"gsm7": 153, "ucs2": 67}
# A concatenated message has at most 255 parts (the UDH counter is one octet).
MAX_PARTS: Final = 255


@dataclass(frozen=True)
class TextInfo:
    """What a text costs on the air: encoding, units, segments, cost (shown before sending)."""

    encoding: Encoding
    characters: int  # as a person counts them (code points)
    units: int  # septets (gsm7, extension chars count 2) or UTF-16 code units (ucs2)
    segments: int
    per_segment: int  # 160/153 (gsm7) or 70/67 (ucs2)
    remaining: int  # units still free in the last segment
    cost: float
    non_gsm: tuple[str, ...]  # the characters that forced UCS-2, in order of first appearance

    def as_dict(self) -> dict[str, object]:
        """JSON shape (API responses, the template editor)."""
        return {
            "encoding": self.encoding,
            "characters": self.characters,
            "units": self.units,
            "segments": self.segments,
            "per_segment": self.per_segment,
            "remaining": self.remaining,
            "cost": self.cost,
            "non_gsm": list(self.non_gsm),
        }


def gsm_units(ch: str) -> int:
    """Septets one character takes in GSM 7-bit: 1, 2 (extension table) or 0 (not encodable)."""
    if ch in GSM_BASIC:
        return 1
    if ch in GSM_EXTENSION:
        return 2
    return 0


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """Characters of the text that GSM 03.38 cannot carry (distinct, first appearance first)."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM_BASIC and ch not in GSM_EXTENSION:
            seen.setdefault(ch, None)
    return tuple(seen)


def detect_encoding(text: str) -> Encoding:
    """gsm7 when every character is in the GSM basic or extension table, else ucs2."""
    return "ucs2" if non_gsm_characters(text) else "gsm7"


def ucs2_units(ch: str) -> int:
    """UTF-16 code units of one code point: 2 for a surrogate pair (most emoji), else 1."""
    return 2 if ord(ch) > 0xFFFF else 1


def _units(ch: str, encoding: Encoding) -> int:
    return gsm_units(ch) if encoding == "gsm7" else ucs2_units(ch)


def split_parts(text: str, encoding: Encoding | None = None) -> list[str]:
    """The text cut into the parts it is sent as; an escape pair or surrogate pair never straddles."""
    enc = encoding or detect_encoding(text)
    total = sum(_units(ch, enc) for ch in text)
    if total <= SINGLE[enc]:
        return [text]
    size = MULTI[enc]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        width = _units(ch, enc)
        if used + width > size:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += width
    if current:
        parts.append("".join(current))
    return parts


def analyze(text: str, cost_per_segment: float = 0.0) -> TextInfo:
    """Encoding, units, segments and cost of a text, as the gateway will send it."""
    non_gsm = non_gsm_characters(text)
    enc: Encoding = "ucs2" if non_gsm else "gsm7"
    units = sum(_units(ch, enc) for ch in text)
    if units <= SINGLE[enc]:
        segments, per = 1, SINGLE[enc]
        remaining = per - units
    else:
        parts = split_parts(text, enc)
        segments, per = len(parts), MULTI[enc]
        remaining = per - sum(_units(ch, enc) for ch in parts[-1])
    return TextInfo(
        encoding=enc,
        characters=len(text),
        units=units,
        segments=segments,
        per_segment=per,
        remaining=remaining,
        cost=round(segments * cost_per_segment, 6),
        non_gsm=non_gsm,
    )


def encode_gsm7(text: str) -> bytes:
    """GSM 03.38 septets, one per octet (unpacked: SMPP data_coding 0); ValueError if impossible."""
    out = bytearray()
    for ch in text:
        code = GSM_BASIC.get(ch)
        if code is not None:
            out.append(code)
            continue
        ext = GSM_EXTENSION.get(ch)
        if ext is None:
            raise ValueError(f"character {ch!r} is not in the GSM 03.38 alphabet")
        out += bytes((ESCAPE, ext))
    return bytes(out)


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM 03.38 septets back to text (unknown codes become '?')."""
    out: list[str] = []
    escaped = False
    for byte in data:
        code = byte & 0x7F
        if escaped:
            out.append(_EXT_BY_CODE.get(code, _BASIC_BY_CODE.get(code, "?")))
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            out.append(_BASIC_BY_CODE.get(code, "?"))
    return "".join(out)


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE (what SMSCs call UCS-2; emoji travel as surrogate pairs)."""
    return text.encode("utf-16-be")


def decode_ucs2(data: bytes) -> str:
    """UTF-16BE back to text; a lone surrogate (a pair cut by a careless SMSC) becomes U+FFFD."""
    return data.decode("utf-16-be", errors="replace")
