"""Replay our Asterisk 22.10.1 recordings with their recorded timing and check each scenario."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from hub.telephony.model import (
    CallAnswered,
    CallEffect,
    CallEnded,
    CallRecord,
    CallRinging,
    TrackerConfig,
)
from hub.telephony.trace_reader import read_ami_trace, read_timed_ami_trace
from hub.telephony.tracker import CallTracker
from tests.hub.telephony.traces import ASTERISK22

AGENT_DEVICES = frozenset(
    {
        "Local/100@agents",
        "Local/101@agents",
        "Local/102@agents",
        "Local/104@agents",
        "Local/110@agents",
        "Local/200@agents",
        "Local/201@agents",
    }
)
BASE = datetime(2026, 11, 22, 8, 46, 10, tzinfo=UTC)
CALLER = "+4930123456"


@dataclass(frozen=True)
class Outcome:
    """Effects of one scenario, stamped `BASE + t_s` of the read that completed each event."""

    effects: tuple[CallEffect, ...]
    internal_errors: int
    calls_left: int
    legs_left: int

    @property
    def record(self) -> CallRecord:
        """The scenario's one call."""
        records = [e.record for e in self.effects if isinstance(e, CallEnded)]
        assert len(records) == 1, records
        return records[0]

    def ringing(self) -> list[CallRinging]:
        """CallRinging effects in order."""
        return [e for e in self.effects if isinstance(e, CallRinging)]

    def answered(self) -> list[CallAnswered]:
        """CallAnswered effects in order."""
        return [e for e in self.effects if isinstance(e, CallAnswered)]


@functools.cache
def play(scenario: str, *, callable_agents: bool = False) -> Outcome:
    """Replay a scenario with its chunk timings."""
    devices = AGENT_DEVICES
    tracker = CallTracker(
        TrackerConfig(agent_devices=(lambda: devices) if callable_agents else devices)
    )
    effects: list[CallEffect] = []
    for t_s, event in read_timed_ami_trace(ASTERISK22 / f"{scenario}.ami"):
        effects.extend(tracker.handle(event, BASE + timedelta(seconds=t_s)))
    return Outcome(tuple(effects), tracker.internal_errors, len(tracker), tracker.leg_count)


SCENARIOS = [
    "click-to-call",
    "inbound-answered",
    "inbound-busy",
    "inbound-missed",
    "inbound-queue",
    "inbound-recorded",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_replays_cleanly(scenario: str) -> None:
    """One call per scenario, ended once, no internal error, nothing left in memory."""
    outcome = play(scenario)
    assert outcome.internal_errors == 0
    assert outcome.calls_left == 0 and outcome.legs_left == 0
    assert outcome.record.hangup_cause == "16 Normal Clearing"
    assert outcome.record.started_at.tzinfo is not None


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.startswith("inbound")])
def test_inbound_caller_is_the_outside_number(scenario: str) -> None:
    """The trunk leg's number comes in NewCallerid; the agent leg's CallerIDNum (DID) is ignored."""
    outcome = play(scenario)
    record = outcome.record
    assert record.direction == "inbound"
    assert record.caller == CALLER and record.caller_name == "Max Mustermann"
    assert not record.caller_withheld
    assert record.callee is not None and record.callee.startswith("4930555")
    # The trunk here is a Local channel (from-pstn), not an agent's phone.
    assert record.caller_device is None
    for effect in outcome.ringing():
        assert (effect.caller, effect.direction) == (CALLER, "inbound")


def test_inbound_answered() -> None:
    """Rings Local/100@agents ~2 s, answered, ~3 s of talk."""
    outcome = play("inbound-answered")
    [ringing] = outcome.ringing()
    [answered] = outcome.answered()
    assert (ringing.device, ringing.extension, ringing.callee) == (
        "Local/100@agents",
        "100",
        "4930555100",
    )
    assert answered.device == "Local/100@agents"
    record = outcome.record
    assert record.rang == ("Local/100@agents",) and record.answered_by == ("Local/100@agents",)
    assert record.disposition == "answered"
    assert 1.8 <= record.wait_seconds <= 2.3
    assert 2.8 <= record.talk_seconds <= 4.0
    assert record.answered_at == answered.at and record.started_at <= ringing.at


