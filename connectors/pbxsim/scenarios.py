"""Call scenarios: the event sequences an Asterisk 20+ with PJSIP phones emits for each call type.

The shapes follow the recorded traces in shared/traces (asterisk22 raw AMI, cacofonisk JSON) and
the Asterisk sources for events the traces lack (BlindTransfer/AttendedTransfer field order from
main/stasis_bridges.c, queue events from app_queue). Agent phones are `PJSIP/<ext>-<n>`, the
outside line is `PJSIP/trunk-<n>`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from connectors.pbxsim.frames import Fields
from connectors.pbxsim.model import (
    DOWN,
    RING,
    RINGING,
    UNKNOWN,
    UP,
    Bridge,
    Channel,
    cause_text,
)

TRUNK = "PJSIP/trunk"
DEFAULT_CALLER = "+4930123456"
DEFAULT_DID = "4930555100"

PRES_ALLOWED = "0 (Presentation Allowed, Not Screened)"
PRES_PROHIBITED = "33 (Presentation Prohibited, Passed Screen)"
PRES_UNAVAILABLE = "67 (Number Unavailable)"

CALL, DIALPLAN, AGENT, CDR = "call,all", "dialplan,all", "agent,all", "cdr,all"

# Dial() resets these on the calling channel before it dials (as in the asterisk22 traces).
DIAL_VARS = (
    "DIALSTATUS",
    "DIALEDPEERNUMBER",
    "DIALEDPEERNAME",
    "ANSWEREDTIME",
    "ANSWEREDTIME_MS",
    "DIALEDTIME",
    "DIALEDTIME_MS",
    "RINGTIME",
    "RINGTIME_MS",
    "PROGRESSTIME",
    "PROGRESSTIME_MS",
)


class SimHooks(Protocol):
    """What a running call needs from the simulator."""

    systemname: str

    def _new_uniqueid(self) -> str: ...

    def _next_channel_seq(self) -> str: ...

    def _emit(self, event: str, privilege: str, fields: Fields) -> None: ...

    def _register(self, chan: Channel) -> None: ...

    def _unregister(self, chan: Channel) -> None: ...

    def device_for(self, extension: str) -> str:
        """The device (channel name prefix) of an extension."""
        ...

    def agent_name(self, extension: str) -> str:
        """Caller ID name of an agent's phone."""
        ...

    def is_extension(self, number: str) -> bool:
        """Whether a dialed number is one of the PBX's extensions."""
        ...


class HangupRequested(Exception):
    """Raised inside a scenario when an AMI Hangup hit one of its channels."""


@dataclass
class CallParams:
    """Knobs of a scenario; every scenario reads the ones it needs."""

    caller: str = DEFAULT_CALLER
    caller_name: str | None = None
    extension: str = "201"
    did: str = DEFAULT_DID
    ring: float = 0.05
    talk: float = 0.1
    hangup_by: str = "agent"
    members: tuple[str, ...] | list[str] | None = None
    answered_by: str | None = None
    strategy: str = "ringall"
    queue: str = "support"
    transfer_to: str = "202"
    consult: float | None = None
    number: str = "+4930987654"
    agent_answers: bool = True
    remote_answers: bool = True
    remote_busy: bool = False
    anonymous_style: str = "anonymous"
    recording_dir: str = "/var/spool/asterisk/monitor"
    # Filled from an Originate action; place_call("click_to_call") leaves the defaults.
    action_id: str | None = None
    requested_channel: str | None = None
    callerid: tuple[str, str] | None = None
    context: str = "from-internal"
    application: str | None = None
    app_data: str = ""
    variables: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.hangup_by not in ("agent", "caller"):
            raise ValueError(f"hangup_by must be 'agent' or 'caller', not {self.hangup_by!r}")
        if self.strategy not in ("ringall", "linear"):
            raise ValueError(f"strategy must be 'ringall' or 'linear', not {self.strategy!r}")
        if self.anonymous_style not in ("anonymous", "unknown"):
            raise ValueError("anonymous_style must be 'anonymous' or 'unknown'")
        if self.members is not None:
            self.members = tuple(self.members)


@dataclass
class CdrRecord:
    """One CDR, emitted as a Cdr event when the call ends."""

    channel: Channel
    source: str
    destination: str
    context: str
    last_app: str = "Dial"
    last_data: str = ""
    dest_channel: str = ""
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    answer: datetime | None = None
    disposition: str = "NO ANSWER"


