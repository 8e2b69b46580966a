"""SmtpSender against an in-process aiosmtpd server: pooling, retries, refusals, TLS, AUTH."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from connectors.smtp import GaveUp, SmtpSender
from hub.config import SmtpConfig
from hub.errors import AuthError, DeliveryInDoubt, PermanentError, RetryableError, ValidationError
from hub.messaging.ports import EmailRejected, OutgoingEmail
from tests.conftest import free_port, until

from .conftest import Certs
from .sink import Sink, smtp_sink


def _config(port: int, **kw: object) -> SmtpConfig:
    base = SmtpConfig(host="127.0.0.1", port=port, from_address="Hub <hub@example.test>", timeout=5)
    return replace(base, **kw)  # type: ignore[arg-type]


def _sender(port: int, **kw: object) -> SmtpSender:
    return SmtpSender(_config(port, **kw), backoff_base=0.01, local_hostname="client.test")


async def test_sends_plain_text_with_headers() -> None:
    async with smtp_sink() as (sink, port):
        sender = _sender(port)
        try:
            mid = await sender.send(
                OutgoingEmail(to="Ann <ann@example.test>", subject="Hello", text="Hi Ann,\n.\nBye")
            )
        finally:
            await sender.close()
    assert len(sink.deliveries) == 1
    got = sink.deliveries[0]
    assert got.mail_from == "hub@example.test"
    assert got.rcpt_tos == ["ann@example.test"]
    msg = got.parsed()
    assert msg["Message-ID"] == mid
    assert mid.startswith("<") and mid.endswith("@example.test>")
    assert msg["Date"].datetime.tzinfo is not None
    assert msg["From"].addresses[0].display_name == "Hub"
    assert msg["To"].addresses[0].addr_spec == "ann@example.test"
    assert msg["Subject"] == "Hello"
    assert msg.get_content_type() == "text/plain"
    # The lone dot line survives SMTP dot-stuffing.
    assert msg.get_content() == "Hi Ann,\n.\nBye\n"
    assert msg.defects == []


async def test_text_and_html_become_alternative_parts_with_unicode() -> None:
    long_line = "x" * 1200
    async with smtp_sink() as (sink, port):
        sender = _sender(port)
        try:
            await sender.send(
                OutgoingEmail(
                    to="Jörg Müller <jorg@example.test>",
                    subject="Grüße aus Köln \u2013 " + "ein sehr langer Betreff " * 5,
                    text=f"Grüße\n{long_line}\n",
                    html="<p>Grüße <b>Jörg</b></p>",
                    in_reply_to="<orig@example.test>",
                    references=("<root@example.test>", "<orig@example.test>"),
                    headers={"List-Unsubscribe": "<https://hub.example.test/u/abc>"},
                )
            )
        finally:
            await sender.close()
    msg = sink.deliveries[0].parsed()
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Grüße aus Köln \u2013 " + "ein sehr langer Betreff " * 5
    assert msg["To"].addresses[0].display_name == "Jörg Müller"
    assert msg["In-Reply-To"] == "<orig@example.test>"
    assert msg["References"].split() == ["<root@example.test>", "<orig@example.test>"]
    assert msg["List-Unsubscribe"] == "<https://hub.example.test/u/abc>"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == f"Grüße\n{long_line}\n"
    assert html.get_content().strip() == "<p>Grüße <b>Jörg</b></p>"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    # No line of the raw message exceeds the RFC 5322 limit.
    assert max(len(line) for line in sink.deliveries[0].data.split(b"\r\n")) <= 998
    assert msg.defects == []


async def test_html_only_message_is_a_single_html_part() -> None:
    async with smtp_sink() as (sink, port):
        sender = _sender(port)
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="s", html="<p>only</p>"))
        finally:
            await sender.close()
    msg = sink.deliveries[0].parsed()
    assert msg.get_content_type() == "text/html"


async def test_connections_are_reused_across_many_messages() -> None:
    async with smtp_sink() as (sink, port):
        sender = _sender(port, pool_size=2)
        try:
            await asyncio.gather(
                *(
                    sender.send(OutgoingEmail(to=f"u{i}@example.test", subject=f"#{i}", text="x"))
                    for i in range(40)
                )
            )
            assert sender.open_connections == 2
        finally:
            await sender.close()
    assert len(sink.deliveries) == 40
    assert sink.sessions == 2
    assert len({d.parsed()["Message-ID"] for d in sink.deliveries}) == 40


async def test_451_then_250_delivers_exactly_once() -> None:
    async with smtp_sink(sink=Sink(data_replies=["451 4.3.0 try again later"])) as (sink, port):
        sender = _sender(port, pool_size=1)
        try:
            mid = await sender.send(OutgoingEmail(to="a@example.test", subject="retry", text="x"))
        finally:
            await sender.close()
    assert sink.data_commands == 2
    assert len(sink.deliveries) == 1
    assert sink.deliveries[0].parsed()["Message-ID"] == mid
    # The retry used the same connection: a 4xx does not poison it.
    assert sink.sessions == 1


async def test_4xx_at_rcpt_is_retried() -> None:
    async with smtp_sink(sink=Sink(rcpt_replies=["450 4.2.1 mailbox busy"])) as (sink, port):
        sender = _sender(port)
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert sink.rcpt_commands == 2
    assert len(sink.deliveries) == 1


async def test_persistent_4xx_gives_up_with_retryable_error() -> None:
    replies = ["451 4.3.0 busy"] * 10
    async with smtp_sink(sink=Sink(data_replies=replies)) as (sink, port):
        sender = SmtpSender(_config(port), max_attempts=3, backoff_base=0.01)
        try:
            with pytest.raises(GaveUp) as caught:
                await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert isinstance(caught.value, RetryableError)
    assert caught.value.attempts == 3
    assert "451 4.3.0 busy" in str(caught.value)
    assert sink.data_commands == 3
    assert sink.deliveries == []


async def test_5xx_at_rcpt_is_permanent_and_names_the_recipient() -> None:
    async with smtp_sink(sink=Sink(rcpt_replies=["550 5.1.1 no such user"])) as (sink, port):
        sender = _sender(port)
        try:
            with pytest.raises(EmailRejected) as caught:
                await sender.send(
                    OutgoingEmail(to="Gone <gone@example.test>", subject="s", text="x")
                )
            # The connection stays usable for the next message.
            await sender.send(OutgoingEmail(to="b@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    err = caught.value
    assert isinstance(err, PermanentError)
    assert (err.code, err.stage, err.recipient) == (550, "rcpt", "gone@example.test")
    assert sink.rcpt_commands == 2  # never retried
    assert len(sink.deliveries) == 1
    assert sink.sessions == 1


async def test_5xx_at_mail_from_is_permanent_and_the_connection_carries_the_next() -> None:
    async with smtp_sink(sink=Sink(mail_replies=["553 5.7.1 sender not allowed"])) as (sink, port):
        sender = _sender(port)
        try:
            with pytest.raises(EmailRejected) as caught:
                await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
            await sender.send(OutgoingEmail(to="b@example.test", subject="s", text="y"))
        finally:
            await sender.close()
    assert (caught.value.code, caught.value.stage, caught.value.recipient) == (553, "mail", None)
    assert sink.rcpt_commands == 1  # no RCPT after the refused MAIL
    assert [d.rcpt_tos for d in sink.deliveries] == [["b@example.test"]]
    assert sink.sessions == 1


async def test_envelope_size_and_dot_lines_arrive_as_composed() -> None:
    # The sender writes MAIL/RCPT itself (no re-parsing): SIZE must be the exact byte count and
    # a body line that starts with a dot must survive SMTP's dot-stuffing.
    text = ".hidden line\n..two dots\n" + "long " * 40 + "\nend"
    async with smtp_sink() as (sink, port):
        sender = _sender(port)
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="dots", text=text))
            await sender.send(OutgoingEmail(to="b@example.test", subject="é", html="<p>ü</p>"))
        finally:
            await sender.close()
    assert len(sink.deliveries) == 2
    for delivery, options in zip(sink.deliveries, sink.mail_options, strict=True):
        assert options == [f"SIZE={len(delivery.data)}"]
        assert delivery.mail_from == "hub@example.test"
    body = sink.deliveries[0].parsed().get_body(("plain",))
    assert body is not None
    assert body.get_content().splitlines()[:2] == [".hidden line", "..two dots"]


async def test_prepared_messages_arrive_byte_for_byte() -> None:
    # prepare() composes without a connection (a refused header fails there, before any I/O);
    # send_prepared() delivers exactly the composed bytes, dot lines or not.
    idle = _sender(free_port())
    with pytest.raises(ValidationError):
        idle.prepare(
            OutgoingEmail(to="a@example.test", subject="s", text="x", headers={"Bad Name": "1"})
        )
    plain = idle.prepare(OutgoingEmail(to="a@example.test", subject="plain", text="no dots\n"))
    dotted = idle.prepare(OutgoingEmail(to="b@example.test", subject="dots", text="a\n.b\n"))
    assert idle.open_connections == 0
    async with smtp_sink() as (sink, port):
        sender = _sender(port)
        try:
            assert await sender.send_prepared(plain) == plain.message_id
            assert await sender.send_prepared(dotted) == dotted.message_id
        finally:
            await sender.close()
    assert plain.payload.endswith(b"no dots\r\n.\r\n") and b"\r\n..b\r\n" in dotted.payload
    got = [d.data for d in sink.deliveries]
    assert [len(d) for d in got] == [plain.size, dotted.size]
    assert got[0] + b".\r\n" == plain.payload
    assert got[1].replace(b"\r\n.b", b"\r\n..b") + b".\r\n" == dotted.payload


async def test_5xx_content_refusal_does_not_blame_the_address() -> None:
    async with smtp_sink(sink=Sink(data_replies=["554 5.7.1 spam detected"])) as (_, port):
        sender = _sender(port)
        try:
            with pytest.raises(EmailRejected) as caught:
                await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert (caught.value.code, caught.value.stage, caught.value.recipient) == (554, "data", None)


async def test_5xx_address_status_at_data_blames_the_address() -> None:
    async with smtp_sink(sink=Sink(data_replies=["550 5.1.1 user unknown"])) as (_, port):
        sender = _sender(port)
        try:
            with pytest.raises(EmailRejected) as caught:
                await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert caught.value.recipient == "a@example.test"


async def test_dropped_connection_is_reopened_and_message_sent_once() -> None:
    async with smtp_sink(sink=Sink(drop_on_data={1})) as (sink, port):
        sender = _sender(port, pool_size=1)
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert len(sink.deliveries) == 1
    assert sink.sessions == 2
    assert sender.in_doubt == 1  # the drop came after the whole message: counted


async def test_a_lost_reply_is_left_to_a_caller_that_counts_its_own() -> None:
    # The campaign engine resends in-doubt messages itself (same Message-ID, counted per row).
    async with smtp_sink(sink=Sink(drop_on_data={1})) as (sink, port):
        sender = _sender(port, pool_size=1)
        try:
            message = sender.prepare(OutgoingEmail(to="a@example.test", subject="s", text="x"))
            with pytest.raises(DeliveryInDoubt, match="may have been delivered"):
                await sender.send_prepared(message, retry_in_doubt=False)
            assert sender.open_connections == 0  # never reused out of step
        finally:
            await sender.close()
    assert sink.sessions == 1
    assert sender.in_doubt == 1


async def test_server_that_stops_answering_times_out_and_the_retry_uses_a_new_connection() -> None:
    async with smtp_sink(sink=Sink(hang_on_data={1})) as (sink, port):
        sender = _sender(port, timeout=0.5)
        try:
            message_id = await sender.send(
                OutgoingEmail(to="a@example.test", subject="s", text="x")
            )
        finally:
            await sender.close()
    # The stuck session was dropped (its reply can never pair with a later command) and the
    # message went out once on a fresh connection.
    assert sink.sessions == 2
    assert sink.data_commands == 2
    assert [d.parsed()["Message-ID"] for d in sink.deliveries] == [message_id]


async def test_connection_closed_by_server_while_idle_is_reopened() -> None:
    async with smtp_sink() as (sink, port):
        sender = _sender(port, pool_size=1)
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="1", text="x"))
            sink.close_idle_connections()
            await asyncio.sleep(0.05)  # let the client see the EOF
            await sender.send(OutgoingEmail(to="a@example.test", subject="2", text="x"))
        finally:
            await sender.close()
    assert len(sink.deliveries) == 2
    assert sink.sessions == 2
    assert sink.data_commands == 2


async def test_unreachable_server_is_retryable(caplog: pytest.LogCaptureFixture) -> None:
    sender = SmtpSender(_config(free_port()), max_attempts=2, backoff_base=0.01)
    caplog.set_level(logging.INFO, logger="connectors.smtp")
    try:
        with pytest.raises(RetryableError, match="cannot talk to SMTP server"):
            await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        with pytest.raises(RetryableError):
            await sender.check()
    finally:
        await sender.close()
    assert "attempt 1/2" in caplog.text


async def test_header_injection_is_refused_before_any_connection() -> None:
    sender = _sender(free_port())
    try:
        with pytest.raises(ValidationError):
            await sender.send(OutgoingEmail(to="a@example.test", subject="x\r\nBcc: evil@x.test"))
        with pytest.raises(ValidationError):
            await sender.send(OutgoingEmail(to="a@example.test, b@example.test", subject="two"))
        with pytest.raises(ValidationError):
            await sender.send(
                OutgoingEmail(to="a@example.test", subject="s", headers={"Bcc": "evil@x.test"})
            )
    finally:
        await sender.close()


async def test_closed_sender_refuses() -> None:
    async with smtp_sink() as (_, port):
        sender = _sender(port)
        await sender.close()
        with pytest.raises(RetryableError, match="closed"):
            await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))


async def test_a_cancelled_send_never_leaves_its_connection_out_of_step() -> None:
    # The engine cancels couriers that outlive its stop() grace. The late reply to the
    # cancelled MAIL must not be read as the next message's: its RCPT would get "503 nested
    # MAIL" and a good address would be refused and suppressed.
    async with smtp_sink(sink=Sink(slow_mail={2: 0.3})) as (sink, port):
        sender = _sender(port, pool_size=1)
        try:
            first = await sender.send(OutgoingEmail(to="a@example.test", subject="1", text="x"))
            cancelled = asyncio.create_task(
                sender.send(OutgoingEmail(to="a@example.test", subject="2", text="x"))
            )
            await until(lambda: len(sink.mail_options) == 2)
            cancelled.cancel()
            await asyncio.gather(cancelled, return_exceptions=True)
            assert sender.open_connections == 0  # cut at once, not left for the next message
            third = await sender.send(OutgoingEmail(to="b@example.test", subject="3", text="y"))
        finally:
            await sender.close()
    assert sink.sessions == 2  # the interrupted connection was not reused
    assert [d.parsed()["Message-ID"] for d in sink.deliveries] == [first, third]


async def test_close_lets_the_message_on_the_wire_finish_before_quit() -> None:
    # close() while the server thinks about RCPT: a QUIT written now would be read as the next
    # command (or, after DATA, as a line of the message).
    async with smtp_sink(sink=Sink(slow_rcpt={1: 0.3})) as (sink, port):
        sender = _sender(port, pool_size=2)
        sending = asyncio.create_task(
            sender.send(OutgoingEmail(to="a@example.test", subject="s", text="body"))
        )
        await until(lambda: sink.rcpt_commands == 1)
        await sender.close()
        message_id = await sending
        with pytest.raises(RetryableError, match="closed"):
            await sender.send(OutgoingEmail(to="a@example.test", subject="t", text="x"))
    assert [d.parsed()["Message-ID"] for d in sink.deliveries] == [message_id]
    assert b"QUIT" not in sink.deliveries[0].data
    assert sender.open_connections == 0


async def test_starttls_and_auth(certs: Certs) -> None:
    users = {"hub": "s3cret"}
    async with smtp_sink(starttls=certs.server_context(), users=users) as (sink, port):
        cfg = _config(port, security="starttls", username="hub", password="s3cret")
        sender = SmtpSender(cfg, tls_context=certs.client_context(), local_hostname="client.test")
        try:
            await sender.check()
            await sender.send(OutgoingEmail(to="a@example.test", subject="tls", text="x"))
        finally:
            await sender.close()
        bad = SmtpSender(
            replace(cfg, password="wrong"), tls_context=certs.client_context(), backoff_base=0.01
        )
        try:
            with pytest.raises(AuthError, match="refused the SMTP login"):
                await bad.check()
            with pytest.raises(AuthError):
                await bad.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await bad.close()
    assert len(sink.deliveries) == 1


async def test_starttls_refuses_an_untrusted_certificate(certs: Certs) -> None:
    async with smtp_sink(starttls=certs.server_context()) as (sink, port):
        sender = SmtpSender(_config(port, security="starttls"), max_attempts=1)
        try:
            with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
                await sender.send(OutgoingEmail(to="a@example.test", subject="s", text="x"))
        finally:
            await sender.close()
    assert sink.deliveries == []


async def test_implicit_tls(certs: Certs) -> None:
    async with smtp_sink(implicit_tls=certs.server_context()) as (sink, port):
        sender = SmtpSender(
            _config(port, security="tls"), tls_context=certs.client_context(), local_hostname="c"
        )
        try:
            await sender.send(OutgoingEmail(to="a@example.test", subject="tls", text="x"))
        finally:
            await sender.close()
    assert len(sink.deliveries) == 1