def test_inbound_missed() -> None:
    """Dial(Local/101@agents,6) never answered: missed after ~6 s."""
    record = play("inbound-missed").record
    assert record.rang == ("Local/101@agents",) and record.answered_by == ()
    assert record.disposition == "missed" and record.answered_at is None
    assert 5.5 <= record.wait_seconds <= 6.8 and record.talk_seconds == 0.0
    assert play("inbound-missed").answered() == []


def test_inbound_busy() -> None:
    """Agent 104 returns Busy(): busy, nobody answered."""
    outcome = play("inbound-busy")
    assert [r.device for r in outcome.ringing()] == ["Local/104@agents"]
    record = outcome.record
    assert record.rang == ("Local/104@agents",) and record.answered_by == ()
    assert record.disposition == "busy" and record.talk_seconds == 0.0


def test_inbound_queue() -> None:
    """Queue support (ringall): both members pop with the queue name; Local/200 answers."""
    outcome = play("inbound-queue")
    assert {(r.device, r.queue) for r in outcome.ringing()} == {
        ("Local/200@agents", "support"),
        ("Local/201@agents", "support"),
    }
    assert [a.device for a in outcome.answered()] == ["Local/200@agents"]
    record = outcome.record
    assert set(record.rang) == {"Local/200@agents", "Local/201@agents"}
    assert record.answered_by == ("Local/200@agents",)
    assert record.queue == "support" and record.disposition == "answered"
    # IVR (~0.5 s) then the members ring ~2 s before Local/200 answers.
    assert 2.0 <= record.wait_seconds <= 3.0
    assert record.talk_seconds > 1.0


def test_inbound_recorded() -> None:
    """MixMonitor names the recording after the trunk leg's Uniqueid."""
    record = play("inbound-recorded").record
    assert record.recording == "/tmp/ast/recordings/crm-test-1795337210.23.wav"
    assert record.answered_by == ("Local/102@agents",) and record.disposition == "answered"
    assert 1.8 <= record.wait_seconds <= 2.3 and 1.5 <= record.talk_seconds <= 4.0


def test_click_to_call() -> None:
    """The agent's phone rings and answers (1 s), then +4930987654 answers (2 s) and talks ~4 s."""
    outcome = play("click-to-call")
    [ringing] = outcome.ringing()
    [answered] = outcome.answered()
    assert (ringing.device, ringing.direction, ringing.caller) == (
        "Local/110@agents",
        "outbound",
        "110",
    )
    assert answered.device == "Local/110@agents"
    assert 0.9 <= (answered.at - ringing.at).total_seconds() <= 1.2
    record = outcome.record
    assert record.direction == "outbound"
    assert record.caller == "110" and record.caller_name == "Agent 110"
    assert record.callee == "+4930987654"
    assert record.caller_device == "Local/110@agents"
    assert record.disposition == "answered"
    # The far end is a Local channel standing for the trunk (no agent device): it answered the
    # call, but there is no device to list; the agent's own phone is the caller's side.
    assert record.rang == () and record.answered_by == ()
    assert 2.8 <= record.wait_seconds <= 3.3
    assert 3.8 <= record.talk_seconds <= 5.0
    assert record.originate_id == "originate-2"


def test_agent_devices_as_a_callable_give_the_same_result() -> None:
    """A runtime-changeable agent list behaves like the fixed one."""
    for scenario in SCENARIOS:
        assert play(scenario, callable_agents=True).effects == play(scenario).effects


@pytest.mark.parametrize("scenario", ["login-logoff", "login-failed"])
def test_sessions_without_calls_produce_nothing(scenario: str) -> None:
    """Login, Ping, Logoff, failed auth: no call effects."""
    tracker = CallTracker(TrackerConfig(agent_devices=AGENT_DEVICES))
    for event in read_ami_trace(ASTERISK22 / f"{scenario}.ami"):
        assert tracker.handle(event, BASE) == []
    assert len(tracker) == 0 and tracker.internal_errors == 0


def test_without_agent_devices_local_phones_do_not_pop() -> None:
    """Local channels are routing unless configured as agents' devices."""
    tracker = CallTracker(TrackerConfig())
    effects: list[CallEffect] = []
    for event in read_ami_trace(ASTERISK22 / "inbound-answered.ami"):
        effects.extend(tracker.handle(event, BASE))
    assert not [e for e in effects if isinstance(e, CallRinging | CallAnswered)]
    [ended] = effects
    assert isinstance(ended, CallEnded) and ended.record.rang == ()