class CallRuntime:
    """State of one call while its scenario runs, and the event primitives it is built from."""

    def __init__(self, sim: SimHooks, scenario: str, params: CallParams) -> None:
        self.sim = sim
        self.scenario = scenario
        self.params = params
        self.linkedid = sim._new_uniqueid()
        self.channels: list[Channel] = []
        self.pending_dials: list[tuple[Channel | None, Channel]] = []
        self.queue_state: tuple[Channel, str, float] | None = None
        self.on_hold: list[Channel] = []
        self.cdrs: list[CdrRecord] = []
        # Calling channel -> (dial started, answered, callee) while its Dial() is bridged.
        self.dial_marks: dict[Channel, tuple[float, float, Channel]] = {}
        # A synchronous Originate waits on this instead of getting an OriginateResponse.
        self.originate_waiter: asyncio.Future[bool] | None = None
        self.originate_done = scenario != "click_to_call"
        self._hangup = asyncio.Event()
        self._hangup_target: Channel | None = None
        self._hangup_cause = 16
        self._loop = asyncio.get_running_loop()

    # -- timing and hangup requests ---------------------------------------------------------

    def now(self) -> float:
        """Loop time, for ring/hold/talk figures."""
        return self._loop.time()

    async def pause(self, seconds: float) -> None:
        """Let time pass; raises HangupRequested as soon as an AMI Hangup hits this call."""
        if not self._hangup.is_set():
            if seconds > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await self._hangup.wait()
            else:
                await asyncio.sleep(0)
        if self._hangup.is_set():
            raise HangupRequested

    def request_hangup(self, chan: Channel, cause: int) -> None:
        """Mark a channel for hangup; the scenario tears the call down at its next pause."""
        if self._hangup_target is None:
            self._hangup_target = chan
            self._hangup_cause = cause
        self._hangup.set()

    # -- channels -------------------------------------------------------------------------

    def alive(self) -> list[Channel]:
        """Channels of this call not yet hung up, oldest first."""
        return [chan for chan in self.channels if chan.alive]

    def new_channel(
        self,
        resource: str,
        *,
        state: int,
        context: str,
        exten: str,
        cid: tuple[str, str] = (UNKNOWN, UNKNOWN),
        linkedid: str | None = None,
        uniqueid: str | None = None,
    ) -> Channel:
        """Create a channel and emit Newchannel."""
        uid = uniqueid or self.sim._new_uniqueid()
        chan = Channel(
            name=f"{resource}-{self.sim._next_channel_seq()}",
            uniqueid=uid,
            linkedid=linkedid or uid,
            state=state,
            cid_num=cid[0],
            cid_name=cid[1],
            context=context,
            exten=exten,
            call=self,
        )
        self.channels.append(chan)
        self.sim._register(chan)
        self.sim._emit("Newchannel", CALL, chan.snapshot())
        return chan

    def newexten(self, chan: Channel, app: str, data: str, *, priority: int | None = None) -> None:
        """The channel runs a dialplan priority (Newexten)."""
        if priority is not None:
            chan.priority = priority
        elif chan.application:
            chan.priority += 1
        chan.application, chan.appdata = app, data
        self.sim._emit(
            "Newexten",
            DIALPLAN,
            [
                *chan.snapshot(),
                ("Extension", chan.exten),
                ("Application", app),
                ("AppData", data),
            ],
        )

    def varset(self, chan: Channel, variable: str, value: str) -> None:
        """A channel variable is set (VarSet)."""
        self.sim._emit(
            "VarSet", DIALPLAN, [*chan.snapshot(), ("Variable", variable), ("Value", value)]
        )

    def set_callerid(self, chan: Channel, num: str, name: str, *, pres: str = PRES_ALLOWED) -> None:
        """Change the channel's caller ID (NewCallerid)."""
        chan.cid_num, chan.cid_name = num, name
        self.sim._emit("NewCallerid", CALL, [*chan.snapshot(), ("CID-CallingPres", pres)])

    def set_connected(self, chan: Channel, num: str, name: str) -> None:
        """Change the channel's connected line (NewConnectedLine)."""
        chan.conn_num, chan.conn_name = num, name
        self.sim._emit("NewConnectedLine", CALL, chan.snapshot())

    def set_state(self, chan: Channel, state: int) -> None:
        """Change the channel state (Newstate)."""
        chan.state = state
        self.sim._emit("Newstate", CALL, chan.snapshot())

    # -- dialing --------------------------------------------------------------------------

    def _dial_fields(self, caller: Channel | None, dest: Channel) -> Fields:
        return [*(caller.snapshot() if caller else []), *dest.snapshot("Dest")]

    def dial_begin(self, caller: Channel | None, dest: Channel, dialstring: str) -> None:
        """DialBegin; an originated call has no calling channel."""
        self.pending_dials.append((caller, dest))
        self.sim._emit(
            "DialBegin", CALL, [*self._dial_fields(caller, dest), ("DialString", dialstring)]
        )

    def dial_state(self, caller: Channel | None, dest: Channel, status: str = "RINGING") -> None:
        """DialState (the callee's progress)."""
        self.sim._emit(
            "DialState", CALL, [*self._dial_fields(caller, dest), ("DialStatus", status)]
        )

    def dial_end(self, caller: Channel | None, dest: Channel, status: str) -> None:
        """DialEnd with the outcome (ANSWER, NOANSWER, BUSY, CANCEL...)."""
        with contextlib.suppress(ValueError):
            self.pending_dials.remove((caller, dest))
        self.sim._emit("DialEnd", CALL, [*self._dial_fields(caller, dest), ("DialStatus", status)])

    def dial_reset_vars(self, chan: Channel) -> None:
        """The VarSet burst Dial() emits when it starts."""
        for name in DIAL_VARS:
            self.varset(chan, name, "")

    def dial_result_vars(
        self, chan: Channel, status: str, peer: Channel | None, started: float, answered: float
    ) -> None:
        """The VarSet burst Dial() emits when it returns."""
        now = self.now()
        ring = (answered or now) - started
        if peer is not None:
            self.varset(chan, "DIALEDPEERNAME", peer.name)
            self.varset(chan, "DIALEDPEERNUMBER", peer.resource.partition("/")[2])
            self.varset(chan, "ANSWEREDTIME", str(int(now - answered)))
            self.varset(chan, "ANSWEREDTIME_MS", str(int((now - answered) * 1000)))
        self.varset(chan, "RINGTIME", str(int(ring)))
        self.varset(chan, "RINGTIME_MS", str(int(ring * 1000)))
        self.varset(chan, "DIALEDTIME", str(int(now - started)))
        self.varset(chan, "DIALEDTIME_MS", str(int((now - started) * 1000)))
        self.varset(chan, "DIALSTATUS", status)

    # -- bridges --------------------------------------------------------------------------

    def bridge_create(self) -> Bridge:
        """BridgeCreate."""
        bridge = Bridge()
        self.sim._emit("BridgeCreate", CALL, bridge.snapshot())
        return bridge

    def bridge_enter(self, bridge: Bridge, chan: Channel) -> None:
        """BridgeEnter; joining a bridge carries its oldest Linkedid to every member."""
        bridge.channels.append(chan)
        chan.bridge = bridge
        oldest = min((member.linkedid for member in bridge.channels), key=_uid_order)
        for member in bridge.channels:
            member.linkedid = oldest
        self.sim._emit("BridgeEnter", CALL, [*bridge.snapshot(), *chan.snapshot()])

    def bridge_leave(self, chan: Channel) -> None:
        """BridgeLeave; the last one out destroys the bridge (BridgeDestroy)."""
        bridge = chan.bridge
        if bridge is None:
            return
        bridge.channels.remove(chan)
        chan.bridge = None
        self.sim._emit("BridgeLeave", CALL, [*bridge.snapshot(), *chan.snapshot()])
        if not bridge.channels:
            self.sim._emit("BridgeDestroy", CALL, bridge.snapshot())

    def connect(self, first: Channel, second: Channel) -> Bridge:
        """Create a bridge and put both channels in it, as Dial/Queue do after an answer."""
        bridge = self.bridge_create()
        self.bridge_enter(bridge, first)
        self.bridge_enter(bridge, second)
        self.varset(first, "BRIDGEPEER", second.name)
        self.varset(second, "BRIDGEPEER", first.name)
        return bridge

    # -- hangup ---------------------------------------------------------------------------

    def hangup_request(self, chan: Channel, cause: int = 16) -> None:
        """HangupRequest: the far end hung up (e.g. a SIP BYE)."""
        self.sim._emit("HangupRequest", CALL, [*chan.snapshot(), ("Cause", str(cause))])

    def soft_hangup_request(self, chan: Channel, cause: int = 16) -> None:
        """SoftHangupRequest: Asterisk itself ends the channel (Hangup() app, AMI Hangup)."""
        self.sim._emit("SoftHangupRequest", CALL, [*chan.snapshot(), ("Cause", str(cause))])

    def hangup(self, chan: Channel, cause: int = 16) -> None:
        """Hangup with Cause and Cause-txt; leaves its bridge first."""
        if not chan.alive:
            return
        self.bridge_leave(chan)
        self.pending_dials = [
            (caller, dest) for caller, dest in self.pending_dials if chan not in (caller, dest)
        ]
        chan.alive = False
        self.sim._unregister(chan)
        self.sim._emit(
            "Hangup",
            CALL,
            [*chan.snapshot(), ("Cause", str(cause)), ("Cause-txt", cause_text(cause))],
        )

    # -- queue ------------------------------------------------------------------------------

    def queue_join(self, chan: Channel, queue: str) -> None:
        """QueueCallerJoin."""
        self.queue_state = (chan, queue, self.now())
        self.sim._emit(
            "QueueCallerJoin",
            AGENT,
            [*chan.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "1")],
        )

    def queue_leave(self, chan: Channel, queue: str) -> None:
        """QueueCallerLeave."""
        self.queue_state = None
        self.sim._emit(
            "QueueCallerLeave",
            AGENT,
            [*chan.snapshot(), ("Queue", queue), ("Position", "1"), ("Count", "0")],
        )

    def queue_abandon(self, chan: Channel, queue: str, joined: float) -> None:
        """QueueCallerAbandon (the caller hung up while waiting), then QueueCallerLeave."""
        self.sim._emit(
            "QueueCallerAbandon",
            AGENT,
            [
                *chan.snapshot(),
                ("Queue", queue),
                ("Position", "1"),
                ("OriginalPosition", "1"),
                ("HoldTime", str(int(self.now() - joined))),
            ],
        )
        self.queue_leave(chan, queue)

    def agent_event(self, event: str, caller: Channel, member: Channel, extra: Fields) -> None:
        """AgentCalled / AgentConnect / AgentComplete / AgentRingNoAnswer."""
        self.sim._emit(event, AGENT, [*caller.snapshot(), *member.snapshot("Dest"), *extra])

    def member_fields(self, queue: str, member: Channel) -> Fields:
        """Queue, Interface and MemberName of a queue member's channel."""
        ext = member.resource.partition("/")[2]
        return [
            ("Queue", queue),
            ("Interface", member.resource),
            ("MemberName", self.sim.agent_name(ext)),
        ]

    def moh_start(self, chan: Channel) -> None:
        """MusicOnHoldStart."""
        self.on_hold.append(chan)
        self.sim._emit("MusicOnHoldStart", CALL, [*chan.snapshot(), ("Class", "default")])

    def moh_stop(self, chan: Channel) -> None:
        """MusicOnHoldStop."""
        if chan in self.on_hold:
            self.on_hold.remove(chan)
        self.sim._emit("MusicOnHoldStop", CALL, chan.snapshot())

    # -- outcome records ------------------------------------------------------------------

    def emit_cdr(self, record: CdrRecord, end: datetime) -> None:
        """Cdr event, field order as Asterisk's cdr_manager writes it."""
        answer = record.answer
        caller = record.channel
        self.sim._emit(
            "Cdr",
            CDR,
            [
                ("AccountCode", ""),
                ("Source", record.source),
                ("Destination", record.destination),
                ("DestinationContext", record.context),
                ("CallerID", f'"{caller.cid_name}" <{caller.cid_num}>'),
                ("Channel", caller.name),
                ("DestinationChannel", record.dest_channel),
                ("LastApplication", record.last_app),
                ("LastData", record.last_data),
                ("StartTime", _cdr_time(record.start)),
                ("AnswerTime", _cdr_time(answer) if answer else ""),
                ("EndTime", _cdr_time(end)),
                ("Duration", str(int((end - record.start).total_seconds()))),
                ("BillableSeconds", str(int((end - answer).total_seconds())) if answer else "0"),
                ("Disposition", record.disposition),
                ("AMAFlags", "DOCUMENTATION"),
                ("UniqueID", caller.uniqueid),
                ("UserField", ""),
            ],
        )

    def originate_response(
        self, success: bool, chan: Channel | None, reason: int, cid: tuple[str, str]
    ) -> None:
        """OriginateResponse for an Originate (from the action or place_call)."""
        self.originate_done = True
        if self.originate_waiter is not None:
            if not self.originate_waiter.done():
                self.originate_waiter.set_result(success)
            return
        p = self.params
        fields: Fields = []
        if p.action_id:
            fields.append(("ActionID", p.action_id))
        fields.append(("Response", "Success" if success else "Failure"))
        fields.append(("Channel", chan.name if success and chan else p.requested_channel or ""))
        if p.application:
            fields += [("Application", p.application), ("Data", p.app_data)]
        else:
            fields += [("Context", p.context), ("Exten", p.number)]
        fields += [
            ("Reason", str(reason)),
            ("Uniqueid", chan.uniqueid if success and chan else UNKNOWN),
            ("CallerIDNum", cid[0]),
            ("CallerIDName", cid[1]),
        ]
        self.sim._emit("OriginateResponse", CALL, fields)

    # -- teardown -------------------------------------------------------------------------

    def teardown(self) -> None:
        """End every channel after an AMI Hangup, keeping the stream consistent."""
        target, cause = self._hangup_target, self._hangup_cause
        if target is not None and target.alive:
            self.soft_hangup_request(target, cause)
            for caller, dest in list(self.pending_dials):
                if dest is target:
                    self.dial_end(caller, dest, _dial_status_for(cause))
                elif caller is target:
                    self.dial_end(caller, dest, "CANCEL")
                    self.hangup(dest, 0)
            self._abandon_queue(target)
            if not self.originate_done:
                # The originated phone was hung up before it answered.
                self.originate_response(False, None, 1, self.originate_cid())
            self.hangup(target, cause)
        self.finish(cause=16)

    def originate_cid(self) -> tuple[str, str]:
        """Caller ID of an originated call: the Originate's CallerID or the agent's own."""
        p = self.params
        return p.callerid or (p.extension, self.sim.agent_name(p.extension))

    def _abandon_queue(self, chan: Channel) -> None:
        if self.queue_state and self.queue_state[0] is chan:
            _, queue, joined = self.queue_state
            if chan in self.on_hold:
                self.moh_stop(chan)
            self.queue_abandon(chan, queue, joined)

    def finish(self, cause: int = 16) -> None:
        """Hang up whatever is left (pending dials cancelled, bridges dissolved)."""
        for caller, dest in list(self.pending_dials):
            self.dial_end(caller, dest, "CANCEL")
            self.hangup(dest, 0)
        for chan in self.alive():
            if self.queue_state and self.queue_state[0] is chan:
                self._abandon_queue(chan)
            self.hangup(chan, cause)

    def close_cdrs(self) -> None:
        """Emit the call's CDRs once every channel is gone."""
        end = datetime.now(UTC)
        for record in self.cdrs:
            self.emit_cdr(record, end)
        self.cdrs.clear()


