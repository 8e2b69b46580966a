"""Hand-written AMI event streams for unit tests of the call tracker (pure logic, no PBX)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hub.telephony.model import (
    CallAnswered,
    CallEffect,
    CallEnded,
    CallRecord,
    CallRinging,
    TrackerConfig,
)
from hub.telephony.tracker import CallTracker

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
AGENTS = frozenset({"Local/100@agents", "Local/101@agents", "Local/200@agents"})


@dataclass
class Chan:
    """One channel as the fake PBX knows it."""

    channel: str
    uid: str
    lid: str
    num: str = "<unknown>"
    name: str = "<unknown>"
    connected: str = "<unknown>"
    exten: str = "s"
    state: str = "0"

    def fields(self, prefix: str = "") -> dict[str, str]:
        """The channel's header block, as AMI repeats it in every event about it."""
        return {
            f"{prefix}Channel": self.channel,
            f"{prefix}ChannelState": self.state,
            f"{prefix}CallerIDNum": self.num,
            f"{prefix}CallerIDName": self.name,
            f"{prefix}ConnectedLineNum": self.connected,
            f"{prefix}Exten": self.exten,
            f"{prefix}Context": "test",
            f"{prefix}Uniqueid": self.uid,
            f"{prefix}Linkedid": self.lid,
        }


@dataclass
class Sim:
    """Feeds events to a tracker with a controllable clock and collects the effects."""

    tracker: CallTracker = field(default_factory=lambda: CallTracker(TrackerConfig()))
    now: datetime = T0
    effects: list[CallEffect] = field(default_factory=list)
    # Every event sent, with its time: to replay the same stream into another tracker.
    sent: list[tuple[datetime, dict[str, str]]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def with_agents(cls, agents: Iterable[str] = AGENTS) -> Sim:
        """A simulator whose tracker knows these Local devices as agents' phones."""
        return cls(CallTracker(TrackerConfig(agent_devices=frozenset(agents))))

    def tick(self, seconds: float) -> None:
        """Let time pass."""
        self.now += timedelta(seconds=seconds)

    def send(self, event: dict[str, str]) -> list[CallEffect]:
        """One event to the tracker; returns (and records) its effects."""
        self.sent.append((self.now, event))
        out = self.tracker.handle(event, self.now)
        self.effects.extend(out)
        return out

    def uid(self) -> str:
        """A fresh Uniqueid."""
        return f"pbx-1700000000.{next(self._ids)}"

    # -- channels ---------------------------------------------------------------------------

    def new(
        self,
        channel: str,
        *,
        lid: str | None = None,
        num: str = "<unknown>",
        name: str = "<unknown>",
        exten: str = "s",
        state: str = "0",
    ) -> Chan:
        """Newchannel; without `lid` the channel starts a call of its own."""
        uid = self.uid()
        chan = Chan(channel, uid, lid or uid, num=num, name=name, exten=exten, state=state)
        self.send({"Event": "Newchannel", **chan.fields()})
        return chan

    def local(self, name: str, lid: str, *, exten: str = "s") -> tuple[Chan, Chan]:
        """A Local channel pair (;1 and ;2) with its LocalBridge."""
        one = self.new(f"{name};1", lid=lid, exten=exten)
        two = self.new(f"{name};2", lid=lid, exten=exten, state="4")
        self.send(
            {
                "Event": "LocalBridge",
                "LocalOneChannel": one.channel,
                "LocalOneUniqueid": one.uid,
                "LocalTwoChannel": two.channel,
                "LocalTwoUniqueid": two.uid,
                "LocalOptimization": "Yes",
            }
        )
        return one, two

    def callerid(self, chan: Chan, num: str, name: str = "", pres: str | None = None) -> None:
        """NewCallerid (optionally with a presentation)."""
        chan.num, chan.name = num, name
        event = {"Event": "NewCallerid", **chan.fields()}
        event["CID-CallingPres"] = pres or "0 (Presentation Allowed, Not Screened)"
        self.send(event)

    def dial(self, src: Chan | None, dest: Chan, dialstring: str = "") -> list[CallEffect]:
        """DialBegin (src None: an Originate)."""
        event = {"Event": "DialBegin", **dest.fields("Dest"), "DialString": dialstring}
        if src is not None:
            event.update(src.fields())
        return self.send(event)

    def dial_end(self, src: Chan | None, dest: Chan, status: str) -> list[CallEffect]:
        """DialEnd with a DialStatus."""
        if status == "ANSWER":
            dest.state = "6"
        event = {"Event": "DialEnd", **dest.fields("Dest"), "DialStatus": status}
        if src is not None:
            event.update(src.fields())
        return self.send(event)

    def bridge(self, *chans: Chan, bridge_id: str = "bridge-1") -> None:
        """BridgeEnter for each channel."""
        for chan in chans:
            self.send({"Event": "BridgeEnter", **chan.fields(), "BridgeUniqueid": bridge_id})

    def hangup(
        self, chan: Chan, cause: str = "16", text: str = "Normal Clearing"
    ) -> list[CallEffect]:
        """Hangup with a cause."""
        return self.send({"Event": "Hangup", **chan.fields(), "Cause": cause, "Cause-txt": text})

    def hangup_all(self, *chans: Chan) -> list[CallEffect]:
        """Hang up several channels, the given order."""
        out: list[CallEffect] = []
        for chan in chans:
            out.extend(self.hangup(chan))
        return out

    # -- results ----------------------------------------------------------------------------

    def records(self) -> list[CallRecord]:
        """The CallRecords emitted so far."""
        return [e.record for e in self.effects if isinstance(e, CallEnded)]

    def record(self) -> CallRecord:
        """The only CallRecord emitted so far."""
        records = self.records()
        assert len(records) == 1, records
        return records[0]

    def ringing(self) -> list[CallRinging]:
        """The CallRinging effects so far."""
        return [e for e in self.effects if isinstance(e, CallRinging)]

    def answered(self) -> list[CallAnswered]:
        """The CallAnswered effects so far."""
        return [e for e in self.effects if isinstance(e, CallAnswered)]


def simple_call(
    sim: Sim,
    *,
    caller_channel: str = "PJSIP/trunk-00000001",
    caller_num: str = "+4930123456",
    callee_device: str = "PJSIP/201",
    exten: str = "4930555100",
    answer: bool = True,
    ring_s: float = 2.0,
    talk_s: float = 3.0,
) -> tuple[Chan, Chan]:
    """A direct call: the caller's channel dials one phone, which answers (or not) and hangs up."""
    caller = sim.new(caller_channel, num=caller_num, exten=exten, state="4")
    phone = sim.new(f"{callee_device}-00000002", lid=caller.lid)
    sim.dial(caller, phone, dialstring=callee_device.split("/", 1)[1])
    sim.tick(ring_s)
    if answer:
        sim.dial_end(caller, phone, "ANSWER")
        sim.bridge(phone, caller)
        sim.tick(talk_s)
    else:
        sim.dial_end(caller, phone, "NOANSWER")
    sim.hangup(phone)
    sim.hangup(caller)
    return caller, phone
