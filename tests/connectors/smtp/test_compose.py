"""MIME rendering and the rate limiter's arithmetic (pure logic)."""

from __future__ import annotations

import time

import pytest

from connectors.smtp.compose import parse_address, render
from connectors.smtp.sender import RateLimiter
from hub.errors import ValidationError
from hub.messaging.ports import OutgoingEmail


def test_given_message_id_and_idn_domain() -> None:
    out = render(
        OutgoingEmail(
            to="joerg@münchen.example", subject="x", text="y", message_id="<a@b.example>"
        ),
        "hub@example.test",
    )
    assert out.message_id == "<a@b.example>"
    assert out.recipient == "joerg@xn--mnchen-3ya.example"
    assert b"Message-ID: <a@b.example>\r\n" in out.data


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_address("jörg@example.test", "to")  # SMTPUTF8 local parts are not sent
    with pytest.raises(ValidationError):
        render(
            OutgoingEmail(to="a@b.example", subject="s", message_id="no-brackets"), "h@x.example"
        )
    with pytest.raises(ValidationError):
        render(
            OutgoingEmail(to="a@b.example", subject="s", headers={"Bad Name": "x"}), "h@x.example"
        )


def test_long_ascii_subject_is_folded() -> None:
    out = render(OutgoingEmail(to="a@b.example", subject="word " * 40, text="x"), "h@x.example")
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


async def test_rate_limiter_spaces_starts() -> None:
    limiter = RateLimiter(1000.0)
    before = time.monotonic()
    for _ in range(5):
        await limiter.wait()
    # Five starts reserved five consecutive slots: the next free one is at least 5 ms on.
    assert limiter.interval == pytest.approx(0.001)
    assert limiter._next >= before + 5 * limiter.interval
    unlimited = RateLimiter(0)
    await unlimited.wait()
    assert unlimited.interval == 0.0