def _uid_order(uniqueid: str) -> tuple[float, int]:
    """Sort key of `<system>-<epoch>.<n>` ids: the oldest channel wins Linkedid."""
    tail = uniqueid.rpartition("-")[2]
    epoch, _, seq = tail.partition(".")
    try:
        return float(epoch), int(seq or 0)
    except ValueError:
        return float("inf"), 0


def _dial_status_for(cause: int) -> str:
    """ast_hangup_cause_to_dial_status()."""
    if cause == 17:
        return "BUSY"
    if cause == 34:
        return "CONGESTION"
    if cause in (3, 20):
        return "CHANUNAVAIL"
    return "NOANSWER"


def _cdr_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- building blocks --------------------------------------------------------------------------


def inbound_trunk(rt: CallRuntime, *, anonymous: bool = False) -> Channel:
    """The outside caller arrives on the trunk (PJSIP fills caller ID before Newchannel)."""
    p = rt.params
    if anonymous:
        cid = ("anonymous", "Anonymous") if p.anonymous_style == "anonymous" else (UNKNOWN, UNKNOWN)
    else:
        cid = (p.caller, p.caller_name or UNKNOWN)
    trunk = rt.new_channel(
        TRUNK, state=RING, context="from-pstn", exten=p.did, cid=cid, uniqueid=rt.linkedid
    )
    if anonymous:
        # The privacy request is only visible as presentation, which NewCallerid carries.
        pres = PRES_PROHIBITED if p.anonymous_style == "anonymous" else PRES_UNAVAILABLE
        rt.set_callerid(trunk, cid[0], cid[1], pres=pres)
    rt.newexten(trunk, "NoOp", f"Inbound call to {p.did} from {cid[0]}", priority=1)
    rt.cdrs.append(CdrRecord(trunk, source=trunk.cid_num, destination=p.did, context="from-pstn"))
    return trunk


