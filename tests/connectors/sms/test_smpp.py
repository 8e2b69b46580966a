"""The SMPP 3.4 ESME against smpp34's SMSC (not ours): bind, submit_sm (GSM, UCS-2, UDH, SAR,
payload), receipts, MO, throttling, errors, window, unbind and rebind after a drop, and the hub's
delivery tracking end to end."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from connectors.sms import smpp
from connectors.sms.errors import GatewayThrottled
from hub.consent import is_suppressed
from hub.customers import create_customer
from hub.errors import PermanentError, RetryableError
from hub.messaging.ports import OutgoingSms
from hub.models.sms import SmsMessage
from hub.services import Hub
from hub.sms.events import DeliveryReport, InboundSms
from hub.sms.service import SmsEvents, send_sms
from hub.sms.text import encode_gsm7
from hub.timeline import timeline
from tests.conftest import free_port
from tests.connectors.sms.smsc import TestSmsc


class Recorder:
    """Collects what the gateway reports (the hub's SmsEventSink port)."""

    def __init__(self) -> None:
        self.inbound: list[InboundSms] = []
        self.reports: list[DeliveryReport] = []
        self.fail = False
        self.changed = asyncio.Event()

    async def on_inbound(self, sms: InboundSms) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.inbound.append(sms)
        self.changed.set()

    async def on_report(self, report: DeliveryReport) -> None:
        self.reports.append(report)
        self.changed.set()

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def settings(port: int, **kw: Any) -> smpp.SmppSettings:
    base = smpp.SmppSettings(
        host="127.0.0.1",
        port=port,
        system_id="commhub",
        password="secret",
        sender="commhub",
        reconnect_min=0.05,
        reconnect_max=0.2,
        throttle_backoff=0.01,
        response_timeout=5.0,
    )
    return replace(base, **kw)


@pytest.fixture
async def smsc() -> AsyncIterator[TestSmsc]:
    server = TestSmsc(free_port())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def gateway(smsc: TestSmsc, recorder: Recorder) -> AsyncIterator[smpp.SmppGateway]:
    gw = smpp.SmppGateway(settings(smsc.port), recorder)
    await gw.start()
    assert gw.bound
    yield gw
    await gw.close()


def out(text: str, to: str = "+4915112345678", ref: str = "r1") -> OutgoingSms:
    return OutgoingSms(to=to, text=text, reference=ref)


async def test_gsm7_submit_with_extension_characters(
    smsc: TestSmsc, gateway: smpp.SmppGateway
) -> None:
    assert await gateway.send(out("Hello {you} [1] ~ € @ home")) == "M1"
    (sub,) = smsc.submitted
    assert (sub.destination, sub.dest_ton, sub.source, sub.source_ton) == (
        "4915112345678",
        1,
        "commhub",
        5,
    )
    assert (sub.data_coding, sub.esm_class, sub.registered_delivery) == (0, 0, 1)
    assert sub.payload == encode_gsm7("Hello {you} [1] ~ € @ home")
    assert b"\x1b\x65" in sub.payload and b"\x00" in sub.payload  # € escaped, @ is 0x00


async def test_ucs2_submit_keeps_emoji_as_surrogate_pairs(
    smsc: TestSmsc, gateway: smpp.SmppGateway
) -> None:
    await gateway.send(out("Привет 😀"))
    (sub,) = smsc.submitted
    assert sub.data_coding == 8
    assert sub.payload == "Привет 😀".encode("utf-16-be")


async def test_long_message_goes_as_udh_parts_and_receipts_fold_into_one(
    smsc: TestSmsc, gateway: smpp.SmppGateway, recorder: Recorder
) -> None:
    text = ("0123456789" * 40)[:400]
    message_id = await gateway.send(out(text))
    assert len(smsc.submitted) == 3
    parts = sorted(smsc.submitted, key=lambda s: s.payload[5])
    assert all(p.esm_class == 0x40 for p in parts)
    udhs = [p.payload[:6] for p in parts]
    assert {u[:3] for u in udhs} == {b"\x05\x00\x03"}
    assert len({u[3] for u in udhs}) == 1 and [u[4:] for u in udhs] == [
        b"\x03\x01",
        b"\x03\x02",
        b"\x03\x03",
    ]
    assert b"".join(p.payload[6:] for p in parts).decode("ascii") == text
    assert message_id == parts[0].message_id or message_id in {p.message_id for p in parts}

    for sub in smsc.submitted[:2]:
        await smsc.receipt(None, sub, "DELIVRD")
    assert recorder.reports == []  # not before every part has a final word
    assert await smsc.receipt(None, smsc.submitted[2], "UNDELIV") == 0
    await recorder.wait(lambda: recorder.reports)
    (report,) = recorder.reports
    assert (report.gateway_id, report.status) == (message_id, "failed")
    assert "UNDELIV" in report.detail and "3 parts" in report.detail


async def test_sar_and_payload_concatenation(smsc: TestSmsc, recorder: Recorder) -> None:
    text = "ж" * 100
    gw = smpp.SmppGateway(settings(smsc.port, concatenation="sar"), recorder)
    await gw.start()
    try:
        await gw.send(out(text))
        assert len(smsc.submitted) == 2
        seqs = sorted(s.tlvs[smpp.TLV_SAR_SEGMENT_SEQNUM][0] for s in smsc.submitted)
        assert seqs == [1, 2]
        assert {s.tlvs[smpp.TLV_SAR_TOTAL_SEGMENTS] for s in smsc.submitted} == {b"\x02"}
        assert all(s.esm_class == 0 for s in smsc.submitted)
        by_seq = sorted(smsc.submitted, key=lambda s: s.tlvs[smpp.TLV_SAR_SEGMENT_SEQNUM])
        assert b"".join(s.payload for s in by_seq).decode("utf-16-be") == text
    finally:
        await gw.close()
    smsc.submitted.clear()
    gw = smpp.SmppGateway(settings(smsc.port, concatenation="payload"), recorder)
    await gw.start()
    try:
        await gw.send(out(text))
        (sub,) = smsc.submitted
        assert sub.payload == b"" and sub.tlvs[smpp.TLV_MESSAGE_PAYLOAD] == text.encode("utf-16-be")
    finally:
        await gw.close()


async def test_receipts_are_reported_with_the_smsc_id(
    smsc: TestSmsc, gateway: smpp.SmppGateway, recorder: Recorder
) -> None:
    smsc.receipts = "DELIVRD"
    assert await gateway.send(out("hi")) == "M1"
    smsc.receipts = "EXPIRED"
    assert await gateway.send(out("hi", ref="r2")) == "M2"
    await recorder.wait(lambda: len(recorder.reports) == 2)
    got = sorted((r.gateway_id, r.status) for r in recorder.reports)
    assert got == [("M1", "delivered"), ("M2", "expired")]
    assert all(r.occurred_at is not None and r.occurred_at.year == 2024 for r in recorder.reports)


async def test_mo_messages_gsm_ucs2_and_concatenated(
    smsc: TestSmsc, gateway: smpp.SmppGateway, recorder: Recorder
) -> None:
    assert await smsc.mo("4915112345678", encode_gsm7("Hi {there} €")) == 0
    assert await smsc.mo("4915112345678", "Да 😀".encode("utf-16-be"), data_coding=8) == 0
    for seq, chunk in ((2, "world"), (1, "hello ")):  # out of order on purpose
        udh = bytes((5, 0, 3, 0x42, 2, seq))
        assert await smsc.mo("4915112345678", udh + encode_gsm7(chunk), esm_class=0x40) == 0
    assert await smsc.mo("INFO", encode_gsm7("from a name"), ton=5) == 0
    await recorder.wait(lambda: len(recorder.inbound) == 4)
    assert [(m.sender, m.text) for m in recorder.inbound] == [
        ("+4915112345678", "Hi {there} €"),
        ("+4915112345678", "Да 😀"),
        ("+4915112345678", "hello world"),
        ("INFO", "from a name"),
    ]


async def test_hub_failure_asks_the_smsc_to_redeliver(
    smsc: TestSmsc, gateway: smpp.SmppGateway, recorder: Recorder
) -> None:
    recorder.fail = True
    assert await smsc.mo("4915112345678", b"hello") == smpp.ESME_RX_T_APPN
    recorder.fail = False
    assert await smsc.mo("4915112345678", b"hello") == 0


async def test_throttling_backs_off_then_succeeds_or_gives_up(
    smsc: TestSmsc, gateway: smpp.SmppGateway
) -> None:
    smsc.throttle = 3
    assert await gateway.send(out("x")) == "M1"
    smsc.throttle = 100
    with pytest.raises(GatewayThrottled):
        await gateway.send(out("y"))


async def test_refusal_is_permanent_system_error_is_retryable(
    smsc: TestSmsc, gateway: smpp.SmppGateway
) -> None:
    smsc.reject_with = 0x0B  # ESME_RINVDSTADR
    with pytest.raises(PermanentError, match="0x0B"):
        await gateway.send(out("x"))
    smsc.reject_with = smpp.ESME_RSYSERR
    with pytest.raises(RetryableError):
        await gateway.send(out("x"))


async def test_window_limits_outstanding_submits(smsc: TestSmsc, recorder: Recorder) -> None:
    gw = smpp.SmppGateway(settings(smsc.port, window=2), recorder)
    await gw.start()
    smsc.hold = True
    try:
        sends = [asyncio.create_task(gw.send(out(f"m{i}", ref=f"r{i}"))) for i in range(5)]
        await smsc.wait_for(lambda: len(smsc.held) == 2)
        await asyncio.sleep(0.2)  # a third submit would have arrived by now
        assert len(smsc.submitted) == 2
        smsc.hold = False
        smsc.release()
        assert sorted(await asyncio.gather(*sends)) == ["M1", "M2", "M3", "M4", "M5"]
    finally:
        await gw.close()


class Relay:
    """A TCP relay between the ESME and the SMSC whose links we can cut (a network drop)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.accepting = True

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_rebinds_after_the_link_drops(smsc: TestSmsc, recorder: Recorder) -> None:
    relay = Relay(smsc.port)
    gw = smpp.SmppGateway(settings(await relay.start(), send_wait=5.0), recorder)
    await gw.start()
    try:
        assert await gw.send(out("before")) == "M1"
        relay.accepting = False
        relay.cut()
        async with asyncio.timeout(5):
            while gw.bound:
                await asyncio.sleep(0.01)
        sending = asyncio.create_task(gw.send(out("during the outage", ref="r2")))
        await asyncio.sleep(0.3)  # a few reconnect attempts are refused meanwhile
        assert not sending.done()
        relay.accepting = True
        assert await sending == "M2"
        assert gw.binds >= 2 and smsc.submitted[1].payload == encode_gsm7("during the outage")
    finally:
        await gw.close()
        await relay.close()


async def test_rebinds_after_the_smsc_unbinds(smsc: TestSmsc, gateway: smpp.SmppGateway) -> None:
    await (await smsc.esme()).unbind()
    await smsc.wait_for(lambda: smsc.binds == 2)
    assert await gateway.send(out("again")) == "M1"


async def test_unreachable_smsc_does_not_stop_start_and_send_fails_retryable() -> None:
    gw = smpp.SmppGateway(settings(free_port(), send_wait=0.2))
    await gw.start()  # logs and keeps trying
    try:
        assert not gw.bound
        with pytest.raises(RetryableError):
            await gw.send(out("x"))
    finally:
        await gw.close()


# --- a protocol-level SMSC for what smpp34 will not do: refuse a bind, ignore enquire_link ---


async def _raw_smsc(bind_status: int, answer_enquire: bool) -> tuple[asyncio.Server, list[int]]:
    commands: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length, command, _status, seq = struct.unpack(">IIII", await reader.readexactly(16))
                await reader.readexactly(length - 16)
                commands.append(command)
                if command == smpp.BIND_TRANSCEIVER:
                    writer.write(
                        smpp.Pdu(smpp.BIND_TRANSCEIVER_RESP, bind_status, seq, b"RAW\x00").encode()
                    )
                elif command == smpp.ENQUIRE_LINK and answer_enquire:
                    writer.write(smpp.Pdu(smpp.ENQUIRE_LINK_RESP, 0, seq).encode())
                elif command == smpp.UNBIND:
                    writer.write(smpp.Pdu(smpp.UNBIND_RESP, 0, seq).encode())
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, commands


async def test_refused_bind_is_an_auth_error() -> None:
    from hub.errors import AuthError

    server, _ = await _raw_smsc(smpp.ESME_RINVPASWD, True)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AuthError, match="refused bind"):
            await smpp.SmppGateway(settings(port)).start()
    finally:
        server.close()


async def test_unanswered_enquire_link_drops_and_rebinds() -> None:
    server, commands = await _raw_smsc(0, answer_enquire=False)
    port = server.sockets[0].getsockname()[1]
    gw = smpp.SmppGateway(settings(port, enquire_link_interval=0.05, response_timeout=0.2))
    try:
        await gw.start()
        async with asyncio.timeout(10):
            while gw.binds < 2:
                await asyncio.sleep(0.02)
        assert commands.count(smpp.BIND_TRANSCEIVER) >= 2 and smpp.ENQUIRE_LINK in commands
    finally:
        await gw.close()
        server.close()


# --- the hub end to end over SMPP ---


async def test_hub_tracks_delivery_and_takes_stop_over_smpp(hub: Hub, smsc: TestSmsc) -> None:
    gw = smpp.SmppGateway(settings(smsc.port), SmsEvents(hub))
    await gw.start()
    hub.parts["sms"] = gw
    try:
        async with hub.sessions() as session, session.begin():
            customer = await create_customer(
                session, {"name": "Smpp Sam", "phones": ["+4915112345678"]}, hub.region
            )
        smsc.receipts = "DELIVRD"
        sent = await send_sms(hub, customer_id=customer.id, text="Your code is 1234")
        assert sent["gateway_id"] == "M1"

        async def status() -> str:
            async with hub.sessions() as session:
                row = await session.scalar(
                    select(SmsMessage).where(SmsMessage.reference == sent["reference"])
                )
                assert row is not None
                return row.status

        async with asyncio.timeout(10):
            while await status() != "delivered":
                await asyncio.sleep(0.02)

        assert await smsc.mo("4915112345678", b"STOP") == 0
        await smsc.wait_for(lambda: len(smsc.submitted) == 2)
        assert smsc.submitted[1].payload == encode_gsm7(hub.config.sms.stop_reply)
        async with hub.sessions() as session:
            assert await is_suppressed(session, "sms", "+4915112345678")
            rows = await timeline(session, customer.id)
        assert sorted((r.direction, r.summary) for r in rows) == [
            ("inbound", "STOP"),
            ("outbound", hub.config.sms.stop_reply),
            ("outbound", "Your code is 1234"),
        ]
    finally:
        await gw.close()
