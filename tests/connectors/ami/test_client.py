"""The AMI link against a fake AMI server over real TCP: login, keepalive, resync, commands."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from datetime import datetime

import pytest

import connectors.ami as ami
from connectors.ami import AmiConnector, OriginateOutcomeUnknown
from hub.errors import AuthError, PermanentError, RetryableError, ValidationError
from hub.telephony.ports import OriginateRequest

from .conftest import RecordingSink, eventually, settings_for
from .fake_ami import FakeAmi, frame

CHANNEL_A = {
    "Channel": "PJSIP/201-00000001",
    "ChannelState": "6",
    "ChannelStateDesc": "Up",
    "CallerIDNum": "+4930123456",
    "Uniqueid": "pbx-1.1",
    "Linkedid": "pbx-1.1",
}


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_channel(uniqueid: str, **extra: str) -> dict[str, str]:
    """A Newchannel event like Asterisk 22 sends it."""
    return {
        "Event": "Newchannel",
        "Privilege": "call,all",
        "Channel": f"PJSIP/201-{uniqueid}",
        "CallerIDNum": "+4930123456",
        "Uniqueid": uniqueid,
        "Linkedid": uniqueid,
        **extra,
    }


async def test_login_resync_and_stop(fake: FakeAmi, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    assert conn.connected
    login = fake.actions[0]
    assert login["Action"] == "Login" and login["Events"] == "on" and login["Username"] == "hub"
    await eventually(lambda: sink.resyncs == [[]], "empty resync")
    assert sink.log[0][:2] == ("link", True)
    assert "Asterisk Call Manager/11.0.0" in sink.log[0][2]
    await conn.stop()
    assert not conn.connected
    assert sink.log[-1] == ("link", False, "connector stopped")
    assert fake.count("Logoff") == 1


async def test_wrong_secret_raises_auth_error_once(fake: FakeAmi, sink: RecordingSink) -> None:
    settings = settings_for(fake.port, secret="wrong-secret", reconnect_min=0.01)
    conn = AmiConnector(settings, sink)
    with pytest.raises(AuthError) as caught:
        await conn.start()
    message = str(caught.value)
    assert f"127.0.0.1:{fake.port}" in message and "'hub'" in message
    assert "Authentication failed" in message
    # Long enough for dozens of reconnects at reconnect_min if anything still retried.
    await asyncio.sleep(0.3)
    assert fake.connections == 1
    assert sink.links == [False]
    with pytest.raises(AuthError):
        await ami.start(settings, sink)
    assert fake.connections == 2


async def test_check(fake: FakeAmi) -> None:
    await ami.check(settings_for(fake.port))
    assert [a["Action"] for a in fake.actions] == ["Login", "Logoff"]
    with pytest.raises(AuthError):
        await AmiConnector.check(settings_for(fake.port, secret="nope"))
    with pytest.raises(RetryableError, match="cannot reach Asterisk AMI"):
        await ami.check(settings_for(free_port()))


async def test_unreachable_at_start_then_retries_in_background(sink: RecordingSink) -> None:
    port = free_port()
    settings = settings_for(port)
    conn = AmiConnector(settings, sink)
    with pytest.raises(RetryableError, match=f"127.0.0.1:{port}"):
        await conn.start()
    assert not conn.connected
    async with FakeAmi(port=port):
        await eventually(lambda: conn.connected, "login once Asterisk is up")
        await conn.stop()
    assert sink.links == [False, True, False]


async def test_package_start_comes_up_without_asterisk(sink: RecordingSink) -> None:
    conn = await ami.start(settings_for(free_port()), sink)
    assert not conn.connected
    await ami.stop(conn)


async def test_ping_detects_silent_server_and_reconnects(
    fake: FakeAmi, sink: RecordingSink
) -> None:
    conn = AmiConnector(settings_for(fake.port, ping_interval=0.1, ping_timeout=0.1), sink)
    await conn.start()
    await eventually(lambda: fake.count("Ping") >= 1, "first ping")
    fake.silence()
    await eventually(lambda: fake.connections == 2 and conn.connected, "reconnect")
    assert sink.links == [True, False, True]
    down = next(e for e in sink.log if e[0] == "link" and not e[1])
    assert "Ping" in down[2]
    await conn.stop()


async def test_drop_mid_call_resyncs_before_new_events(fake: FakeAmi, sink: RecordingSink) -> None:
    fake.channels = [CHANNEL_A]
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    await fake.send(new_channel("pbx-1.1"))
    await eventually(lambda: len(sink.named("Newchannel")) == 1, "the call's first event")
    # The call ends while we are away; after the reconnect CoreShowChannels no longer lists it.
    fake.channels = []
    fake.after_login = [new_channel("before-snapshot")]
    fake.during_list = [new_channel("after-snapshot")]
    await fake.drop_clients()
    await eventually(lambda: len(sink.resyncs) == 2, "resync after reconnect")
    await eventually(lambda: len(sink.named("Newchannel")) == 3, "live events after resync")
    await fake.send(new_channel("later"))
    await eventually(lambda: len(sink.named("Newchannel")) == 4, "later event")
    await conn.stop()

    shape = [
        (e[0], e[1])
        if e[0] == "link"
        else (e[0], e[1].get("Uniqueid", e[1].get("Event")))
        if e[0] == "event"
        else (e[0], len(e[1]))
        for e in sink.log
    ]
    assert shape == [
        ("link", True),
        ("event", "FullyBooted"),
        ("resync", 1),
        ("event", "pbx-1.1"),
        ("link", False),
        ("link", True),
        ("event", "FullyBooted"),
        ("event", "before-snapshot"),
        ("resync", 0),
        ("event", "after-snapshot"),
        ("event", "later"),
        ("link", False),
    ]
    assert sink.resyncs[0] == [
        {"Event": "CoreShowChannel", "ActionID": sink.resyncs[0][0]["ActionID"], **CHANNEL_A}
    ]


async def test_garbage_is_skipped_and_the_next_event_arrives(
    fake: FakeAmi, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    conn = AmiConnector(settings_for(fake.port, ping_interval=60.0), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    junk = (
        b"\x00\xff\xfe binary junk\r\nno separator here\r\n\r\n"
        b"\x89PNG\r\n\x1a\n\r\n\r\n"
        b"Foo: a frame without Event or Response\r\n\r\n"
        + b"x"
        * (3 << 20)  # a 3 MiB line with no end in sight
        + b"\r\n\r\n"
        b"junk line glued to an event\r\nEvent: Hangup\r\nUniqueid: u-1\r\nCause: 16\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING, logger="connectors.ami"):
        await fake.send_raw(junk)
        await fake.send(new_channel("u-2"))
        await eventually(lambda: len(sink.named("Newchannel")) == 1, "valid event after junk")
    assert sink.named("Hangup") == [{"Event": "Hangup", "Uniqueid": "u-1", "Cause": "16"}]
    assert any("malformed" in r.getMessage() for r in caplog.records)
    assert any("discarding an AMI frame over" in r.getMessage() for r in caplog.records)
    assert conn.connected and fake.connections == 1
    # The link still answers actions after all that.
    with pytest.raises(PermanentError, match="No such channel"):
        await conn.hangup("PJSIP/999-00000001")
    await conn.stop()


async def test_utf8_split_across_reads(fake: FakeAmi, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    # Our halves must not be interleaved with the fake's answer to CoreShowChannels.
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    data = frame(new_channel("u-1", CallerIDName="Jürgen Müller"))
    cut = data.index("ü".encode()) + 1
    await fake.send_raw(data[:cut])
    await asyncio.sleep(0.05)  # let the first half be read on its own
    await fake.send_raw(data[cut:])
    await eventually(lambda: len(sink.named("Newchannel")) == 1, "the event")
    assert sink.named("Newchannel")[0]["CallerIDName"] == "Jürgen Müller"
    await conn.stop()


async def test_originate_fields_and_late_response(fake: FakeAmi, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    request = OriginateRequest(
        channel="Local/110@agents",
        exten="+4930987654",
        context="from-internal",
        caller_id='"Agent 110" <110>',
        variables={"CRM_CALL_ID": "c2c-0001", "X": "y"},
        request_id="c2c-0001",
    )
    assert await conn.originate(request) == "c2c-0001"
    sent = next(a for a in fake.actions if a["Action"] == "Originate")
    assert sent["ActionID"] == "c2c-0001"
    assert sent["Async"] == "true" and sent["Timeout"] == "30000" and sent["Priority"] == "1"
    assert sent["CallerID"] == '"Agent 110" <110>'
    assert sent["Variable"] == "CRM_CALL_ID=c2c-0001\nX=y"
    # The later OriginateResponse (it carries our ActionID) still reaches the sink.
    await eventually(lambda: len(sink.named("OriginateResponse")) == 1, "OriginateResponse")
    assert sink.named("OriginateResponse")[0]["ActionID"] == "c2c-0001"
    generated = await conn.originate(OriginateRequest("Local/110@agents", "1", "x", "110"))
    assert generated.startswith("commhub-originate-")
    await conn.stop()


async def test_originate_error_surfaces(fake: FakeAmi, sink: RecordingSink) -> None:
    fake.originate_reply = "error"
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    with pytest.raises(PermanentError, match="Extension does not exist"):
        await conn.originate(OriginateRequest("Local/110@agents", "+4930987654", "x", "110"))
    with pytest.raises(ValidationError):
        await conn.originate(OriginateRequest("Local/110@agents", "1\r\nAction: Hangup", "x", "1"))
    assert fake.count("Originate") == 1
    await conn.stop()


async def test_originate_sent_once_when_link_drops(fake: FakeAmi, sink: RecordingSink) -> None:
    fake.originate_reply = "drop"
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    with pytest.raises(OriginateOutcomeUnknown, match="may or may not have been placed") as caught:
        await conn.originate(OriginateRequest("Local/110@agents", "+4930987654", "x", "110"))
    assert isinstance(caught.value, RetryableError)
    await eventually(lambda: conn.connected and fake.connections == 2, "reconnect")
    await eventually(lambda: len(sink.resyncs) == 2, "resync after reconnect")
    # A round trip on the new connection: anything resent before it would have been seen.
    with pytest.raises(PermanentError):
        await conn.hangup("PJSIP/999-00000001")
    assert fake.count("Originate") == 1
    await conn.stop()


async def test_commands_when_down_are_not_sent(sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(free_port()), sink)
    with pytest.raises(RetryableError):
        await conn.start()
    with pytest.raises(RetryableError, match="not sent"):
        await conn.originate(OriginateRequest("Local/110@agents", "1", "x", "110"))
    with pytest.raises(RetryableError, match="not sent"):
        await conn.hangup("PJSIP/201-00000001")
    await conn.stop()


async def test_hangup(fake: FakeAmi, sink: RecordingSink) -> None:
    fake.channels = [CHANNEL_A]
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    await conn.hangup("PJSIP/201-00000001")
    assert fake.actions[-1] == {
        "Action": "Hangup",
        "ActionID": fake.actions[-1]["ActionID"],
        "Channel": "PJSIP/201-00000001",
    }
    await conn.stop()


async def test_burst_of_10000_events_in_order(fake: FakeAmi, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    await fake.send(*(new_channel(f"u-{i}", Seq=str(i)) for i in range(10_000)))
    await eventually(lambda: len(sink.named("Newchannel")) == 10_000, "all 10,000 events")
    assert [int(e["Seq"]) for e in sink.named("Newchannel")] == list(range(10_000))
    assert conn.connected and fake.connections == 1
    await conn.stop()


async def test_slow_sink_drops_then_resyncs_without_losing_the_link(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()

    class SlowSink(RecordingSink):
        async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
            if event["Event"] == "Newchannel":
                await gate.wait()
            self.log.append(("event", event))

    sink = SlowSink()
    conn = AmiConnector(
        settings_for(fake.port, event_queue_size=100, ping_interval=0.05, ping_timeout=0.2), sink
    )
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    with caplog.at_level(logging.ERROR, logger="connectors.ami"):
        await fake.send(*(new_channel(f"u-{i}", Seq=str(i)) for i in range(1_000)))
        pings = fake.count("Ping")
        # The reader keeps going while the sink is stuck: Pings are still answered in time.
        await eventually(lambda: fake.count("Ping") >= pings + 3, "pings while the sink is stuck")
        assert conn.connected and fake.connections == 1
        gate.set()
        await eventually(lambda: len(sink.resyncs) == 2, "resync after the overflow")
    seqs = [int(e["Seq"]) for e in sink.named("Newchannel")]
    assert seqs == sorted(seqs) and 100 <= len(seqs) < 1_000
    assert any("queue full" in r.getMessage() for r in caplog.records)
    assert sink.log[-1][0] == "resync"
    await conn.stop()


async def test_login_refused_on_reconnect_heals(
    fake: FakeAmi, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    conn = AmiConnector(settings_for(fake.port, reconnect_max=0.1), sink)
    await conn.start()
    fake.secret = "rotated"
    with caplog.at_level(logging.ERROR, logger="connectors.ami"):
        await fake.drop_clients()
        await eventually(lambda: fake.connections >= 3, "retries while refused")
    assert any("refused login" in r.getMessage() for r in caplog.records)
    assert not conn.connected
    fake.secret = "hubsecret"
    await eventually(lambda: conn.connected, "login accepted again")
    await conn.stop()


async def test_a_failing_sink_does_not_stop_delivery(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    class FlakySink(RecordingSink):
        async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
            if event.get("Uniqueid") == "u-1":
                raise RuntimeError("tracker bug")
            await super().on_event(event, at)

    sink = FlakySink()
    conn = AmiConnector(settings_for(fake.port), sink)
    await conn.start()
    with caplog.at_level(logging.ERROR, logger="connectors.ami"):
        await fake.send(*(new_channel(f"u-{i}") for i in range(3)))
        await eventually(lambda: len(sink.named("Newchannel")) == 2, "the other events")
    assert [e["Uniqueid"] for e in sink.named("Newchannel")] == ["u-0", "u-2"]
    assert any("tracker bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert conn.connected
    await conn.stop()


async def test_stop_during_start_ends_start(sink: RecordingSink) -> None:
    # A listener that accepts and never answers: start() waits for the Login answer.
    writers: list[asyncio.StreamWriter] = []

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = AmiConnector(settings_for(port, connect_timeout=30.0), sink)
    starting = asyncio.create_task(conn.start())
    await asyncio.sleep(0.1)
    await conn.stop()
    with pytest.raises(RetryableError, match="stopped before the first login"):
        await starting
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_stop_leaves_no_task_running(sink: RecordingSink) -> None:
    before = asyncio.all_tasks()
    async with FakeAmi() as fake:
        conn = AmiConnector(settings_for(fake.port), sink)
        await conn.start()
        await fake.send(*(new_channel(f"u-{i}") for i in range(100)))
        await conn.stop()
    assert asyncio.all_tasks() - before == set()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ami-")]
