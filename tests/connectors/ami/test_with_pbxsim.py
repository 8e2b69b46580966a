"""The connector against our PBX simulator: real call flows, restarts, click-to-call, dead links."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.ami import AmiConnector
from connectors.pbxsim import PbxSimulator
from hub.errors import AuthError, PermanentError
from hub.telephony.ports import OriginateRequest

from .conftest import RecordingSink, eventually, settings_for
from .test_protocol import reference_events

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"


@pytest.fixture
async def sim() -> AsyncIterator[PbxSimulator]:
    """A running simulator with one agent phone."""
    async with PbxSimulator(
        host="127.0.0.1",
        port=0,
        username="hub",
        secret="hubsecret",
        systemname="pbxsim",
        devices={"201": "PJSIP/201"},
    ) as server:
        yield server


def of_call(sink: RecordingSink, linkedid: str) -> list[dict[str, str]]:
    return [e for e in sink.events if e.get("Linkedid") == linkedid]


async def test_answered_call_arrives_whole_and_in_order(
    sim: PbxSimulator, sink: RecordingSink
) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    linkedid = await sim.place_call("answered", caller="+4930123456", extension="201")
    await sim.wait_idle()
    await eventually(
        lambda: (
            any(e.get("Event") == "Hangup" for e in of_call(sink, linkedid))
            and not sim.live_channels()
        ),
        "the call's hangups",
    )
    names = [e["Event"] for e in of_call(sink, linkedid)]
    assert names[0] == "Newchannel"
    for first, then in (
        ("Newchannel", "DialBegin"),
        ("DialBegin", "DialEnd"),
        ("DialEnd", "Hangup"),
    ):
        assert names.index(first) < names.index(then)
    await conn.stop()


async def test_call_that_ends_during_an_outage_is_missing_from_the_resync(
    sim: PbxSimulator, sink: RecordingSink
) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    linkedid = await sim.place_call("answered", extension="201", ring=0.05, talk=0.5)
    await eventually(
        lambda: any(e["Event"] == "BridgeEnter" for e in of_call(sink, linkedid)), "call answered"
    )
    # Asterisk goes away with the call still up; the call ends while nobody listens.
    await sim.stop(keep_calls=True)
    await eventually(lambda: not conn.connected, "link down")
    await sim.wait_idle()
    await sim.start()
    await eventually(lambda: len(sink.resyncs) == 2, "resync after reconnect")
    await conn.stop()

    down = sink.log.index(next(e for e in sink.log if e[0] == "link" and not e[1]))
    assert all(e[0] != "event" or e[1].get("Linkedid") != linkedid for e in sink.log[down:])
    assert not any(c.get("Linkedid") == linkedid for c in sink.resyncs[1])
    assert not any(e["Event"] == "Hangup" for e in of_call(sink, linkedid))


async def test_live_call_is_in_the_resync_and_its_end_follows(
    sim: PbxSimulator, sink: RecordingSink
) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    linkedid = await sim.place_call("answered", extension="201", ring=0.05, talk=30.0)
    await eventually(
        lambda: any(e["Event"] == "BridgeEnter" for e in of_call(sink, linkedid)), "call answered"
    )
    await sim.drop_clients()
    await eventually(lambda: len(sink.resyncs) == 2, "resync after reconnect")
    live = [c for c in sink.resyncs[1] if c.get("Linkedid") == linkedid]
    assert live, "the call is still up, so CoreShowChannels lists it"
    await conn.hangup(live[0]["Channel"])
    await sim.wait_idle()
    await eventually(
        lambda: any(e["Event"] == "Hangup" for e in of_call(sink, linkedid)), "hangup event"
    )
    resync_at = max(i for i, e in enumerate(sink.log) if e[0] == "resync")
    first_hangup = next(
        i
        for i, e in enumerate(sink.log)
        if e[0] == "event" and e[1]["Event"] == "Hangup" and e[1].get("Linkedid") == linkedid
    )
    assert resync_at < first_hangup
    with pytest.raises(PermanentError, match="No such channel"):
        await conn.hangup(live[0]["Channel"])
    await conn.stop()


async def test_click_to_call(sim: PbxSimulator, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    request = OriginateRequest(
        channel="PJSIP/201",
        exten="+4930987654",
        context="from-internal",
        caller_id='"Agent 201" <201>',
        variables={"CRM_CALL_ID": "c2c-0001"},
        request_id="c2c-0001",
    )
    assert await conn.originate(request) == "c2c-0001"
    await eventually(lambda: bool(sink.named("OriginateResponse")), "OriginateResponse")
    assert sink.named("OriginateResponse")[0]["ActionID"] == "c2c-0001"
    assert sink.named("OriginateResponse")[0]["Response"] == "Success"
    await sim.wait_idle()
    sent = [a for a in sim.actions if a.get("Action") == "Originate"]
    assert len(sent) == 1 and sent[0]["Async"] == "true"
    await conn.stop()


async def test_originate_to_unknown_phone_reports_failure_later(
    sim: PbxSimulator, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    with caplog.at_level(logging.WARNING, logger="connectors.ami"):
        await conn.originate(OriginateRequest("PJSIP/999", "+4930987654", "from-internal", "999"))
        await eventually(lambda: bool(sink.named("OriginateResponse")), "OriginateResponse")
    assert sink.named("OriginateResponse")[0]["Response"] == "Failure"
    assert any("failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(PermanentError, match="Invalid channel"):
        await conn.originate(OriginateRequest("nonsense", "1", "from-internal", "1"))
    await conn.stop()


async def test_silent_simulator_is_detected(sim: PbxSimulator, sink: RecordingSink) -> None:
    conn = AmiConnector(
        settings_for(sim.port, ping_interval=0.1, ping_timeout=0.1, connect_timeout=0.3), sink
    )
    await conn.start()
    sim.set_silent(True)
    await eventually(lambda: not conn.connected, "dead link noticed")
    assert "Ping" in next(e for e in sink.log if e[0] == "link" and not e[1])[2]
    sim.set_silent(False)
    await eventually(lambda: conn.connected, "back after the silence")
    await conn.stop()


async def test_wrong_secret_logs_in_once(sim: PbxSimulator, sink: RecordingSink) -> None:
    conn = AmiConnector(settings_for(sim.port, secret="wrong", reconnect_min=0.01), sink)
    with pytest.raises(AuthError, match="Authentication failed"):
        await conn.start()
    assert [a["Action"] for a in sim.actions] == ["Login"]


async def test_replayed_trace_reaches_the_sink_unchanged(
    sim: PbxSimulator, sink: RecordingSink
) -> None:
    conn = AmiConnector(settings_for(sim.port), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "first resync")
    before = len(sink.events)
    path = TRACES / "inbound-queue.ami"
    await sim.replay(path)
    expected = reference_events(path.read_bytes())
    expected = [e for e in expected if e["Event"] not in ("FullyBooted", "SuccessfulAuth")]
    await eventually(lambda: len(sink.events) - before >= len(expected), "the whole trace")
    got = [e for e in sink.events[before:] if e["Event"] not in ("FullyBooted", "SuccessfulAuth")]
    assert got == expected
    await conn.stop()