def outbound_leg(rt: CallRuntime, caller: Channel, resource: str, context: str) -> Channel:
    """Dial() creates the callee channel: its caller ID is the number dialed, connected line
    the calling party (the shape of the agent legs in the asterisk22 traces)."""
    dest = rt.new_channel(
        resource, state=DOWN, context=context, exten="s", linkedid=caller.linkedid
    )
    dest.application, dest.appdata = "AppDial", "(Outgoing Line)"
    dest.exten = caller.exten
    dest.conn_num, dest.conn_name = caller.cid_num, caller.cid_name
    rt.set_callerid(dest, caller.exten, caller.cid_name)
    rt.set_connected(dest, caller.cid_num, caller.cid_name)
    return dest


async def dial(
    rt: CallRuntime,
    caller: Channel,
    resource: str,
    outcome: str,
    *,
    ring: float,
    dialstring: str | None = None,
    context: str = "from-internal",
    cdr: CdrRecord | None = None,
) -> Channel | None:
    """Dial() one device; outcome is answer, noanswer, busy or cancel (caller gives up).

    Returns the answered and bridged callee, or None when Dial() returned without an answer
    (the callee is already hung up then, and for cancel the caller too).
    """
    tech, _, data = resource.partition("/")
    dialstring = dialstring or data
    timeout = max(1, round(rt.params.timeout))
    app_data = f"{tech}/{dialstring},{timeout}"
    rt.newexten(caller, "Dial", app_data)
    rt.dial_reset_vars(caller)
    started = rt.now()
    dest = outbound_leg(rt, caller, resource, context)
    if cdr is not None:
        cdr.dest_channel, cdr.last_app, cdr.last_data = dest.name, "Dial", app_data
    rt.dial_begin(caller, dest, dialstring)
    if outcome == "busy":
        await rt.pause(min(ring, 0.01))
        rt.dial_end(caller, dest, "BUSY")
        rt.hangup(dest, 17)
        rt.dial_result_vars(caller, "BUSY", None, started, 0.0)
        if cdr is not None:
            cdr.disposition = "BUSY"
        return None
    rt.set_state(dest, RINGING)
    rt.dial_state(caller, dest, "RINGING")
    await rt.pause(ring)
    if outcome == "answer":
        rt.set_state(dest, UP)
        rt.dial_end(caller, dest, "ANSWER")
        if caller.state != UP:
            rt.set_state(caller, UP)
        rt.dial_marks[caller] = (started, rt.now(), dest)
        rt.connect(dest, caller)
        rt.varset(caller, "DIALSTATUS", "ANSWER")
        if cdr is not None:
            cdr.answer, cdr.disposition = datetime.now(UTC), "ANSWERED"
        return dest
    if outcome == "cancel":
        rt.hangup_request(caller, 16)
        rt.dial_end(caller, dest, "CANCEL")
        rt.hangup(dest, 0)
        rt.dial_result_vars(caller, "CANCEL", None, started, 0.0)
        rt.hangup(caller, 16)
        return None
    rt.dial_end(caller, dest, "NOANSWER")
    rt.hangup(dest, 0)
    rt.dial_result_vars(caller, "NOANSWER", None, started, 0.0)
    return None


