"""The real client library (panoramisk) logs in to the simulator, acts and receives events."""

from __future__ import annotations

import asyncio
from typing import Any

from panoramisk import Manager

from connectors.pbxsim import PbxSimulator


async def connected_manager(sim: PbxSimulator, events: list[Any]) -> Manager:
    manager = Manager(
        host="127.0.0.1",
        port=sim.port,
        username=sim.username,
        secret=sim.secret,
        ping_delay=60,
        loop=asyncio.get_running_loop(),
    )
    manager.register_event("*", lambda _manager, event: events.append(event))
    await manager.connect()
    async with asyncio.timeout(10):
        while not manager.authenticated:
            await asyncio.sleep(0.01)
    return manager


async def test_panoramisk_logs_in_and_receives_call_events(sim: PbxSimulator) -> None:
    events: list[Any] = []
    manager = await connected_manager(sim, events)
    try:
        linkedid = await sim.place_call("queue", ring=0.01, talk=0.01)
        await sim.wait_idle()
        pong = await manager.send_action({"Action": "Ping"})
        assert pong.ping == "Pong"
        names = [event.event for event in events]
        for expected in ("Newchannel", "AgentCalled", "AgentConnect", "BridgeEnter", "Hangup"):
            assert expected in names
        hangups = [event for event in events if event.event == "Hangup"]
        assert {event.linkedid for event in hangups} == {linkedid}
        assert "FullyBooted" in names
    finally:
        manager.close()


async def test_panoramisk_list_action_and_async_originate(sim: PbxSimulator) -> None:
    events: list[Any] = []
    manager = await connected_manager(sim, events)
    sim.click_to_call_options = {"ring": 0.01, "talk": 60}
    try:
        responses = await manager.send_action(
            {
                "Action": "Originate",
                "Channel": "PJSIP/201",
                "Context": "from-internal",
                "Exten": "+4930987654",
                "Priority": "1",
                "CallerID": '"Agent 201" <201>',
                "Async": "true",
            }
        )
        assert [r.response for r in responses] == ["Success", "Success"]
        assert responses[1].event == "OriginateResponse" and responses[1].reason == "4"
        async with asyncio.timeout(10):
            while len(sim.live_channels()) < 2:
                await asyncio.sleep(0.01)
        listing = await manager.send_action({"Action": "CoreShowChannels"})
        listed = [m for m in listing if m.event == "CoreShowChannel"]
        assert {m.channel for m in listed} == set(sim.live_channels())
        assert listing[-1].event == "CoreShowChannelsComplete"
        assert listing[-1].listitems == "2"
        hung = await manager.send_action({"Action": "Hangup", "Channel": listed[0].channel})
        assert hung.message == "Channel Hungup"
        await sim.wait_idle()
        assert sim.live_channels() == []
    finally:
        manager.close()
