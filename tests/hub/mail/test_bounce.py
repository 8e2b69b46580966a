"""Bounce recognition beyond the RFC 3464 fixture: plain-text bounces, delays, read receipts."""

from __future__ import annotations

from hub.mail.parse import parse_email


def test_plain_text_bounce_with_original_headers() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.other.example\r\nTo: support@example.test\r\n"
        b"Subject: failure notice\r\nMessage-ID: <qmail-1@mx.other.example>\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.other.example.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
        b"<lost@other.example>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"From: support@example.test\r\nMessage-ID: <our-7@example.test>\r\nSubject: Hi\r\n"
    )
    p = parse_email(raw)
    assert p.bounce is not None
    assert (p.bounce.kind, p.bounce.original_message_id, p.bounce.final) == (
        "heuristic",
        "<our-7@example.test>",
        True,
    )
    assert p.bounce.recipients[0].status == "5.1.1"


def test_delay_warning_is_not_final() -> None:
    raw = (
        b"From: postmaster@mx.other.example\r\nTo: support@example.test\r\n"
        b"Subject: Delivery Status Notification (Delay)\r\nMessage-ID: <d-1@mx>\r\n\r\n"
        b"Delivery to the following recipient has been delayed: late@other.example\r\n"
        b"Message-ID: <our-8@example.test>\r\n"
    )
    p = parse_email(raw)
    assert p.bounce is not None and not p.bounce.final


def test_dsn_with_only_a_delayed_recipient_is_not_final() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.test\r\nTo: support@example.test\r\n"
        b"Subject: Delayed Mail (still being retried)\r\nMessage-ID: <dsn-2@mx>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nStill trying.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.test\r\n\r\n"
        b"Final-Recipient: rfc822; slow@other.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
        b"--B--\r\n"
    )
    p = parse_email(raw)
    assert p.bounce is not None and p.bounce.kind == "dsn"
    assert not p.bounce.final and p.bounce.permanent_recipients == []


def test_read_receipt_and_auto_reply_are_not_bounces() -> None:
    receipt = (
        b"From: carol@customer.example\r\nTo: support@example.test\r\nSubject: Read: Hi\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n"
        b"--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; carol@customer.example\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n"
        b"--B--\r\n"
    )
    assert parse_email(receipt).bounce is None
    vacation = (
        b"From: carol@customer.example\r\nTo: support@example.test\r\nReturn-Path: <>\r\n"
        b"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n"
    )
    p = parse_email(vacation)
    assert p.bounce is None and p.auto_submitted == "auto-replied"
