"""End to end: the simulator rings an agent → their websocket gets the card; nobody else does.

Real parts only: PBX simulator over TCP, the AMI connector, the call service, SQLite, the web
app on a port, and the `websockets` client library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import websockets

from tests.conftest import LiveHub, bearer


async def _customer(live: LiveHub, name: str, phone: str) -> int:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{live.url}/api/v1/customers",
            json={"name": name, "company": "ACME GmbH", "phones": [phone], "tags": ["vip"]},
            headers=bearer(live.tokens["sam"]),
        )
        assert resp.status == 201, await resp.text()
        return int((await resp.json())["id"])


class Socket:
    """A websocket client that collects every message in a queue."""

    def __init__(self, live: LiveHub, user: str) -> None:
        self.url = f"{live.ws_url}?token={live.tokens[user]}"
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> Socket:
        self.ws = await websockets.connect(self.url)
        hello = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
        assert hello["type"] == "hello"
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            await self.messages.put(json.loads(raw))

    async def next(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.messages.get(), timeout)
            if msg["type"] == kind:
                return msg

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        await self.ws.close()


async def _calls(live: LiveHub, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{live.url}/api/v1/calls", params=params, headers=bearer(live.tokens["sam"])
        )
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["items"])


async def test_pop_reaches_ringing_agent_only(live_hub: LiveHub) -> None:
    customer_id = await _customer(live_hub, "Max Mustermann", "030 123456")
    async with Socket(live_hub, "anna") as anna, Socket(live_hub, "ben") as ben:
        await live_hub.sim.place_call("answered", caller="+4930123456", extension="201", ring=0.2)
        pop = await anna.next("call.ringing")
        assert pop["caller"] == "+4930123456"
        assert pop["extension"] == "201"
        assert pop["customer"]["id"] == customer_id
        assert pop["customer"]["name"] == "Max Mustermann"
        assert pop["customer"]["tags"] == ["vip"]
        assert "last_interactions" in pop["customer"] and "open_reminders" in pop["customer"]
        answered = await anna.next("call.answered")
        assert answered["call_id"] == pop["call_id"]
        ended = await anna.next("call.ended")
        assert ended["call_id"] == pop["call_id"]
        assert ended["disposition"] == "answered"
        await live_hub.calls.drain()
        assert ben.messages.empty(), "a pop for a call that never rang ben reached him"
    calls = await _calls(live_hub)
    assert len(calls) == 1
    call = calls[0]
    assert call["linkedid"] == pop["call_id"]
    assert (call["direction"], call["disposition"], call["agent"]) == (
        "inbound",
        "answered",
        "anna",
    )
    assert call["customer_id"] == customer_id and call["customer_name"] == "Max Mustermann"
    assert call["caller"] == "+4930123456" and call["rang"] == ["anna"]


async def test_unknown_and_withheld_callers_pop_without_a_customer(live_hub: LiveHub) -> None:
    await _customer(live_hub, "Somebody", "+4930123456")
    async with Socket(live_hub, "anna") as anna:
        await live_hub.sim.place_call("answered", caller="+4940111222", extension="201")
        pop = await anna.next("call.ringing")
        assert (pop["caller"], pop["customer"]) == ("+4940111222", None)
        await anna.next("call.ended")
        await live_hub.sim.place_call("anonymous", extension="201")
        pop = await anna.next("call.ringing")
        assert (pop["caller"], pop["customer"]) == (None, None)
        await anna.next("call.ended")
    await live_hub.calls.drain()
    withheld = [c for c in await _calls(live_hub) if c["caller_withheld"]]
    assert (
        len(withheld) == 1 and withheld[0]["caller"] is None and withheld[0]["customer_id"] is None
    )


SCENARIOS = [
    # scenario, kwargs, expected (direction, disposition, agent), rang
    ("answered", {}, ("inbound", "answered", "anna"), ["anna"]),
    ("missed", {}, ("inbound", "missed", None), ["anna"]),
    ("busy", {}, ("inbound", "busy", None), ["anna"]),
    ("cancel", {}, ("inbound", "missed", None), ["anna"]),
    (
        "queue",
        {"members": ["201", "202"], "answered_by": "202"},
        ("inbound", "answered", "ben"),
        ["anna", "ben"],
    ),
    ("blind_transfer", {"transfer_to": "202"}, ("inbound", "transferred", "ben"), ["anna", "ben"]),
    (
        "attended_transfer",
        {"transfer_to": "202"},
        ("inbound", "transferred", "ben"),
        ["anna", "ben"],
    ),
    ("recorded", {}, ("inbound", "answered", "anna"), ["anna"]),
]


@pytest.mark.parametrize(
    ("scenario", "kwargs", "expected", "rang"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_every_scenario_is_logged_right(
    live_hub: LiveHub,
    scenario: str,
    kwargs: dict[str, Any],
    expected: tuple[str, str, str | None],
    rang: list[str],
) -> None:
    customer_id = await _customer(live_hub, "Erika Musterfrau", "+4930123456")
    linkedid = await live_hub.sim.place_call(
        scenario, caller="+4930123456", extension="201", **kwargs
    )
    await live_hub.sim.wait_idle()
    await _settle(live_hub)
    calls = [c for c in await _calls(live_hub) if c["linkedid"] == linkedid]
    assert len(calls) == 1, calls
    call = calls[0]
    assert (call["direction"], call["disposition"], call["agent"]) == expected
    assert call["rang"] == rang
    assert call["customer_id"] == customer_id
    if scenario == "recorded":
        assert call["recording"] and call["recording"].endswith(".wav")
    if "transfer" in scenario:
        assert [t["kind"] for t in call["transfers"]] == [scenario.split("_")[0]]
    # The call is on the customer's timeline, once.
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{live_hub.url}/api/v1/customers/{customer_id}/timeline",
            headers=bearer(live_hub.tokens["sam"]),
        )
        timeline = [i for i in (await resp.json())["items"] if i["channel"] == "call"]
    assert [i["external_id"] for i in timeline] == [linkedid]
    # Missed inbound calls leave a callback reminder for the agent it rang.
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{live_hub.url}/api/v1/reminders",
            params={"mine": "1"},
            headers=bearer(live_hub.tokens["anna"]),
        )
        reminders = (await resp.json())["items"]
    if expected[1] in ("missed", "abandoned"):
        assert [r["kind"] for r in reminders] == ["callback"]
        assert reminders[0]["customer_id"] == customer_id and reminders[0]["phone"] == "+4930123456"
    else:
        assert reminders == []


async def test_click_to_call_rings_my_phone_then_the_customer(live_hub: LiveHub) -> None:
    customer_id = await _customer(live_hub, "Max Mustermann", "+4930987654")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{live_hub.url}/api/v1/calls/originate",
            json={"customer_id": customer_id},
            headers=bearer(live_hub.tokens["anna"]),
        )
        assert resp.status == 202, await resp.text()
        body = await resp.json()
    await _wait_for(lambda: any(a.get("Action") == "Originate" for a in live_hub.sim.actions))
    originates = [a for a in live_hub.sim.actions if a.get("Action") == "Originate"]
    assert len(originates) == 1
    assert originates[0]["Channel"] == "PJSIP/201"
    assert originates[0]["Exten"] == "+4930987654"
    assert originates[0]["ActionID"] == body["action_id"]
    await live_hub.sim.wait_idle()
    await _settle(live_hub)
    calls = await _calls(live_hub, direction="outbound")
    assert len(calls) == 1
    call = calls[0]
    assert (call["disposition"], call["agent"], call["callee"], call["customer_id"]) == (
        "answered",
        "anna",
        "+4930987654",
        customer_id,
    )


async def test_click_to_call_errors_are_clear(live_hub: LiveHub) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{live_hub.url}/api/v1/calls/originate",
            json={"number": "abc"},
            headers=bearer(live_hub.tokens["anna"]),
        )
        assert resp.status == 400
        assert "not a phone number" in (await resp.json())["error"]["message"]
        resp = await http.post(
            f"{live_hub.url}/api/v1/calls/originate",
            json={"number": "+4930111"},
            headers=bearer(live_hub.tokens["sam"]),
        )
        assert resp.status == 400  # sam is a supervisor without a phone
        assert "no phone" in (await resp.json())["error"]["message"]


async def test_link_drop_mid_call_loses_and_doubles_nothing(live_hub: LiveHub) -> None:
    async with Socket(live_hub, "anna") as anna:
        linkedid = await live_hub.sim.place_call("answered", extension="201", ring=0.3, talk=1.5)
        await anna.next("call.ringing")
        await anna.next("call.answered")
        await live_hub.sim.drop_clients()
        await live_hub.sim.wait_idle()
        await anna.next("call.ended", timeout=15)
    await _settle(live_hub)
    calls = [c for c in await _calls(live_hub) if c["linkedid"] == linkedid]
    assert len(calls) == 1
    assert calls[0]["disposition"] == "answered"


async def test_call_that_ends_during_an_outage_is_closed_by_resync(live_hub: LiveHub) -> None:
    linkedid = await live_hub.sim.place_call("answered", extension="201", ring=0.1, talk=0.6)
    await _wait_for(
        lambda: any(c.linkedid == linkedid for c in live_hub.calls.tracker.live_calls())
    )
    await live_hub.sim.stop(keep_calls=True)  # Asterisk unreachable; the call goes on and ends
    await live_hub.sim.wait_idle()
    await live_hub.sim.start()
    await _wait_for(lambda: not live_hub.calls.tracker.live_calls(), timeout=15)
    await _settle(live_hub)
    calls = [c for c in await _calls(live_hub) if c["linkedid"] == linkedid]
    assert len(calls) == 1, "the call that ended while the link was down was not logged once"


async def _settle(live: LiveHub) -> None:
    """Let the connector deliver what the simulator sent, then flush the call service."""
    await asyncio.sleep(0.2)
    await live.calls.drain()


async def _wait_for(condition: Any, timeout: float = 10) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_supervisors_watch_live_calls_and_agents_do_not(live_hub: LiveHub) -> None:
    async with Socket(live_hub, "sam") as sam, Socket(live_hub, "anna") as anna:
        linkedid = await live_hub.sim.place_call("answered", extension="201", ring=0.3, talk=0.5)
        while True:
            live = await sam.next("calls.live")
            if any(c["linkedid"] == linkedid for c in live["calls"]):
                break
        call = next(c for c in live["calls"] if c["linkedid"] == linkedid)
        assert call["agents"] == ["anna"] and call["direction"] == "inbound"
        assert {a["username"]: a["state"] for a in live["agents"]}["anna"] in ("ringing", "up")
        assert {a["username"]: a["state"] for a in live["agents"]}["ben"] == "idle"
        await anna.next("call.ended")
        while live["calls"]:
            live = await sam.next("calls.live")
        # Agents never get the supervisors' view.
        seen = []
        while not anna.messages.empty():
            seen.append(anna.messages.get_nowait()["type"])
        assert "calls.live" not in seen


async def test_missed_call_reminder_becomes_due_on_the_agents_screen(live_hub: LiveHub) -> None:
    from hub.reminders import notify_due

    async with Socket(live_hub, "anna") as anna, Socket(live_hub, "ben") as ben:
        await live_hub.sim.place_call("missed", caller="+4930555111", extension="201")
        await live_hub.sim.wait_idle()
        await _settle(live_hub)
        assert await notify_due(live_hub.hub) == 1
        due = await anna.next("reminder.due")
        assert due["reminder"]["kind"] == "callback" and due["reminder"]["phone"] == "+4930555111"
        assert await notify_due(live_hub.hub) == 0  # told once
        await asyncio.sleep(0.2)
        assert all(m["type"] != "reminder.due" for m in _drain(ben))


def _drain(socket: Socket) -> list[dict[str, Any]]:
    out = []
    while not socket.messages.empty():
        out.append(socket.messages.get_nowait())
    return out
