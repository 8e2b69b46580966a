"""Live-call actions: CoreShowChannels, Hangup and Originate against running calls."""

from __future__ import annotations

from connectors.pbxsim import PbxSimulator
from connectors.pbxsim.frames import Frame
from tests.connectors.pbxsim.conftest import AmiClient
from tests.connectors.pbxsim.test_scenarios import check_consistency, events

LONG = 60.0  # a call that only ends when the test ends it


async def show_channels(client: AmiClient, action_id: str) -> tuple[Frame, list[Frame], Frame]:
    response = await client.action("CoreShowChannels", action_id)
    frames = await client.read_until(
        lambda f: f.get("Event") == "CoreShowChannelsComplete" and f.get("ActionID") == action_id
    )
    listed = [f for f in frames if f.get("Event") == "CoreShowChannel"]
    return response, listed, frames[-1]


async def wait_bridged(client: AmiClient) -> list[Frame]:
    seen: list[Frame] = []
    entered = 0
    while entered < 2:
        frame = await client.read_frame()
        seen.append(frame)
        entered += frame.get("Event") == "BridgeEnter"
    return seen


async def test_coreshowchannels_lists_live_channels_mid_call(
    sim: PbxSimulator, client: AmiClient
) -> None:
    linkedid = await sim.place_call("answered", extension="204", ring=0.01, talk=LONG)
    before = await wait_bridged(client)
    response, listed, complete = await show_channels(client, "csc-1")
    assert response.fields == [
        ("Response", "Success"),
        ("ActionID", "csc-1"),
        ("EventList", "start"),
        ("Message", "Channels will follow"),
    ]
    assert complete.fields == [
        ("Event", "CoreShowChannelsComplete"),
        ("ActionID", "csc-1"),
        ("EventList", "Complete"),
        ("ListItems", "2"),
    ]
    names = [f.get("Channel") for f in events(before, "Newchannel")]
    assert [f.get("Channel") for f in listed] == names
    assert {f.get("Linkedid") for f in listed} == {linkedid}
    assert {f.get("ChannelStateDesc") for f in listed} == {"Up"}
    bridge_ids = {f.get("BridgeId") for f in listed}
    assert len(bridge_ids) == 1 and bridge_ids != {""}
    assert [key for key, _ in listed[0].fields][-4:] == [
        "BridgeId",
        "Application",
        "ApplicationData",
        "Duration",
    ]
    assert listed[0].get("Duration") == "00:00:00"
    await client.action("Hangup", "h1", ("Channel", names[0] or ""))
    await sim.wait_idle()
    _, listed, complete = await show_channels(client, "csc-2")
    assert listed == [] and complete.get("ListItems") == "0"


async def test_ami_hangup_ends_a_bridged_call_consistently(
    sim: PbxSimulator, client: AmiClient
) -> None:
    await sim.place_call("answered", ring=0.01, talk=LONG)
    before = await wait_bridged(client)
    agent = events(before, "Newchannel")[1].get("Channel") or ""
    response = await client.action("Hangup", "hang-1", ("Channel", agent), ("Cause", "16"))
    assert response.fields == [
        ("Response", "Success"),
        ("ActionID", "hang-1"),
        ("Message", "Channel Hungup"),
    ]
    await sim.wait_idle()
    after = await client.sync()
    check_consistency(before + after)
    assert events(after, "SoftHangupRequest")[0].get("Channel") == agent
    assert events(after, "Hangup")[0].get("Channel") == agent
    missing = await client.action("Hangup", "hang-2", ("Channel", agent))
    assert missing.get("Message") == "No such channel"


async def test_ami_hangup_of_the_caller_while_ringing_cancels_the_dial(
    sim: PbxSimulator, client: AmiClient
) -> None:
    await sim.place_call("answered", ring=LONG)
    before = await client.read_until(lambda f: f.get("Event") == "DialState")
    trunk = events(before, "Newchannel")[0].get("Channel") or ""
    await client.action("Hangup", "hang-3", ("Channel", trunk))
    await sim.wait_idle()
    after = await client.sync()
    check_consistency(before + after)
    assert [f.get("DialStatus") for f in events(after, "DialEnd")] == ["CANCEL"]


async def test_ami_hangup_of_a_queue_caller_is_an_abandon(
    sim: PbxSimulator, client: AmiClient
) -> None:
    await sim.place_call("queue", ring=LONG)
    before = await client.read_until(lambda f: f.get("Event") == "DialState")
    trunk = events(before, "Newchannel")[0].get("Channel") or ""
    await client.action("Hangup", "hang-4", ("Channel", trunk))
    await sim.wait_idle()
    after = await client.sync()
    check_consistency(before + after)
    assert len(events(after, "QueueCallerAbandon")) == 1


async def test_reconnect_mid_call_sees_the_call_and_its_end(sim: PbxSimulator) -> None:
    first = await AmiClient.connect(sim.port)
    await first.login_and_settle()
    linkedid = await sim.place_call("answered", ring=0.01, talk=LONG)
    await wait_bridged(first)
    await sim.drop_clients()
    assert await first.eof()
    await first.close()
    second = await AmiClient.connect(sim.port)
    await second.login_and_settle()
    _, listed, _ = await show_channels(second, "after-reconnect")
    assert len(listed) == 2 and {f.get("Linkedid") for f in listed} == {linkedid}
    await second.action("Hangup", "end", ("Channel", listed[0].get("Channel") or ""))
    await sim.wait_idle()
    hangups = events(await second.sync(), "Hangup")
    assert {f.get("Channel") for f in hangups} == {f.get("Channel") for f in listed}
    await second.close()


