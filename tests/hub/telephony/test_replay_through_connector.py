"""Recorded Asterisk traffic replayed over TCP through the real AMI connector into the call
service and the database: the call log and the pops must match what really happened.

asterisk22/ (ours, copied to tests/fixtures) against each scenario's described outcome;
cacofonisk/ (third-party, read from ../shared/traces only) against its expected.json."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.models.calls import Call
from hub.models.interactions import Reminder
from hub.users import create_user
from tests.conftest import SHARED, LiveHub, _password_hash, require_path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"
LOCAL_AGENTS = {f"a{ext}": f"Local/{ext}@agents" for ext in (100, 101, 102, 104, 110, 200, 201)}
CACO_AGENTS = {
    "u1": "SIP/150010001",
    "u2": "SIP/150010002",
    "u3": "SIP/150010003",
    "u4": "SIP/100060002",
}


async def _agents(live: LiveHub, agents: dict[str, str]) -> dict[str, str]:
    async with live.hub.sessions() as session, session.begin():
        for name, device in agents.items():
            await create_user(
                session, name, "", "agent", devices=(device,), password_hash=_password_hash("x" * 8)
            )
    await live.calls.refresh_agents()
    return {device: name for name, device in agents.items()}


def _collect_pops(live: LiveHub) -> dict[str, list[str]]:
    """linkedid → user ids that got call.ringing, in order (straight off the bus)."""
    pops: dict[str, list[str]] = defaultdict(list)

    def handler(topic: str, event: dict[str, Any]) -> None:
        if event.get("type") == "call.ringing":
            pops[event["call_id"]].append(topic)

    live.hub.bus.subscribe(handler)
    return pops


async def _replay(live: LiveHub, path: Path, timed: bool = False) -> None:
    await live.sim.replay(path, timed=timed)
    await asyncio.sleep(0.3)  # loopback delivery of the last frames
    await live.calls.drain()


async def _calls(live: LiveHub) -> dict[str, Call]:
    async with live.hub.sessions() as session:
        return {c.linkedid: c for c in (await session.scalars(select(Call))).all()}


async def _user_topics(live: LiveHub) -> dict[str, str]:
    """'user:<id>' → user name."""
    from hub.models.users import User

    async with live.hub.sessions() as session:
        return {f"user:{u.id}": u.username for u in (await session.scalars(select(User))).all()}


ASTERISK22 = {
    # file: (direction, disposition, agent, rang, callee)
    "inbound-answered": ("inbound", "answered", "a100", ["a100"], None),
    "inbound-missed": ("inbound", "missed", None, ["a101"], None),
    "inbound-busy": ("inbound", "busy", None, ["a104"], None),
    "inbound-queue": ("inbound", "answered", "a200", ["a200", "a201"], None),
    "inbound-recorded": ("inbound", "answered", "a102", ["a102"], None),
    "click-to-call": ("outbound", "answered", "a110", [], "+4930987654"),
}


@pytest.mark.parametrize("name", sorted(ASTERISK22))
async def test_asterisk22_trace(live_hub: LiveHub, name: str) -> None:
    await _agents(live_hub, LOCAL_AGENTS)
    pops = _collect_pops(live_hub)
    await _replay(live_hub, FIXTURES / f"{name}.ami")
    calls = await _calls(live_hub)
    assert len(calls) == 1, list(calls)
    call = next(iter(calls.values()))
    direction, disposition, agent, rang, callee = ASTERISK22[name]
    assert (call.direction, call.disposition, call.agent) == (direction, disposition, agent)
    assert sorted(call.rang) == sorted(rang)
    if direction == "inbound":
        assert call.caller == "+4930123456"
        topics = await _user_topics(live_hub)
        assert sorted(topics[t] for t in pops[call.linkedid]) == sorted(rang)
    else:
        assert call.callee == callee
    if name == "inbound-recorded":
        assert call.recording and call.recording.startswith("/tmp/ast/recordings/")
        assert call.recording.endswith(".wav")
    if name == "inbound-queue":
        assert call.queue == "support"
    async with live_hub.hub.sessions() as session:
        reminders = (await session.scalars(select(Reminder))).all()
    assert len(reminders) == (1 if disposition == "missed" else 0)


async def test_asterisk22_timed_replay_gives_real_durations(live_hub: LiveHub) -> None:
    """Replayed with the recorded pacing: rings ~2 s, talks ~3 s (as the scenario describes)."""
    await _agents(live_hub, LOCAL_AGENTS)
    await _replay(live_hub, FIXTURES / "inbound-answered.ami", timed=True)
    (call,) = (await _calls(live_hub)).values()
    assert 1.5 <= call.wait_seconds <= 3.0, call.wait_seconds
    assert 2.5 <= call.talk_seconds <= 5.0, call.talk_seconds


def _caco_cases() -> list[str]:
    expected = SHARED / "traces" / "cacofonisk" / "expected.json"
    if not expected.exists():
        return ["<missing>"]
    return sorted(json.loads(expected.read_text()))


@pytest.mark.parametrize("name", _caco_cases())
async def test_cacofonisk_trace(live_hub: LiveHub, name: str) -> None:
    base = require_path(SHARED / "traces" / "cacofonisk", "cacofonisk traces (../shared/traces)")
    expected = json.loads((base / "expected.json").read_text())[name]
    by_device = await _agents(live_hub, CACO_AGENTS)
    pops = _collect_pops(live_hub)
    await _replay(live_hub, base / name)
    calls = await _calls(live_hub)
    topics = await _user_topics(live_hub)
    for want in expected:
        call = calls.get(want["linkedid"])
        assert call is not None, f"{want['linkedid']} not logged; logged: {list(calls)}"
        # Who answered, in order (several after a transfer).
        assert call.answered_by == want["answered_by"], (call.answered_by, want)
        answered = bool(want["answered_by"])
        assert (call.disposition in ("answered", "transferred")) == answered, call.disposition
        if want["abandoned_in_queue"]:
            assert call.disposition == "abandoned"
        # Every agent device the library says rang got its pop (extra pops for devices that a
        # DialBegin really alerted are allowed: see traces/README.md).
        popped = {topics[t] for t in pops.get(call.linkedid, [])}
        for device in want["rang"]:
            if device in by_device and device != _caller_device(call):
                assert by_device[device] in popped, (device, popped)
        # Transfers: kind, who handed on, to whom.
        got = [(t["kind"], t["from"], t["to"]) for t in call.transfers]
        assert [(t["kind"], t["by"]) for t in want["transfers"]] == [(k, f) for k, f, _ in got]
        for (_, _, to), want_t in zip(got, want["transfers"], strict=True):
            assert to in want_t["to"]


def _caller_device(call: Call) -> str | None:
    # Click-to-call rings the originator's own phone first; that is not "the call rang them".
    return None
