"""Every scenario yields a well-formed, internally consistent event stream shaped like Asterisk's."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

import pytest

from connectors.pbxsim import SCENARIOS, PbxSimulator
from connectors.pbxsim.frames import Frame, FrameParser, fields_of, split_raw_frames
from connectors.pbxsim.replay import login_prefix_length
from tests.connectors.pbxsim.conftest import FIXTURES, AmiClient, need_cacofonisk

UNIQUEID = re.compile(r"^pbxsim-\d{10}\.\d+$")
CHANNEL = re.compile(r"^PJSIP/(trunk|\d+)-[0-9a-f]{8}$")


async def run_scenario(
    sim: PbxSimulator, client: AmiClient, scenario: str, **kw: Any
) -> tuple[str, list[Frame]]:
    kw.setdefault("ring", 0.01)
    kw.setdefault("talk", 0.02)
    linkedid = await sim.place_call(scenario, **kw)
    await sim.wait_idle()
    return linkedid, await client.sync()


def check_consistency(frames: list[Frame]) -> dict[str, str]:
    """Invariants any tracker relies on; returns uniqueid -> channel name."""
    names: dict[str, str] = {}
    hung_up: set[str] = set()
    dials: Counter[tuple[str, str]] = Counter()
    bridges: dict[str, set[str]] = {}
    destroyed: set[str] = set()
    for frame in frames:
        event = frame.get("Event")
        assert event, frame
        assert [key for key, _ in frame.fields[:3]] == ["Event", "Privilege", "SystemName"]
        # Cdr spells it UniqueID and, as in Asterisk, arrives after the Hangup; a failed
        # OriginateResponse names the requested channel and Uniqueid <unknown>.
        uid = frame.get("Uniqueid") if event not in ("Cdr", "OriginateResponse") else None
        if event == "OriginateResponse" and frame.get("Response") == "Success":
            assert frame.get("Uniqueid") in names
        if event == "Newchannel":
            assert uid and UNIQUEID.match(uid), uid
            assert uid not in names, f"duplicate Newchannel {uid}"
            assert CHANNEL.match(frame.get("Channel") or ""), frame.get("Channel")
            names[uid] = frame.get("Channel") or ""
        elif uid is not None:
            assert uid in names, f"{event} for unknown channel {uid}"
            assert uid not in hung_up, f"{event} after Hangup of {uid}"
            assert frame.get("Channel") == names[uid]
        for prefix in ("Dest", "Transferer", "Transferee", "OrigTransferer", "TransferTarget"):
            other = frame.get(f"{prefix}Uniqueid")
            if other is not None and event != "Cdr":
                assert other in names and other not in hung_up, (event, prefix, other)
        linkedid = frame.get("Linkedid")
        if linkedid is not None:
            assert linkedid in names, f"Linkedid {linkedid} is no channel's Uniqueid"
        if event == "Hangup":
            hung_up.add(uid or "")
            cause = int(frame.get("Cause") or "-1")
            assert cause >= 0 and frame.get("Cause-txt"), frame
        elif event == "DialBegin":
            dials[(frame.get("Uniqueid") or "", frame.get("DestUniqueid") or "")] += 1
        elif event == "DialEnd":
            key = (frame.get("Uniqueid") or "", frame.get("DestUniqueid") or "")
            assert dials[key] > 0, f"DialEnd without DialBegin {key}"
            dials[key] -= 1
            assert frame.get("DialStatus") in ("ANSWER", "NOANSWER", "BUSY", "CANCEL", "CONGESTION")
        elif event == "BridgeCreate":
            bridges[frame.get("BridgeUniqueid") or ""] = set()
        elif event == "BridgeEnter":
            members = bridges[frame.get("BridgeUniqueid") or ""]
            members.add(uid or "")
            assert frame.get("BridgeNumChannels") == str(len(members))
        elif event == "BridgeLeave":
            members = bridges[frame.get("BridgeUniqueid") or ""]
            members.remove(uid or "")
            assert frame.get("BridgeNumChannels") == str(len(members))
        elif event == "BridgeDestroy":
            bridge = frame.get("BridgeUniqueid") or ""
            assert bridges[bridge] == set()
            destroyed.add(bridge)
    assert set(names) == hung_up, f"never hung up: {set(names) - hung_up}"
    assert all(count == 0 for count in dials.values()), f"DialBegin without DialEnd: {dials}"
    assert set(bridges) == destroyed, "a bridge was never destroyed"
    return names


def _keys(fields: list[tuple[str, str]]) -> tuple[str, ...]:
    # Asterisk writes ActionID only when the action had one (place_call has none).
    return tuple(key for key, _ in fields if key != "ActionID")


def events(frames: list[Frame], name: str) -> list[Frame]:
    return [frame for frame in frames if frame.get("Event") == name]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_scenario_stream_is_consistent(
    sim: PbxSimulator, client: AmiClient, scenario: str
) -> None:
    linkedid, frames = await run_scenario(sim, client, scenario)
    names = check_consistency(frames)
    assert linkedid in names
    first = events(frames, "Newchannel")[0]
    assert first.get("Uniqueid") == linkedid == first.get("Linkedid")
    if scenario != "attended_transfer":
        assert {frame.get("Linkedid") for frame in frames if frame.get("Linkedid")} == {linkedid}
    assert events(frames, "Cdr"), "CDR is enabled on this PBX"
    assert sim.live_channels() == []


async def test_answered_reads_like_the_recording(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(sim, client, "answered", caller="+4930111222", extension="203")
    trunk, agent = (frame.get("Channel") or "" for frame in events(frames, "Newchannel"))
    assert trunk.startswith("PJSIP/trunk-") and agent.startswith("PJSIP/203-")
    assert events(frames, "Newchannel")[0].get("CallerIDNum") == "+4930111222"
    begin = events(frames, "DialBegin")[0]
    assert begin.get("Channel") == trunk and begin.get("DestChannel") == agent
    assert begin.get("DestConnectedLineNum") == "+4930111222"
    assert [f.get("DialStatus") for f in events(frames, "DialEnd")] == ["ANSWER"]
    assert [f.get("Channel") for f in events(frames, "BridgeEnter")] == [agent, trunk]
    assert [f.get("Channel") for f in events(frames, "Hangup")] == [agent, trunk]
    cdr = events(frames, "Cdr")[0]
    assert cdr.get("Disposition") == "ANSWERED" and cdr.get("DestinationChannel") == agent


@pytest.mark.parametrize(
    ("scenario", "status", "cause", "disposition"),
    [
        ("missed", "NOANSWER", "0", "NO ANSWER"),
        ("busy", "BUSY", "17", "BUSY"),
        ("cancel", "CANCEL", "0", "NO ANSWER"),
    ],
)
async def test_unanswered_outcomes(
    sim: PbxSimulator,
    client: AmiClient,
    scenario: str,
    status: str,
    cause: str,
    disposition: str,
) -> None:
    _, frames = await run_scenario(sim, client, scenario)
    agent = events(frames, "Newchannel")[1].get("Channel")
    assert [f.get("DialStatus") for f in events(frames, "DialEnd")] == [status]
    assert not events(frames, "BridgeEnter")
    hangup = next(f for f in events(frames, "Hangup") if f.get("Channel") == agent)
    assert hangup.get("Cause") == cause
    assert events(frames, "Cdr")[0].get("Disposition") == disposition
    if scenario == "cancel":
        trunk = events(frames, "Newchannel")[0].get("Channel")
        assert events(frames, "HangupRequest")[0].get("Channel") == trunk
    if scenario == "busy":
        assert not events(frames, "DialState")


async def test_queue_two_members_one_answers(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(sim, client, "queue", members=["201", "202"], answered_by="202")
    called = [f.get("Interface") for f in events(frames, "AgentCalled")]
    assert called == ["PJSIP/201", "PJSIP/202"]
    connect = events(frames, "AgentConnect")
    assert [f.get("Interface") for f in connect] == ["PJSIP/202"]
    assert (connect[0].get("DestChannel") or "").startswith("PJSIP/202-")
    statuses = {
        f.get("DestChannel", "")[:9]: f.get("DialStatus") for f in events(frames, "DialEnd")
    }
    assert statuses == {"PJSIP/201": "CANCEL", "PJSIP/202": "ANSWER"}
    loser = next(f for f in events(frames, "Hangup") if (f.get("Channel") or "")[:9] == "PJSIP/201")
    assert (loser.get("Cause"), loser.get("Cause-txt")) == ("26", "Answered elsewhere")
    order = [f.get("Event") for f in frames if f.get("Event", "").startswith(("Queue", "Agent"))]
    assert order == [
        "QueueCallerJoin",
        "AgentCalled",
        "AgentCalled",
        "QueueCallerLeave",
        "AgentConnect",
        "AgentComplete",
    ]


async def test_queue_linear_rings_in_turn(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(
        sim, client, "queue", members=["201", "202"], answered_by="202", strategy="linear"
    )
    check_consistency(frames)
    no_answer = events(frames, "AgentRingNoAnswer")
    assert [f.get("Interface") for f in no_answer] == ["PJSIP/201"]
    assert int(no_answer[0].get("RingTime") or "-1") >= 0
    assert [f.get("Interface") for f in events(frames, "AgentConnect")] == ["PJSIP/202"]


async def test_queue_abandon(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(sim, client, "queue_abandon")
    abandon = events(frames, "QueueCallerAbandon")
    assert len(abandon) == 1 and abandon[0].get("Queue") == "support"
    assert not events(frames, "AgentConnect") and not events(frames, "BridgeEnter")
    assert {f.get("DialStatus") for f in events(frames, "DialEnd")} == {"CANCEL"}


async def test_blind_transfer(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(sim, client, "blind_transfer", transfer_to="204")
    transfer = events(frames, "BlindTransfer")
    assert len(transfer) == 1
    assert (transfer[0].get("TransfererChannel") or "").startswith("PJSIP/201-")
    assert (transfer[0].get("TransfereeChannel") or "").startswith("PJSIP/trunk-")
    assert transfer[0].get("Extension") == "204"
    answered = [f.get("DestChannel", "")[:9] for f in events(frames, "DialEnd")]
    assert answered == ["PJSIP/201", "PJSIP/204"]


async def test_attended_transfer_merges_linkedid(sim: PbxSimulator, client: AmiClient) -> None:
    linkedid, frames = await run_scenario(sim, client, "attended_transfer", transfer_to="202")
    names = check_consistency(frames)
    transfer = events(frames, "AttendedTransfer")
    assert len(transfer) == 1
    target = transfer[0].get("TransferTargetChannel") or ""
    assert target.startswith("PJSIP/202-")
    assert transfer[0].get("DestType") == "Bridge"
    consult_linkedid = transfer[0].get("SecondTransfererLinkedid")
    assert consult_linkedid != linkedid and consult_linkedid in names
    target_events = [f for f in frames if f.get("Channel") == target]
    assert target_events[0].get("Linkedid") == consult_linkedid
    assert target_events[-1].get("Event") == "Hangup"
    assert target_events[-1].get("Linkedid") == linkedid


async def test_anonymous_caller(sim: PbxSimulator, client: AmiClient) -> None:
    _, frames = await run_scenario(sim, client, "anonymous")
    trunk = events(frames, "Newchannel")[0]
    assert trunk.get("CallerIDNum") == "anonymous"
    pres = events(frames, "NewCallerid")[0]
    assert pres.get("Channel") == trunk.get("Channel")
    assert "Prohibited" in (pres.get("CID-CallingPres") or "")
    _, frames = await run_scenario(sim, client, "anonymous", anonymous_style="unknown")
    assert events(frames, "Newchannel")[0].get("CallerIDNum") == "<unknown>"


async def test_recorded_call_names_its_file(sim: PbxSimulator, client: AmiClient) -> None:
    linkedid, frames = await run_scenario(sim, client, "recorded")
    varset = [f for f in events(frames, "VarSet") if f.get("Variable") == "MIXMONITOR_FILENAME"]
    assert [f.get("Value") for f in varset] == [f"/var/spool/asterisk/monitor/{linkedid}.wav"]
    assert len(events(frames, "MixMonitorStart")) == 1


async def test_click_to_call_via_place_call(sim: PbxSimulator, client: AmiClient) -> None:
    linkedid, frames = await run_scenario(
        sim, client, "click_to_call", extension="205", number="+4940123456"
    )
    response = events(frames, "OriginateResponse")
    assert [(f.get("Response"), f.get("Reason"), f.get("Uniqueid")) for f in response] == [
        ("Success", "4", linkedid)
    ]
    remote = events(frames, "Newchannel")[1]
    assert (remote.get("Channel") or "").startswith("PJSIP/trunk-")
    assert events(frames, "DialBegin")[0].get("Channel") is None  # originated: no caller


async def test_unknown_scenario_and_bad_parameters_are_refused(sim: PbxSimulator) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        await sim.place_call("nope")
    with pytest.raises(TypeError):
        await sim.place_call("answered", colour="blue")
    with pytest.raises(ValueError, match="hangup_by"):
        await sim.place_call("answered", hangup_by="nobody")


async def test_event_field_order_matches_the_asterisk22_recordings(
    sim: PbxSimulator, client: AmiClient
) -> None:
    recorded: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for path in FIXTURES.glob("*.ami"):
        data = path.read_bytes()
        for raw in split_raw_frames(data[login_prefix_length(data) :]):
            fields = fields_of(raw)
            if fields and fields[0][0] == "Event":
                recorded[fields[0][1]].add(_keys(fields))
    ours: list[Frame] = []
    for scenario in SCENARIOS:
        ours += (await run_scenario(sim, client, scenario))[1]
    compared = set()
    for frame in ours:
        name = frame.get("Event") or ""
        if name in recorded:
            assert _keys(frame.fields) in recorded[name], name
            compared.add(name)
    assert {
        "Newchannel",
        "Newexten",
        "VarSet",
        "NewCallerid",
        "NewConnectedLine",
        "Newstate",
        "DialBegin",
        "DialState",
        "DialEnd",
        "BridgeCreate",
        "BridgeEnter",
        "BridgeLeave",
        "BridgeDestroy",
        "HangupRequest",
        "SoftHangupRequest",
        "Hangup",
        "Cdr",
        "QueueCallerJoin",
        "QueueCallerLeave",
        "AgentCalled",
        "AgentConnect",
        "AgentComplete",
        "MusicOnHoldStart",
        "MusicOnHoldStop",
        "MixMonitorStart",
        "OriginateResponse",
    } <= compared


async def test_transfer_and_abandon_fields_cover_the_cacofonisk_recordings(
    sim: PbxSimulator, client: AmiClient
) -> None:
    root = need_cacofonisk()
    recorded: dict[str, set[str]] = {}
    for path in root.glob("*/*.json"):
        if path.name == "expected.json":
            continue
        for event in json.loads(path.read_text()):
            if event["Event"] in ("BlindTransfer", "AttendedTransfer", "QueueCallerAbandon"):
                recorded[event["Event"]] = set(event) - {"content"}
    ours: dict[str, set[str]] = {}
    for scenario in ("blind_transfer", "attended_transfer", "queue_abandon"):
        for frame in (await run_scenario(sim, client, scenario))[1]:
            name = frame.get("Event") or ""
            if name in recorded:
                ours[name] = {key for key, _ in frame.fields}
    assert set(ours) == set(recorded)
    for name, keys in recorded.items():
        # Asterisk 20 added Transferee*/TransferTarget* to AttendedTransfer: ours may have more.
        assert keys <= ours[name], (name, keys - ours[name])


def test_frame_parser_handles_split_reads() -> None:
    parser = FrameParser()
    assert parser.feed(b"Action: Pi") == []
    assert parser.feed(b"ng\r\nActionID: 1\r") == []
    frames = parser.feed(b"\n\r\nAction: Ping\r\n\r\n")
    assert [f.fields for f in frames] == [
        [("Action", "Ping"), ("ActionID", "1")],
        [("Action", "Ping")],
    ]
