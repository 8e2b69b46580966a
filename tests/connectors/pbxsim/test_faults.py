"""Fault injection for the AMI connector's tests: dropped sockets, a silent link, garbage,
an Asterisk restart on the same port, and the record of actions received."""

from __future__ import annotations

import asyncio
import contextlib

from connectors.pbxsim import PbxSimulator
from tests.connectors.pbxsim.conftest import AmiClient
from tests.connectors.pbxsim.test_live_calls import LONG, show_channels, wait_bridged


async def test_drop_clients_cuts_every_socket(sim: PbxSimulator) -> None:
    clients = [await AmiClient.connect(sim.port) for _ in range(3)]
    await clients[0].login_and_settle()
    await clients[1].login_and_settle()  # the third never logs in: it is cut all the same
    await sim.drop_clients()
    for ami in clients:
        assert await ami.eof()
        await ami.close()
    again = await AmiClient.connect(sim.port)
    await again.login_and_settle()
    await again.close()


async def test_silent_link_answers_nothing_until_it_wakes(
    sim: PbxSimulator, client: AmiClient
) -> None:
    sim.set_silent(True)
    await client.send(("Action", "Ping"), ("ActionID", "lost-ping"))
    await sim.place_call("answered", ring=0.01, talk=0.01)
    await sim.wait_idle()
    late = await AmiClient.connect(sim.port, banner=False)
    sim.set_silent(False)
    # Nothing sent while silent ever arrives: the first frame is the answer to a new Ping.
    pong = await client.action("Ping", "after")
    assert pong.get("Ping") == "Pong"
    assert client.buffer == b""
    assert [a.get("ActionID") for a in sim.actions[-2:]] == ["lost-ping", "after"]
    # A client that connected during the silence gets its banner once the link wakes.
    assert await late.read_line() == b"Asterisk Call Manager/11.0.0\r\n"
    await late.close()


async def test_send_raw_reaches_logged_in_clients_only(
    sim: PbxSimulator, client: AmiClient
) -> None:
    anonymous = await AmiClient.connect(sim.port)
    garbage = b"\x00\xffnot an AMI frame\r\nResponse Follows\r\n\r\n"
    await sim.send_raw(garbage)
    assert await client.read_exact(len(garbage)) == garbage
    denied = await anonymous.action("Ping", "p")
    assert denied.get("Message") == "Permission denied"
    assert anonymous.buffer == b""
    await anonymous.close()


async def test_restart_on_the_same_port_forgets_calls(sim: PbxSimulator) -> None:
    port = sim.port
    ami = await AmiClient.connect(port)
    await ami.login_and_settle()
    await sim.place_call("answered", ring=0.01, talk=LONG)
    await wait_bridged(ami)
    await sim.stop()
    assert await ami.eof()
    await ami.close()
    assert sim.live_channels() == []
    await sim.start()
    assert sim.port == port
    again = await AmiClient.connect(port)
    await again.login_and_settle()
    _, listed, complete = await show_channels(again, "after-restart")
    assert listed == [] and complete.get("ListItems") == "0"
    await again.close()


async def test_stop_keeping_calls_is_an_outage_not_a_restart(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    await ami.login_and_settle()
    await sim.place_call("answered", ring=0.01, talk=LONG)
    await wait_bridged(ami)
    await sim.stop(keep_calls=True)
    await ami.close()
    assert len(sim.live_channels()) == 2
    await sim.start()
    again = await AmiClient.connect(sim.port)
    await again.login_and_settle()
    _, listed, _ = await show_channels(again, "during")
    assert len(listed) == 2
    await again.action("Hangup", "h", ("Channel", listed[0].get("Channel") or ""))
    await sim.wait_idle()
    await again.close()


async def test_actions_are_recorded_in_arrival_order(sim: PbxSimulator, client: AmiClient) -> None:
    await client.action("Ping", "a")
    await client.action("Originate", "b", ("Channel", "PJSIP/999"), ("Exten", "1"))
    assert [(a["Action"], a["ActionID"]) for a in sim.actions] == [
        ("Login", "login-1"),
        ("Ping", "a"),
        ("Originate", "b"),
    ]
    assert sim.actions[2]["Channel"] == "PJSIP/999"


async def test_a_client_that_never_reads_is_cut_off(sim: PbxSimulator, client: AmiClient) -> None:
    sim.max_backlog = 64 << 10
    stalled = await AmiClient.connect(sim.port)
    await stalled.login_and_settle()
    await client.close()
    # More than the kernel's socket buffers hold, so the rest waits in our transport.
    await sim.send_raw(b"x" * (16 << 20))
    await sim.place_call("answered", ring=0.0, talk=0.0)
    await sim.wait_idle()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(10):
            while await stalled.reader.read(1 << 20):
                pass
    async with asyncio.timeout(10):
        while sim.client_count:
            await asyncio.sleep(0.01)
    await stalled.close()