async def test_originate_known_device_runs_click_to_call(
    sim: PbxSimulator, client: AmiClient
) -> None:
    sim.click_to_call_options = {"ring": 0.01, "talk": 0.02}
    response = await client.action(
        "Originate",
        "originate-2",
        ("Channel", "PJSIP/201"),
        ("Context", "from-internal"),
        ("Exten", "+4930987654"),
        ("Priority", "1"),
        ("CallerID", '"Agent 201" <201>'),
        ("Timeout", "30000"),
        ("Variable", "CRM_CALL_ID=c2c-0001"),
        ("Async", "true"),
    )
    assert response.fields == [
        ("Response", "Success"),
        ("ActionID", "originate-2"),
        ("Message", "Originate successfully queued"),
    ]
    await sim.wait_idle()
    frames = await client.sync()
    check_consistency(frames)
    result = events(frames, "OriginateResponse")
    assert len(result) == 1
    assert result[0].fields[3:5] == [("ActionID", "originate-2"), ("Response", "Success")]
    assert result[0].get("Reason") == "4" and result[0].get("Exten") == "+4930987654"
    agent = events(frames, "Newchannel")[0]
    assert result[0].get("Uniqueid") == agent.get("Uniqueid")
    variables = [(f.get("Variable"), f.get("Value")) for f in events(frames, "VarSet")]
    assert ("CRM_CALL_ID", "c2c-0001") in variables
    remote = events(frames, "NewCallerid")[-1]
    assert remote.get("CallerIDNum") == "+4930987654"
    assert remote.get("ConnectedLineNum") == "201"
    originates = [a for a in sim.actions if a.get("Action") == "Originate"]
    assert len(originates) == 1 and originates[0]["ActionID"] == "originate-2"


async def test_originate_unknown_device_fails_with_reason_0(
    sim: PbxSimulator, client: AmiClient
) -> None:
    response = await client.action(
        "Originate",
        "o-bad",
        ("Channel", "PJSIP/999"),
        ("Application", "Wait"),
        ("Data", "60"),
        ("CallerID", '"Max Mustermann" <+4930123456>'),
        ("Async", "true"),
    )
    assert response.get("Message") == "Originate successfully queued"
    failure = await client.read_until(lambda f: f.get("Event") == "OriginateResponse")
    assert [key for key, value in failure[-1].fields] == [
        "Event",
        "Privilege",
        "SystemName",
        "ActionID",
        "Response",
        "Channel",
        "Application",
        "Data",
        "Reason",
        "Uniqueid",
        "CallerIDNum",
        "CallerIDName",
    ]
    assert failure[-1].fields[4:] == [
        ("Response", "Failure"),
        ("Channel", "PJSIP/999"),
        ("Application", "Wait"),
        ("Data", "60"),
        ("Reason", "0"),
        ("Uniqueid", "<unknown>"),
        ("CallerIDNum", "+4930123456"),
        ("CallerIDName", "Max Mustermann"),
    ]
    assert sim.live_channels() == []


async def test_originate_agent_not_answering_fails_with_reason_3(
    sim: PbxSimulator, client: AmiClient
) -> None:
    sim.click_to_call_options = {"ring": 0.01, "agent_answers": False}
    await client.action(
        "Originate",
        "o-na",
        ("Channel", "PJSIP/202"),
        ("Exten", "+4930987654"),
        ("Async", "yes"),
    )
    await sim.wait_idle()
    frames = await client.sync()
    check_consistency(frames)
    result = events(frames, "OriginateResponse")[0]
    assert (result.get("Response"), result.get("Reason")) == ("Failure", "3")
    assert result.get("Channel") == "PJSIP/202"


async def test_synchronous_originate_answers_after_the_agent_picks_up(
    sim: PbxSimulator, client: AmiClient
) -> None:
    sim.click_to_call_options = {"ring": 0.01, "talk": 0.01}
    await client.send(
        ("Action", "Originate"), ("ActionID", "o-sync"), ("Channel", "pjsip/203"), ("Exten", "204")
    )
    # A synchronous Originate answers only once the agent's phone is up.
    frames = await client.read_until(lambda f: f.get("ActionID") == "o-sync")
    assert frames[-1].get("Message") == "Originate successfully queued"
    assert "BridgeEnter" not in {f.get("Event") for f in frames}
    await sim.wait_idle()
    frames = frames[:-1] + await client.sync()
    check_consistency(frames)
    assert not events(frames, "OriginateResponse")
    remote = events(frames, "Newchannel")[-1].get("Channel") or ""
    assert remote.startswith("PJSIP/204-")  # an internal extension, not the trunk
    failed = await client.action("Originate", "o-sync-2", ("Channel", "PJSIP/777"))
    assert failed.get("Response") == "Error" and failed.get("Message") == "Originate failed"
    invalid = await client.action("Originate", "o-sync-3", ("Channel", "nonsense"))
    assert invalid.get("Message") == "Invalid channel"


async def test_hanging_up_a_ringing_originate_reports_failure(
    sim: PbxSimulator, client: AmiClient
) -> None:
    sim.click_to_call_options = {"ring": LONG}
    await client.action(
        "Originate", "o-hang", ("Channel", "PJSIP/206"), ("Exten", "+4930555"), ("Async", "1")
    )
    before = await client.read_until(lambda f: f.get("Event") == "DialState")
    agent = events(before, "Newchannel")[0].get("Channel", "")
    await client.action("Hangup", "kill", ("Channel", agent))
    await sim.wait_idle()
    after = await client.sync()
    check_consistency(before + after)
    result = events(after, "OriginateResponse")
    assert [(f.get("ActionID"), f.get("Response"), f.get("Reason")) for f in result] == [
        ("o-hang", "Failure", "1")
    ]
