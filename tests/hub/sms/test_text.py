"""GSM 03.38 vs UCS-2 detection, segment counting, splitting and the 7-bit codec."""

from __future__ import annotations

import pytest

from hub.sms.text import (
    analyze,
    decode_gsm7,
    detect_encoding,
    encode_gsm7,
    encode_ucs2,
    split_parts,
)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Hello world", "gsm7"),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", "gsm7"),
        ("Braces {} [] ~ \\ | ^ €", "gsm7"),
        ("ç lower-case c-cedilla is not in GSM", "ucs2"),  # only upper-case Ç is
        ("Привет", "ucs2"),
        ("dash \u2013 en", "ucs2"),
        ("emoji 😀", "ucs2"),
        ("", "gsm7"),
    ],
)
def test_detects_encoding(text: str, encoding: str) -> None:
    assert detect_encoding(text) == encoding
    assert analyze(text).encoding == encoding


@pytest.mark.parametrize(
    ("length", "segments"),
    [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_segments_160_then_153(length: int, segments: int) -> None:
    assert analyze("a" * length).segments == segments


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_segments_70_then_67(length: int, segments: int) -> None:
    assert analyze("ж" * length).segments == segments


def test_extension_characters_count_two_septets() -> None:
    info = analyze("€" * 80)
    assert (info.units, info.segments, info.remaining) == (160, 1, 0)
    assert analyze("€" * 81).segments == 2
    # An escape pair never straddles two parts: 76 pairs fit in 153 septets, not 76.5.
    assert [len(p) for p in split_parts("€" * 100)] == [76, 24]
    assert [len(p) for p in split_parts("a" + "€" * 100)] == [77, 24]


def test_surrogate_pairs_count_two_units_and_never_split() -> None:
    assert analyze("😀" * 35).units == 70
    assert analyze("😀" * 35).segments == 1
    assert analyze("😀" * 36).segments == 2
    parts = split_parts("a" + "😀" * 40)
    # 67 units per part: "a" + 33 emoji = 67; the 34th would cut a pair in two.
    assert [sum(2 if ord(c) > 0xFFFF else 1 for c in p) for p in parts] == [67, 14]
    assert "".join(parts) == "a" + "😀" * 40
    for part in parts:
        encode_ucs2(part).decode("utf-16-be")  # each part stands alone (no lone surrogate)


def test_four_hundred_characters_latin_is_three_parts() -> None:
    text = ("0123456789" * 40)[:400]
    parts = split_parts(text)
    assert [len(p) for p in parts] == [153, 153, 94]
    info = analyze(text, cost_per_segment=0.075)
    assert (info.segments, info.per_segment, info.remaining, info.cost) == (3, 153, 59, 0.225)


def test_non_gsm_characters_are_listed_once_in_order() -> None:
    assert analyze("aП\u0440bП😀").non_gsm == ("П", "\u0440", "😀")
    assert analyze("plain").non_gsm == ()


def test_gsm7_codec_round_trip_with_extension_table() -> None:
    text = "Hi {x} € @ ü\n"
    data = encode_gsm7(text)
    assert data[:3] == bytes([0x48, 0x69, 0x20])
    assert bytes([0x1B, 0x28]) in data  # "{"
    assert bytes([0x1B, 0x65]) in data  # "€"
    assert 0x00 in data  # "@" is code 0
    assert decode_gsm7(data) == text
    with pytest.raises(ValueError, match="not in the GSM"):
        encode_gsm7("Привет")


def test_as_dict_is_what_the_editor_shows() -> None:
    assert analyze("Hi 😀", 0.1).as_dict() == {
        "encoding": "ucs2",
        "characters": 4,
        "units": 5,
        "segments": 1,
        "per_segment": 70,
        "remaining": 65,
        "cost": 0.1,
        "non_gsm": ["😀"],
    }