def end_dialplan(rt: CallRuntime, chan: Channel, cause: int = 16) -> None:
    """The calling channel runs Hangup() after Dial() returned."""
    if not chan.alive:
        return
    marks = rt.dial_marks.pop(chan, None)
    if marks is not None:
        started, answered_at, peer = marks
        rt.dial_result_vars(chan, "ANSWER", peer, started, answered_at)
    rt.newexten(chan, "Hangup", "")
    rt.soft_hangup_request(chan, cause)
    rt.hangup(chan, cause)


def hang_up_bridged(rt: CallRuntime, first: Channel, rest: list[Channel]) -> None:
    """One party hangs up (BYE); the bridge dissolves and the others end too."""
    rt.hangup_request(first, 16)
    rt.hangup(first, 16)
    for chan in rest:
        rt.bridge_leave(chan)
    for chan in rest:
        if chan.application in ("AppDial", "AppQueue"):
            rt.hangup(chan, 16)
        else:
            end_dialplan(rt, chan)


# -- scenarios --------------------------------------------------------------------------------


async def _direct(
    rt: CallRuntime, outcome: str, *, anonymous: bool = False, record: bool = False
) -> None:
    p = rt.params
    trunk = inbound_trunk(rt, anonymous=anonymous)
    if record:
        path = f"{p.recording_dir}/{trunk.uniqueid}.wav"
        rt.newexten(trunk, "MixMonitor", f"{path},b")
        rt.varset(trunk, "MIXMONITOR_FILENAME", path)
        rt.sim._emit("MixMonitorStart", CALL, trunk.snapshot())
    agent = await dial(
        rt, trunk, rt.sim.device_for(p.extension), outcome, ring=p.ring, cdr=rt.cdrs[0]
    )
    if agent is None:
        end_dialplan(rt, trunk)
        return
    await rt.pause(p.talk)
    if p.hangup_by == "caller":
        hang_up_bridged(rt, trunk, [agent])
    else:
        hang_up_bridged(rt, agent, [trunk])


