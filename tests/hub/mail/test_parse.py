"""hub.mail.parse on hand-written fixtures: charsets, encodings, attachments, hostile input."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from hub.mail.parse import Limits, clean_text, message_key, parse_email, safe_filename

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mail"


def fixture(name: str) -> bytes:
    """Bytes of tests/fixtures/mail/<name>."""
    return (FIXTURES / name).read_bytes()


def test_plain_quoted_printable() -> None:
    p = parse_email(fixture("plain.eml"))
    assert p.message_id == "<20240514091158.abc123@kunde.example>" and p.has_message_id
    assert (p.from_name, p.from_address) == ("Anna Schmidt", "anna.schmidt@kunde.example")
    assert p.to == ["support@example.test"]
    assert p.subject == "Question about my order"
    assert p.date is not None and p.date.isoformat() == "2024-05-14T07:11:58+00:00"
    assert "It was supposed to ship last week \u2013 thank you!" in p.text
    assert "\r" not in p.text
    # Quoted lines stay in the body but not in the snippet.
    assert "> Your order has shipped." in p.text
    assert p.snippet.startswith("Hello, my order 4711 has not arrived yet.")
    assert "shipped" not in p.snippet
    assert p.problems == [] and p.bounce is None and p.attachments == []


def test_html_only_base64() -> None:
    p = parse_email(fixture("html_only.eml"))
    assert p.text == ""
    assert "<b>Welt</b>" in p.html and "Zoë" in p.html
    assert p.subject == "Bestellung erhalten \u2713"
    assert p.from_name == "Zoë Dubois"
    assert p.snippet == "Hallo Welt, wir haben Ihre Bestellung erhalten. Grüße, Zoë"


def test_three_charsets_in_headers_and_bodies() -> None:
    p = parse_email(fixture("multi_charset.eml"))
    assert p.subject == "Grüße aus Köln / 日本語の件名 / Привет"
    assert p.from_name == "山田 太郎"
    assert "Lieferung für Köln" in p.text  # ISO-8859-1, quoted-printable
    assert "お世話になっております" in p.text  # Shift_JIS, base64
    assert "Привет из Москвы — ça va?" in p.text  # UTF-8, 8bit
    assert p.date is not None and p.date.isoformat() == "2024-05-15T23:00:00+00:00"
    assert p.problems == []


def test_attachments_saved_with_name_type_size(tmp_path: Path) -> None:
    p = parse_email(fixture("attachments.eml"), attachments_dir=tmp_path)
    assert p.text.strip() == "Please find the invoice attached."
    assert 'src="cid:logo@build.example"' in p.html
    by_name = {a.name: a for a in p.attachments}
    assert set(by_name) == {"logo.png", "Rechnung März.pdf", "orders.csv"}
    pdf = by_name["Rechnung März.pdf"]
    assert (pdf.content_type, pdf.inline) == ("application/pdf", False)
    assert Path(pdf.path).read_bytes().startswith(b"%PDF-1.4")
    assert pdf.size == Path(pdf.path).stat().st_size
    assert Path(pdf.path).parent.parent.name == pdf.sha256[:2]
    assert Path(pdf.path).is_relative_to(tmp_path)
    logo = by_name["logo.png"]
    assert (logo.inline, logo.content_id) == (True, "<logo@build.example>")
    assert Path(by_name["orders.csv"].path).read_text(encoding="utf-8") == "id,name\n1,Zoë\n"
    # The same message again writes nothing new (content-addressed).
    before = sorted(tmp_path.rglob("*"))
    parse_email(fixture("attachments.eml"), attachments_dir=tmp_path)
    assert sorted(tmp_path.rglob("*")) == before


def test_dsn_is_recognised_with_original_and_recipient() -> None:
    p = parse_email(fixture("dsn_bounce.eml"))
    assert p.bounce is not None
    assert p.bounce.kind == "dsn" and p.bounce.final
    assert p.bounce.original_message_id == "<QUOTE-ORIGINAL-ID@example.test>"
    [rcpt] = p.bounce.recipients
    assert (rcpt.address, rcpt.action, rcpt.status) == ("gone@customer.example", "failed", "5.1.1")
    assert "User unknown" in rcpt.diagnostic
    assert p.attachments == []


def test_malformed_message_is_read_as_far_as_possible() -> None:
    p = parse_email(fixture("malformed.eml"))
    assert not p.has_message_id and p.message_id.endswith("@commhub.invalid>")
    assert p.from_address == ""
    assert p.date is None
    assert "Qapla'" in p.subject
    # The body whose boundary never appears is kept as text, not hidden in a file.
    assert "SGVsbG8gZnJvbSBhIGJyb2tlbiBtZXNzYWdl" in p.text
    assert any("boundary" in problem for problem in p.problems)
    assert any("Message-ID" in problem for problem in p.problems)
    # Same bytes, same key: a re-read is recognised.
    assert parse_email(fixture("malformed.eml")).message_id == p.message_id


def test_hostile_message(tmp_path: Path) -> None:
    p = parse_email(fixture("hostile.eml"), attachments_dir=tmp_path / "att")
    assert len(p.subject) == Limits().max_subject_chars
    assert any("Subject header of 12000 characters cut" in x for x in p.problems)
    assert "\x00" not in p.text and p.text.startswith("Hello there, NULbytes inside.")
    names = sorted(a.name for a in p.attachments)
    assert names == ["nulbyte.txt", "passwd", "win.ini"]
    for a in p.attachments:
        assert Path(a.path).resolve().is_relative_to((tmp_path / "att").resolve())
    # Nothing was written outside the attachments folder.
    assert sorted(x.name for x in tmp_path.iterdir()) == ["att"]
    assert "<script>" in p.html  # kept as sent; the API says to show it sandboxed


def test_limits_on_parts_depth_and_size(tmp_path: Path) -> None:
    # 3,000 nested multiparts and a 200-part message must not crash or recurse without end.
    deep = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 3000):
        deep += f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n".encode()
    p = parse_email(b"From: a@example.test\r\nSubject: deep\r\n" + deep)
    assert p.subject == "deep"
    assert p.problems
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg.set_content("body")
    for i in range(200):
        msg.add_attachment(
            b"x" * 10, maintype="application", subtype="octet-stream", filename=f"f{i}"
        )
    big = msg.as_bytes()
    limits = Limits(max_attachments=5, max_attachment_bytes=5)
    p = parse_email(big, attachments_dir=tmp_path, limits=limits)
    assert p.attachments == []  # every file is over the 5-byte limit
    assert any("over the limit" in x for x in p.problems)
    p = parse_email(big, attachments_dir=tmp_path, limits=Limits(max_attachments=5))
    assert len(p.attachments) == 5
    assert any("more than 5 attachments" in x for x in p.problems)


def test_headers_only_when_too_large() -> None:
    head = fixture("plain.eml").split(b"\n\n", 1)[0] + b"\n\n"
    p = parse_email(head, headers_only=True)
    assert p.subject == "Question about my order" and p.text == ""
    assert any("over the size limit" in x for x in p.problems)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b.txt", "ab.txt"),
        ("...hidden", "hidden"),
        ("CON.txt", "_CON.txt"),
        ("", "attachment-3.pdf"),
        ("..", "attachment-3.pdf"),
        ("x" * 400 + ".pdf", "x" * 146 + ".pdf"),
        ('in"va:l*id?.txt', "in_va_l_id_.txt"),
    ],
)
def test_safe_filename(raw: str, expected: str) -> None:
    name = safe_filename(raw, "application/pdf", 3)
    assert name == expected
    assert os.sep not in name and "\x00" not in name


def test_clean_text_and_keys() -> None:
    # Raw 8-bit header bytes arrive surrogate-escaped: they become text again.
    escaped = "Gr\udcc3\udcbc\udcc3\udc9fe".encode("utf-8", "surrogateescape").decode(
        "utf-8", "surrogateescape"
    )
    assert clean_text(escaped) == "Grüße"
    assert clean_text("a\x00b\x07c\td") == "abc\td"
    assert message_key(" <x@y> ", b"") == ("<x@y>", True)
    key, real = message_key(None, b"abc")
    assert not real and key.startswith("<sha256.")