async def answered(rt: CallRuntime) -> None:
    """Caller -> DID -> Dial(PJSIP/<ext>): rings, answers, talks, one side hangs up."""
    await _direct(rt, "answer")


async def missed(rt: CallRuntime) -> None:
    """The agent's phone rings until Dial() times out (DIALSTATUS NOANSWER)."""
    await _direct(rt, "noanswer")


async def busy(rt: CallRuntime) -> None:
    """The agent's phone rejects with 486 Busy Here (DIALSTATUS BUSY, cause 17)."""
    await _direct(rt, "busy")


async def cancel(rt: CallRuntime) -> None:
    """The caller hangs up while the agent's phone is still ringing (DIALSTATUS CANCEL)."""
    await _direct(rt, "cancel")


async def anonymous(rt: CallRuntime) -> None:
    """An answered call from a withheld number (presentation prohibited)."""
    await _direct(rt, "answer", anonymous=True)


async def recorded(rt: CallRuntime) -> None:
    """MixMonitor records the call (VarSet MIXMONITOR_FILENAME, MixMonitorStart), then Dial."""
    await _direct(rt, "answer", record=True)


def _members(rt: CallRuntime) -> tuple[str, ...]:
    p = rt.params
    if p.members:
        return tuple(p.members)
    if p.transfer_to != p.extension:
        return (p.extension, p.transfer_to)
    if p.extension.isdigit():
        return (p.extension, str(int(p.extension) + 1))
    return (p.extension,)


async def _queue(rt: CallRuntime, *, abandon: bool) -> None:
    p = rt.params
    members = _members(rt)
    winner_ext = None if abandon else (p.answered_by or members[0])
    trunk = inbound_trunk(rt)
    rt.newexten(trunk, "Answer", "")
    rt.set_state(trunk, UP)
    rt.newexten(trunk, "Queue", f"{p.queue},t,,,300")
    record = rt.cdrs[0]
    record.last_app, record.last_data = "Queue", f"{p.queue},t,,,300"
    rt.queue_join(trunk, p.queue)
    joined = rt.now()
    rt.moh_start(trunk)

    def call_member(ext: str) -> Channel:
        resource = rt.sim.device_for(ext)
        leg = rt.new_channel(
            resource, state=DOWN, context="from-internal", exten="s", linkedid=trunk.linkedid
        )
        leg.application, leg.appdata = "AppQueue", "(Outgoing Line)"
        leg.exten = trunk.exten
        rt.set_callerid(leg, trunk.cid_num, trunk.cid_name)
        rt.agent_event("AgentCalled", trunk, leg, rt.member_fields(p.queue, leg))
        rt.dial_begin(trunk, leg, resource)
        return leg

    def ringing(legs: list[Channel]) -> None:
        for leg in legs:
            rt.set_state(leg, RINGING)
            rt.set_connected(leg, trunk.cid_num, trunk.cid_name)
        for leg in reversed(legs):
            rt.dial_state(trunk, leg, "RINGING")

    winner: Channel | None = None
    ring_started = rt.now()
    if p.strategy == "linear" and not abandon:
        for ext in members:
            leg = call_member(ext)
            ringing([leg])
            ring_started = rt.now()
            await rt.pause(p.ring)
            if ext == winner_ext:
                winner = leg
                break
            ring_ms = int((rt.now() - ring_started) * 1000)
            rt.agent_event(
                "AgentRingNoAnswer",
                trunk,
                leg,
                [*rt.member_fields(p.queue, leg), ("RingTime", str(ring_ms))],
            )
            rt.dial_end(trunk, leg, "NOANSWER")
            rt.hangup(leg, 0)
    else:
        legs = [call_member(ext) for ext in members]
        ringing(legs)
        await rt.pause(p.ring)
        if abandon:
            rt.hangup_request(trunk, 16)
            for leg in legs:
                rt.dial_end(trunk, leg, "CANCEL")
                rt.hangup(leg, 0)
            rt.moh_stop(trunk)
            rt.queue_abandon(trunk, p.queue, joined)
            rt.hangup(trunk, 16)
            return
        winner = next(
            (leg for leg in legs if leg.resource == rt.sim.device_for(winner_ext or "")), legs[0]
        )
        rt.set_state(winner, UP)
        rt.dial_end(trunk, winner, "ANSWER")
        for leg in legs:
            if leg is not winner:
                rt.dial_end(trunk, leg, "CANCEL")
                rt.hangup(leg, 26)
    if winner is None:
        # Nobody in a linear hunt answered: the queue times out and the caller leaves.
        rt.moh_stop(trunk)
        rt.queue_leave(trunk, p.queue)
        rt.varset(trunk, "QUEUESTATUS", "TIMEOUT")
        end_dialplan(rt, trunk)
        return
    if winner.state != UP:
        rt.set_state(winner, UP)
        rt.dial_end(trunk, winner, "ANSWER")
    hold = int(rt.now() - joined)
    ring_time = int(rt.now() - ring_started)
    rt.moh_stop(trunk)
    rt.queue_leave(trunk, p.queue)
    rt.varset(trunk, "QUEUEPOSITION", "1")
    rt.varset(trunk, "QUEUEWAIT", str(hold))
    rt.agent_event(
        "AgentConnect",
        trunk,
        winner,
        [*rt.member_fields(p.queue, winner), ("HoldTime", str(hold)), ("RingTime", str(ring_time))],
    )
    record.dest_channel, record.disposition = winner.name, "ANSWERED"
    record.answer = datetime.now(UTC)
    rt.connect(winner, trunk)
    talk_started = rt.now()
    await rt.pause(p.talk)
    first, other = (trunk, winner) if p.hangup_by == "caller" else (winner, trunk)
    rt.hangup_request(first, 16)
    rt.agent_event(
        "AgentComplete",
        trunk,
        winner,
        [
            *rt.member_fields(p.queue, winner),
            ("HoldTime", str(hold)),
            ("TalkTime", str(int(rt.now() - talk_started))),
            ("Reason", "caller" if first is trunk else "agent"),
        ],
    )
    rt.hangup(first, 16)
    rt.bridge_leave(other)
    if other is trunk:
        end_dialplan(rt, trunk)
    else:
        rt.hangup(other, 16)


async def queue(rt: CallRuntime) -> None:
    """Caller answered and queued; two members ring (ringall), one answers, the other is
    cancelled with cause 26; strategy="linear" rings them in turn (AgentRingNoAnswer)."""
    await _queue(rt, abandon=False)


async def queue_abandon(rt: CallRuntime) -> None:
    """Caller waits in the queue while members ring and hangs up (QueueCallerAbandon)."""
    await _queue(rt, abandon=True)


async def blind_transfer(rt: CallRuntime) -> None:
    """Agent answers, then blind-transfers (SIP REFER) the caller to transfer_to."""
    p = rt.params
    trunk = inbound_trunk(rt)
    agent = await dial(
        rt, trunk, rt.sim.device_for(p.extension), "answer", ring=p.ring, cdr=rt.cdrs[0]
    )
    if agent is None:
        end_dialplan(rt, trunk)
        return
    await rt.pause(p.talk)
    bridge = agent.bridge
    assert bridge is not None
    rt.sim._emit(
        "BlindTransfer",
        CALL,
        [
            ("Result", "Success"),
            *agent.snapshot("Transferer"),
            *trunk.snapshot("Transferee"),
            *bridge.snapshot(),
            ("IsExternal", "Yes"),
            ("Context", "from-internal"),
            ("Extension", p.transfer_to),
        ],
    )
    rt.bridge_leave(agent)
    rt.bridge_leave(trunk)
    rt.hangup(agent, 16)
    trunk.context, trunk.exten = "from-internal", p.transfer_to
    trunk.priority, trunk.application = 1, ""
    record = CdrRecord(
        trunk, source=trunk.cid_num, destination=p.transfer_to, context="from-internal"
    )
    rt.cdrs.append(record)
    target = await dial(
        rt, trunk, rt.sim.device_for(p.transfer_to), "answer", ring=p.ring, cdr=record
    )
    if target is None:
        end_dialplan(rt, trunk)
        return
    await rt.pause(p.talk)
    if p.hangup_by == "caller":
        hang_up_bridged(rt, trunk, [target])
    else:
        hang_up_bridged(rt, target, [trunk])


async def attended_transfer(rt: CallRuntime) -> None:
    """Agent answers, holds the caller, consults transfer_to on a second call (its own
    Linkedid), then completes the transfer: the bridges merge and the target's channel takes
    the original call's Linkedid."""
    p = rt.params
    trunk = inbound_trunk(rt)
    agent_ext = p.extension
    agent = await dial(
        rt, trunk, rt.sim.device_for(agent_ext), "answer", ring=p.ring, cdr=rt.cdrs[0]
    )
    if agent is None:
        end_dialplan(rt, trunk)
        return
    await rt.pause(p.talk)
    rt.sim._emit("Hold", CALL, [*agent.snapshot(), ("MusicClass", "default")])
    rt.moh_start(trunk)
    consult = rt.new_channel(
        rt.sim.device_for(agent_ext),
        state=RING,
        context="from-internal",
        exten=p.transfer_to,
        cid=(agent_ext, rt.sim.agent_name(agent_ext)),
    )
    consult_cdr = CdrRecord(
        consult, source=agent_ext, destination=p.transfer_to, context="from-internal"
    )
    rt.cdrs.append(consult_cdr)
    rt.newexten(consult, "NoOp", f"Internal call to {p.transfer_to}", priority=1)
    target = await dial(
        rt, consult, rt.sim.device_for(p.transfer_to), "answer", ring=p.ring, cdr=consult_cdr
    )
    if target is None:
        rt.sim._emit("Unhold", CALL, agent.snapshot())
        rt.moh_stop(trunk)
        end_dialplan(rt, consult)
        await rt.pause(p.talk)
        hang_up_bridged(rt, agent, [trunk])
        return
    await rt.pause(p.consult if p.consult is not None else p.talk)
    first_bridge, second_bridge = agent.bridge, target.bridge
    assert first_bridge is not None and second_bridge is not None
    # The event describes the state just before the merge (both bridges still full).
    before: Fields = [
        ("Result", "Success"),
        *agent.snapshot("OrigTransferer"),
        *first_bridge.snapshot("Orig"),
        *consult.snapshot("SecondTransferer"),
        *second_bridge.snapshot("Second"),
        *trunk.snapshot("Transferee"),
        *target.snapshot("TransferTarget"),
        ("IsExternal", "Yes"),
        ("DestType", "Bridge"),
        ("DestBridgeUniqueid", second_bridge.uniqueid),
    ]
    rt.moh_stop(trunk)
    rt.bridge_leave(trunk)
    rt.bridge_leave(consult)
    rt.bridge_enter(second_bridge, trunk)
    rt.sim._emit("AttendedTransfer", CALL, before)
    rt.bridge_leave(agent)
    rt.hangup(consult, 16)
    rt.hangup(agent, 16)
    await rt.pause(p.talk)
    if p.hangup_by == "caller":
        hang_up_bridged(rt, trunk, [target])
    else:
        hang_up_bridged(rt, target, [trunk])


async def click_to_call(rt: CallRuntime) -> None:
    """Originate: the agent's phone rings first; once answered it dials the number through
    the trunk (or an internal extension) and both are bridged."""
    p = rt.params
    resource = rt.sim.device_for(p.extension)
    cid = rt.originate_cid()
    agent = rt.new_channel(resource, state=DOWN, context=p.context, exten="s", uniqueid=rt.linkedid)
    for name, value in p.variables:
        rt.varset(agent, name, value)
    rt.set_callerid(agent, cid[0], cid[1])
    rt.set_connected(agent, cid[0], cid[1])
    rt.dial_begin(None, agent, resource.partition("/")[2])
    rt.set_state(agent, RINGING)
    rt.dial_state(None, agent, "RINGING")
    if not p.agent_answers or p.ring > p.timeout:
        await rt.pause(min(p.ring, p.timeout))
        rt.dial_end(None, agent, "NOANSWER")
        rt.originate_response(False, agent, 3, cid)
        rt.hangup(agent, 0)
        return
    await rt.pause(p.ring)
    rt.set_state(agent, UP)
    rt.dial_end(None, agent, "ANSWER")
    rt.originate_response(True, agent, 4, cid)
    if p.application:
        rt.newexten(agent, p.application, p.app_data, priority=1)
        await rt.pause(p.talk)
        rt.soft_hangup_request(agent, 16)
        rt.hangup(agent, 16)
        return
    agent.context, agent.exten = p.context, p.number
    record = CdrRecord(agent, source=cid[0], destination=p.number, context=p.context)
    record.answer = datetime.now(UTC)
    rt.cdrs.append(record)
    internal = rt.sim.is_extension(p.number)
    if internal:
        remote_resource, dialstring = rt.sim.device_for(p.number), p.number
    else:
        remote_resource, dialstring = TRUNK, f"{p.number}@trunk"
    outcome = "busy" if p.remote_busy else ("answer" if p.remote_answers else "noanswer")
    rt.newexten(agent, "NoOp", f"Click-to-call {cid[0]} -> {p.number}", priority=1)
    remote = await dial(
        rt,
        agent,
        remote_resource,
        outcome,
        ring=p.ring,
        dialstring=dialstring,
        context="from-internal" if internal else "from-pstn",
        cdr=record,
    )
    if remote is None:
        record.answer = None
        end_dialplan(rt, agent)
        return
    await rt.pause(p.talk)
    if p.hangup_by == "agent":
        hang_up_bridged(rt, agent, [remote])
    else:
        hang_up_bridged(rt, remote, [agent])


Script = Callable[[CallRuntime], Awaitable[None]]

SCRIPTS: dict[str, Script] = {
    "answered": answered,
    "missed": missed,
    "busy": busy,
    "cancel": cancel,
    "queue": queue,
    "blind_transfer": blind_transfer,
    "attended_transfer": attended_transfer,
    "click_to_call": click_to_call,
    "anonymous": anonymous,
    "recorded": recorded,
    "queue_abandon": queue_abandon,
}

SCENARIOS: tuple[str, ...] = tuple(SCRIPTS)

__all__ = ["SCENARIOS", "SCRIPTS", "CallParams", "CallRuntime", "HangupRequested"]
