"""The call tracker: pure logic that turns Asterisk AMI events into calls and call effects.

Channels are grouped into calls by Linkedid and into legs by Uniqueid. The tracker follows
Newchannel, NewCallerid, LocalBridge, DialBegin/DialEnd, the queue events, transfers, bridges and
Hangup, and emits `CallRinging` / `CallAnswered` while a call runs and one `CallEnded` (with the
`CallRecord` for the log) when the last channel of a Linkedid is gone. It does no I/O; `handle`
is O(1) per event and cheap for the many events it ignores (CEL, Newexten, VarSet, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from hub.telephony.model import (
    CallAnswered,
    CallEffect,
    CallEnded,
    CallRecord,
    CallRinging,
    Direction,
    Disposition,
    LiveCall,
    TrackerConfig,
    Transfer,
    TransferKind,
)

_log = logging.getLogger(__name__)

Event = Mapping[str, str]

# Channel technologies that are never a phone: routing halves and Asterisk's own helpers.
_NON_ENDPOINT_PREFIXES = (
    "Local/",
    "Snoop/",
    "CBAnn/",
    "CBRec/",
    "Announcer/",
    "Recorder/",
    "Message/",
    "Bridge/",
    "Multicast/",
)
# Caller numbers that say "no number": the caller is withheld, never a number to look up.
_NO_NUMBER = frozenset(
    {"", "<unknown>", "unknown", "anonymous", "restricted", "private", "unavailable", "withheld"}
)
_NO_NAME = frozenset({"", "<unknown>", "unknown", "anonymous"})
# DialEnd statuses that mean "could have been answered": the call was missed, not busy/failed.
_MISSED_STATUSES = frozenset({"NOANSWER", "CANCEL", "ANSWER"})
_FAILED_STATUSES = frozenset({"CHANUNAVAIL", "CONGESTION", "INVALIDARGS", "DONTCALL", "TORTURE"})
# Hangup cause of a dialled leg whose DialEnd we never saw, as the DialStatus it stands for.
_CAUSE_STATUS = {
    "17": "BUSY",
    "21": "BUSY",
    "1": "CHANUNAVAIL",
    "3": "CHANUNAVAIL",
    "20": "CHANUNAVAIL",
    "27": "CHANUNAVAIL",
    "34": "CONGESTION",
    "38": "CONGESTION",
    "42": "CONGESTION",
}
# How many finished Linkedids are remembered so late or duplicate events cannot revive them.
_ENDED_MEMORY = 4096
_GONE_MEMORY = 16384

_KEYS = (
    "Uniqueid",
    "Linkedid",
    "Channel",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "Exten",
)
_DEST_KEYS = (
    "DestUniqueid",
    "DestLinkedid",
    "DestChannel",
    "DestCallerIDNum",
    "DestCallerIDName",
    "DestConnectedLineNum",
    "DestExten",
)


def device_of(channel: str) -> str:
    """The device of a channel name: `PJSIP/201-0000000a` -> `PJSIP/201`, `Local/1@a-0a;1` -> `Local/1@a`."""
    name = channel
    semi = name.rfind(";")
    if semi > 0 and name.startswith("Local/"):
        name = name[:semi]
    dash = name.rfind("-")
    if dash > name.find("/") >= 0:
        suffix = name[dash + 1 :]
        if suffix and all(c in "0123456789abcdefABCDEF" for c in suffix):
            return name[:dash]
    return name


def extension_of(device: str) -> str | None:
    """The extension a device stands for (`PJSIP/201` -> `201`, `Local/100@agents` -> `100`)."""
    slash = device.find("/")
    resource = device[slash + 1 :] if slash >= 0 else device
    at = resource.find("@")
    if at >= 0:
        resource = resource[:at]
    return resource if _is_number(resource) else None


def _is_number(value: str) -> bool:
    digits = value[1:] if value.startswith("+") else value
    return bool(digits) and digits.isascii() and digits.isdigit()


def _dial_target(event: Event) -> str | None:
    """The number a DialBegin to a Local channel dials: `+49301@pstn/n` -> `+49301`."""
    dial_string = event.get("DialString") or ""
    at = dial_string.find("@")
    if at > 0:
        number = dial_string[:at]
        if number.startswith("Local/"):
            number = number[6:]
        if _is_number(number):
            return number
    return None


def _dialled_number(event: Event) -> str | None:
    """The number a DialBegin dials, else the number the dialling channel is running."""
    number = _dial_target(event)
    if number is not None:
        return number
    for key in ("Exten", "DestExten"):
        value = event.get(key)
        if value and _is_number(value):
            return value
    return None


def _duration_seconds(value: str | None) -> float:
    """CoreShowChannel `Duration` (`HH:MM:SS`) in seconds; 0 when absent or malformed."""
    if not value:
        return 0.0
    total = 0.0
    for part in value.split(":"):
        if not part.isdigit():
            return 0.0
        total = total * 60 + int(part)
    return total


class _Leg:
    """One channel (Uniqueid) of a call."""

    __slots__ = (
        "answered",
        "call",
        "channel",
        "cid_name",
        "cid_num",
        "connected_num",
        "device",
        "dial_done",
        "dial_number",
        "dialled",
        "exten",
        "partner",
        "prohibited",
        "ringable",
        "uid",
    )

    def __init__(self, uid: str, channel: str, call: _Call) -> None:
        self.uid = uid
        self.channel = channel
        self.device = device_of(channel)
        self.call = call
        self.cid_num: str | None = None
        self.cid_name: str | None = None
        self.connected_num: str | None = None
        self.exten: str | None = None
        self.prohibited = False
        self.partner: _Leg | None = None
        # Dial bookkeeping for a leg some other leg dialled (a callee side leg).
        self.dialled = False
        self.dial_done = False
        self.dial_number: str | None = None
        self.ringable = False
        self.answered = False


class _PendingTransfer:
    """A transfer being recorded; blind ones stay open until someone answers the new dial."""

    __slots__ = ("from_device", "kind", "open", "to_device", "to_devices", "to_number")

    def __init__(self, kind: TransferKind, from_device: str | None, to_number: str | None) -> None:
        self.kind: TransferKind = kind
        self.from_device = from_device
        self.to_number = to_number
        self.to_device: str | None = None
        self.to_devices: list[str] = []
        self.open = True

    def frozen(self) -> Transfer:
        to_device = self.to_device or (self.to_devices[0] if self.to_devices else None)
        return Transfer(
            kind=self.kind,
            from_device=self.from_device,
            to_device=to_device,
            to_number=self.to_number,
            to_devices=tuple(self.to_devices),
        )


class _Call:
    """Everything known about one Linkedid while it runs."""

    __slots__ = (
        "abandoned",
        "answered",
        "answered_at",
        "b_side",
        "callee",
        "caller_device",
        "caller_leg",
        "hangup_cause",
        "legs",
        "linkedid",
        "originate_failed",
        "originate_id",
        "originated_leg",
        "originator_device",
        "originator_direct",
        "queue",
        "queue_joined",
        "rang",
        "rang_phase",
        "recording",
        "recording_from_var",
        "started_at",
        "statuses",
        "transfer_keys",
        "transfers",
    )

    def __init__(self, linkedid: str, at: datetime) -> None:
        self.linkedid = linkedid
        self.started_at = at
        self.legs: dict[str, _Leg] = {}
        self.caller_leg: _Leg | None = None
        self.caller_device: str | None = None
        self.callee: str | None = None
        # Devices rung on the called side (unique, in order) and the devices that may still get a
        # pop in the current phase (a transfer starts a new phase: the new agent is popped).
        self.rang: list[str] = []
        self.rang_phase: set[str] = set()
        self.answered: list[_Leg] = []
        self.answered_at: datetime | None = None
        self.statuses: set[str] = set()
        self.queue: str | None = None
        self.queue_joined = False
        self.abandoned = False
        self.recording: str | None = None
        self.recording_from_var = False
        self.transfers: list[_PendingTransfer] = []
        self.transfer_keys: set[tuple[str, ...]] = set()
        self.hangup_cause: str | None = None
        # Originate (click-to-call): the channel it created, whether that channel is the agent's
        # own phone (direct) or a routing channel, and whether it has started dialling out.
        self.originated_leg: _Leg | None = None
        self.originator_direct = False
        self.originate_failed = False
        self.originate_id: str | None = None
        # The originator's own phone, rung first by a click-to-call: never listed as rung.
        self.originator_device: str | None = None
        self.b_side = False


Handler = Callable[[Event, datetime, list[CallEffect]], None]


class CallTracker:
    """Turns AMI events into call effects; one instance per PBX, fed from one task."""

    def __init__(self, config: TrackerConfig) -> None:
        """Create an empty tracker."""
        self._pattern = config.internal_pattern
        devices = config.agent_devices
        if callable(devices):
            self._agent_devices: Callable[[], Collection[str]] = devices
        else:
            fixed = frozenset(devices)
            self._agent_devices = lambda: fixed
        self._legs: dict[str, _Leg] = {}
        self._calls: dict[str, _Call] = {}
        self._local_ones: dict[str, _Leg] = {}
        self._ended: dict[str, None] = {}
        # Channels that hung up lately: Asterisk may still send an event or two about them
        # (a NewConnectedLine after the Hangup), which must not bring them back to life.
        self._gone: dict[str, None] = {}
        # Exceptions swallowed by `handle` (a bug or a truly strange event); tests assert 0.
        self.internal_errors = 0
        self._handlers: dict[str, Handler] = {
            "Newchannel": self._on_newchannel,
            "NewCallerid": self._on_newcallerid,
            "NewConnectedLine": self._on_newconnectedline,
            "Newstate": self._on_leg_touch,
            "LocalBridge": self._on_localbridge,
            "DialBegin": self._on_dialbegin,
            "DialEnd": self._on_dialend,
            "BridgeEnter": self._on_bridgeenter,
            "BridgeLeave": self._on_leg_touch,
            "Hangup": self._on_hangup,
            "AgentCalled": self._on_agentcalled,
            "AgentConnect": self._on_agentconnect,
            "QueueCallerJoin": self._on_queuejoin,
            "QueueCallerAbandon": self._on_queueabandon,
            "QueueCallerLeave": self._on_queuejoin,
            "BlindTransfer": self._on_blindtransfer,
            "AttendedTransfer": self._on_attendedtransfer,
            "VarSet": self._on_varset,
            "Newexten": self._on_newexten,
            "Cdr": self._on_cdr,
            "OriginateResponse": self._on_originateresponse,
            "Pickup": self._on_pickup,
            "CoreShowChannel": self._on_coreshowchannel,
        }

    # ------------------------------------------------------------------ public API

    def handle(self, event: Mapping[str, str], at: datetime) -> list[CallEffect]:
        """Apply one AMI event received at `at`; return the effects it caused (never raises)."""
        out: list[CallEffect] = []
        try:
            name = event.get("Event")
            if name is None:
                return out
            handler = self._handlers.get(name)
            if handler is None:
                return out
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            handler(event, at, out)
        except Exception:
            self.internal_errors += 1
            _log.debug("call tracker could not apply event %r", event, exc_info=True)
        return out

    def resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> list[CallEffect]:
        """Align with a CoreShowChannels snapshot: end calls that vanished, adopt unknown ones."""
        out: list[CallEffect] = []
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        try:
            live: dict[str, Mapping[str, str]] = {}
            for channel in channels:
                uid = channel.get("Uniqueid")
                if isinstance(uid, str) and uid:
                    live[uid] = channel
            for uid in [uid for uid in self._legs if uid not in live]:
                self._drop_leg(self._legs[uid], None, at, out)
            # Callers' legs first, so each adopted call knows its caller before anything rings.
            ordered = sorted(live.values(), key=lambda ch: ch.get("Uniqueid") != ch.get("Linkedid"))
            for channel in ordered:
                self._adopt_channel(channel, at, out)
        except Exception:
            self.internal_errors += 1
            _log.debug("call tracker could not apply a resync", exc_info=True)
        return out

    def live_calls(self) -> list[LiveCall]:
        """A snapshot of the calls in progress, oldest first."""
        result: list[LiveCall] = []
        for call in self._calls.values():
            caller, _name, _withheld = self._caller(call)
            devices: list[str] = []
            for leg in call.legs.values():
                if leg.device not in devices and self._ringable(leg.device):
                    devices.append(leg.device)
            result.append(
                LiveCall(
                    linkedid=call.linkedid,
                    caller=caller,
                    direction=self._direction(call),
                    state="up" if call.answered_at is not None else "ringing",
                    devices=tuple(devices),
                    started_at=call.started_at,
                    answered_at=call.answered_at,
                    callee=call.callee,
                    queue=call.queue,
                )
            )
        return result

    def __len__(self) -> int:
        """Number of calls in progress."""
        return len(self._calls)

    @property
    def leg_count(self) -> int:
        """Number of channels being tracked (for memory checks)."""
        return len(self._legs)

    # ------------------------------------------------------------------ legs and calls

    def _ringable(self, device: str) -> bool:
        """A device that counts as rung: a real endpoint, or a Local channel known as an agent's."""
        if not device.startswith(_NON_ENDPOINT_PREFIXES):
            return True
        return device in self._agent_devices()

    def _leg(
        self, event: Event, keys: tuple[str, ...], at: datetime, out: list[CallEffect]
    ) -> _Leg | None:
        """The leg an event is about; follows a Linkedid change; adopts a leg we never saw."""
        uid = event.get(keys[0])
        if not uid:
            return None
        leg = self._legs.get(uid)
        linkedid = event.get(keys[1])
        if leg is not None:
            if (
                linkedid
                and linkedid != leg.call.linkedid
                and not self._move(leg, linkedid, at, out)
            ):
                return None
            return leg
        channel = event.get(keys[2])
        if not linkedid or not channel or linkedid in self._ended or uid in self._gone:
            return None
        leg = self._new_leg(uid, channel, linkedid, at)
        self._update_ids(leg, event, keys)
        return leg

    def _new_leg(self, uid: str, channel: str, linkedid: str, at: datetime) -> _Leg:
        call = self._calls.get(linkedid)
        if call is None:
            call = _Call(linkedid, at)
            self._calls[linkedid] = call
        leg = _Leg(uid, channel, call)
        self._legs[uid] = leg
        call.legs[uid] = leg
        if uid == linkedid:
            call.caller_leg = leg
        if channel.startswith("Local/"):
            # The two halves share a name (…;1 / …;2); pair them even without a LocalBridge.
            if channel.endswith(";1"):
                self._local_ones[channel[:-2]] = leg
            elif channel.endswith(";2"):
                one = self._local_ones.get(channel[:-2])
                if one is not None:
                    one.partner = leg
                    leg.partner = one
        return leg

    @staticmethod
    def _update_ids(leg: _Leg, event: Event, keys: tuple[str, ...]) -> None:
        num = event.get(keys[3])
        if num is not None:
            leg.cid_num = num
        name = event.get(keys[4])
        if name is not None:
            leg.cid_name = name
        connected = event.get(keys[5])
        if connected is not None:
            leg.connected_num = connected
        if leg.exten is None:
            exten = event.get(keys[6])
            if exten:
                leg.exten = exten

    def _move(self, leg: _Leg, linkedid: str, at: datetime, out: list[CallEffect]) -> bool:
        """A channel joined another Linkedid (bridging after a transfer): move the leg there.

        Returns False when that Linkedid already ended: the leg is then forgotten, since a call
        is reported once.
        """
        old = leg.call
        old.legs.pop(leg.uid, None)
        if linkedid in self._ended:
            self._legs.pop(leg.uid, None)
            if not old.legs:
                self._finish(old, at, out)
            return False
        new = self._calls.get(linkedid)
        if new is None:
            new = _Call(linkedid, at)
            self._calls[linkedid] = new
        new.legs[leg.uid] = leg
        leg.call = new
        if leg.uid == linkedid:
            new.caller_leg = leg
        if not old.legs:
            self._finish(old, at, out)
        return True

    def _drop_leg(self, leg: _Leg, cause: str | None, at: datetime, out: list[CallEffect]) -> None:
        """A channel is gone (Hangup, or missing from a resync)."""
        self._legs.pop(leg.uid, None)
        gone = self._gone
        gone[leg.uid] = None
        if len(gone) > _GONE_MEMORY:
            del gone[next(iter(gone))]
        call = leg.call
        call.legs.pop(leg.uid, None)
        # The partner link stays: a Local ;1 may still need its ;2's caller ID for the record.
        if leg.channel.endswith(";1") and self._local_ones.get(leg.channel[:-2]) is leg:
            del self._local_ones[leg.channel[:-2]]
        if (
            cause
            and leg.dialled
            and not leg.dial_done
            and not leg.answered
            and leg is not call.originated_leg
        ):
            call.statuses.add(_CAUSE_STATUS.get(cause.split(" ", 1)[0], "NOANSWER"))
        if cause and leg is call.caller_leg:
            call.hangup_cause = cause
        if not call.legs:
            self._finish(call, at, out)

    def _finish(self, call: _Call, at: datetime, out: list[CallEffect]) -> None:
        if self._calls.get(call.linkedid) is call:
            del self._calls[call.linkedid]
        self._ended[call.linkedid] = None
        if len(self._ended) > _ENDED_MEMORY:
            del self._ended[next(iter(self._ended))]
        out.append(CallEnded(self._record(call, at)))

    # ------------------------------------------------------------------ derived facts

    def _caller(self, call: _Call) -> tuple[str | None, str | None, bool]:
        """(number, name, withheld) of the caller; a withheld caller never gets a number."""
        leg = call.caller_leg
        if leg is not None:
            for candidate in (leg, leg.partner):
                if candidate is None:
                    continue
                if candidate.prohibited:
                    return None, None, True
                num = candidate.cid_num
                if num is not None and num.lower() not in _NO_NUMBER:
                    name = candidate.cid_name
                    if name is not None and name.lower() in _NO_NAME:
                        name = None
                    return num, name, False
            return None, None, True
        # The caller's own channel is unknown (adopted mid-call): what the called phones were
        # shown as the calling party is the caller (the agent leg's CallerIDNum is the DID).
        for other in call.legs.values():
            if other.dialled and not other.prohibited:
                num = other.connected_num
                if num is not None and num.lower() not in _NO_NUMBER:
                    return num, None, False
        return None, None, True

    def _caller_device(self, call: _Call) -> str | None:
        if call.caller_device is not None:
            return call.caller_device
        leg = call.caller_leg
        if leg is not None and self._ringable(leg.device):
            return leg.device
        return None

    def _is_internal(self, number: str | None) -> bool:
        return number is not None and self._pattern.search(number) is not None

    def _direction(self, call: _Call) -> Direction:
        caller, _name, _withheld = self._caller(call)
        caller_device = self._caller_device(call)
        agents = self._agent_devices()
        internal_caller = (caller_device is not None and caller_device in agents) or (
            self._is_internal(caller)
        )
        if not internal_caller:
            return "inbound"
        callee = call.callee
        if callee is not None and _is_number(callee) and not self._is_internal(callee):
            # An external-looking number that reached one of our agents (a DID) is internal.
            if any(d in agents for d in call.rang if d != caller_device):
                return "internal"
            return "outbound"
        return "internal"

    def _disposition(self, call: _Call, direction: Direction) -> Disposition:
        if call.answered_at is not None:
            return "transferred" if call.transfers else "answered"
        if call.queue_joined or call.abandoned:
            return "abandoned"
        if call.originate_failed:
            return "failed"
        statuses = call.statuses
        if statuses:
            if statuses & _MISSED_STATUSES:
                return "missed"
            if "BUSY" in statuses:
                return "busy"
            if statuses & _FAILED_STATUSES:
                return "failed"
            return "missed"
        cause = call.hangup_cause
        if cause is not None and cause.split(" ", 1)[0] in ("17", "21"):
            return "busy"
        if direction == "inbound" or any(d != call.originator_device for d in call.rang):
            return "missed"
        return "failed"

    def _record(self, call: _Call, ended_at: datetime) -> CallRecord:
        caller, caller_name, withheld = self._caller(call)
        caller_device = self._caller_device(call)
        direction = self._direction(call)
        answered_by: list[str] = []
        for leg in call.answered:
            if not answered_by or answered_by[-1] != leg.device:
                answered_by.append(leg.device)
        started = call.started_at
        answered_at = call.answered_at
        if answered_at is not None:
            wait = (answered_at - started).total_seconds()
            talk = (ended_at - answered_at).total_seconds()
        else:
            wait = (ended_at - started).total_seconds()
            talk = 0.0
        return CallRecord(
            linkedid=call.linkedid,
            direction=direction,
            caller=caller,
            caller_name=caller_name,
            callee=call.callee,
            rang=tuple(d for d in call.rang if d != call.originator_device),
            answered_by=tuple(answered_by),
            queue=call.queue,
            started_at=started,
            answered_at=answered_at,
            ended_at=ended_at,
            wait_seconds=max(wait, 0.0),
            talk_seconds=max(talk, 0.0),
            disposition=self._disposition(call, direction),
            hangup_cause=call.hangup_cause,
            recording=call.recording,
            transfers=tuple(t.frozen() for t in call.transfers),
            caller_withheld=withheld,
            caller_device=caller_device,
            originate_id=call.originate_id,
        )

    # ------------------------------------------------------------------ effects

    def _ring(
        self,
        call: _Call,
        device: str,
        at: datetime,
        out: list[CallEffect],
        queue: str | None = None,
        direction: Direction | None = None,
    ) -> None:
        if device in call.rang_phase:
            return
        call.rang_phase.add(device)
        if device not in call.rang:
            call.rang.append(device)
        if queue:
            call.queue = queue
        if call.transfers:
            pending = call.transfers[-1]
            if pending.open and device not in pending.to_devices:
                pending.to_devices.append(device)
        caller, caller_name, _withheld = self._caller(call)
        out.append(
            CallRinging(
                linkedid=call.linkedid,
                device=device,
                extension=extension_of(device),
                caller=caller,
                caller_name=caller_name,
                callee=call.callee,
                direction=direction or self._direction(call),
                queue=call.queue,
                at=at,
            )
        )

    def _answer(
        self,
        call: _Call,
        leg: _Leg,
        at: datetime,
        out: list[CallEffect],
        direction: Direction | None = None,
    ) -> None:
        if leg.answered:
            return
        leg.answered = True
        if leg is call.originated_leg and call.originator_direct:
            # The agent picked up their own click-to-call: not an answer of the call itself.
            pass
        elif leg.ringable or self._ringable(leg.device):
            call.answered.append(leg)
            if call.answered_at is None:
                call.answered_at = at
            for pending in call.transfers:
                if pending.open:
                    pending.to_device = leg.device
                    pending.open = False
        else:
            # A routing channel answered: counts only when it carries the call to an outside
            # number (a trunk modelled as a Local channel); a Local answering an internal
            # destination is voicemail or an announcement, not a person.
            number = leg.dial_number
            if number is not None and not self._is_internal(number) and call.answered_at is None:
                call.answered_at = at
            return
        caller, _name, _withheld = self._caller(call)
        out.append(
            CallAnswered(
                linkedid=call.linkedid,
                device=leg.device,
                extension=extension_of(leg.device),
                caller=caller,
                direction=direction or self._direction(call),
                queue=call.queue,
                at=at,
            )
        )

    def _start_b_side(self, call: _Call, event: Event) -> None:
        """The originated channel dials out: what answered so far was the originator's own phone."""
        call.b_side = True
        if call.caller_device is None and call.answered:
            first = call.answered[0]
            call.caller_device = first.device
            call.originator_device = first.device
            call.caller_leg = first
        call.answered.clear()
        call.answered_at = None
        call.statuses.clear()
        call.rang_phase = set()
        number = _dialled_number(event)
        if number is not None:
            call.callee = number

    # ------------------------------------------------------------------ event handlers

    def _on_newchannel(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        uid = event.get("Uniqueid")
        if not uid or uid in self._legs:
            return
        leg = self._leg(event, _KEYS, at, out)
        if leg is None:
            return
        call = leg.call
        if leg is call.caller_leg and call.callee is None:
            exten = event.get("Exten")
            if exten and _is_number(exten):
                call.callee = exten

    def _on_newcallerid(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._leg(event, _KEYS, at, out)
        if leg is None:
            return
        self._update_ids(leg, event, _KEYS)
        pres = event.get("CID-CallingPres")
        if pres is not None:
            leg.prohibited = "Prohibited" in pres or "Unavailable" in pres

    def _on_newconnectedline(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._leg(event, _KEYS, at, out)
        if leg is not None:
            connected = event.get("ConnectedLineNum")
            if connected is not None:
                leg.connected_num = connected

    def _on_leg_touch(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        # Nothing to learn from the state itself, but the event may reveal a Linkedid change
        # (a transfer moved the channel) or a channel we have not seen yet.
        self._leg(event, _KEYS, at, out)

    def _on_localbridge(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        one = self._legs.get(event.get("LocalOneUniqueid") or "")
        two = self._legs.get(event.get("LocalTwoUniqueid") or "")
        if one is None:
            name = event.get("LocalOneChannel") or ""
            one = self._local_ones.get(name[:-2]) if name.endswith(";1") else None
        if two is None and one is not None and one.partner is not None:
            two = one.partner
        if one is not None and two is not None and one is not two:
            one.partner = two
            two.partner = one

    def _on_dialbegin(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        dest = self._leg(event, _DEST_KEYS, at, out)
        if dest is None:
            return
        call = dest.call
        if not event.get("Uniqueid"):
            self._on_originate(call, dest, at, out)
            return
        src = self._leg(event, _KEYS, at, out)
        if src is not None and src is call.originated_leg and not call.b_side:
            self._start_b_side(call, event)
        if dest.dialled:
            return
        dest.dialled = True
        dest.dial_number = _dial_target(event)
        connected = event.get("DestConnectedLineNum")
        if connected is not None:
            dest.connected_num = connected
        if call.callee is None and (call.originated_leg is None or call.b_side):
            call.callee = _dialled_number(event)
        dest.ringable = self._ringable(dest.device)
        if dest.ringable:
            self._ring(call, dest.device, at, out)

    def _on_originate(self, call: _Call, dest: _Leg, at: datetime, out: list[CallEffect]) -> None:
        """A DialBegin without a dialling channel: an Originate rings its first party."""
        if call.originated_leg is not None:
            return
        call.originated_leg = dest
        dest.dialled = True
        dest.ringable = self._ringable(dest.device)
        if dest.ringable:
            # Click-to-call straight to the agent's phone: that phone is the caller's device and
            # the number it then dials is the callee. The agent still gets a ring effect: their
            # phone really rings, and the pop says it is their own outgoing call.
            call.originator_direct = True
            call.caller_device = dest.device
            call.originator_device = dest.device
            call.caller_leg = dest
            call.callee = None
            self._ring(call, dest.device, at, out, direction="outbound")

    def _on_dialend(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        dest = self._leg(event, _DEST_KEYS, at, out)
        if dest is None:
            return
        call = dest.call
        status = event.get("DialStatus") or ""
        if not event.get("Uniqueid"):
            if dest is call.originated_leg and call.originator_direct:
                if status == "ANSWER":
                    self._answer(call, dest, at, out, direction="outbound")
                elif status and not call.b_side:
                    call.originate_failed = True
            return
        self._leg(event, _KEYS, at, out)
        if dest.dial_done and not (status == "ANSWER" and not dest.answered):
            return
        dest.dial_done = True
        if status:
            call.statuses.add(status)
        if status == "ANSWER":
            self._answer(call, dest, at, out)

    def _on_bridgeenter(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._leg(event, _KEYS, at, out)
        if leg is None:
            return
        # A dialled phone in a bridge has answered, even if its DialEnd went missing.
        if leg.dialled and not leg.answered and leg.ringable and leg is not leg.call.originated_leg:
            self._answer(leg.call, leg, at, out)

    def _on_hangup(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        uid = event.get("Uniqueid")
        if not uid or uid not in self._legs:
            return
        leg = self._leg(event, _KEYS, at, out)
        if leg is None or leg.uid not in self._legs:
            return
        cause = event.get("Cause")
        text = event.get("Cause-txt")
        full = f"{cause} {text}" if cause and text else cause
        self._drop_leg(leg, full or None, at, out)

    def _on_agentcalled(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        queue = event.get("Queue") or None
        dest = self._leg(event, _DEST_KEYS, at, out)
        if dest is None:
            # No channel detail (older Asterisk): ring the member's interface on the caller's call.
            src = self._leg(event, _KEYS, at, out)
            if src is None:
                return
            src.call.queue_joined = True
            if queue:
                src.call.queue = queue
            interface = event.get("Interface") or event.get("AgentCalled") or ""
            if interface.endswith("/n"):
                interface = interface[:-2]
            if interface and self._ringable(device_of(interface)):
                self._ring(src.call, device_of(interface), at, out, queue=queue)
            return
        call = dest.call
        call.queue_joined = True
        if queue:
            call.queue = queue
        if dest.ringable or self._ringable(dest.device):
            dest.ringable = True
            self._ring(call, dest.device, at, out, queue=queue)

    def _on_agentconnect(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        dest = self._leg(event, _DEST_KEYS, at, out)
        if dest is None:
            return
        call = dest.call
        queue = event.get("Queue")
        if queue:
            call.queue = queue
        dest.dialled = True
        if dest.ringable or self._ringable(dest.device):
            dest.ringable = True
            self._answer(call, dest, at, out)

    def _on_queuejoin(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._leg(event, _KEYS, at, out)
        if leg is None:
            return
        leg.call.queue_joined = True
        queue = event.get("Queue")
        if queue:
            leg.call.queue = queue

    def _on_queueabandon(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._leg(event, _KEYS, at, out)
        if leg is None:
            return
        leg.call.abandoned = True
        leg.call.queue_joined = True
        queue = event.get("Queue")
        if queue:
            leg.call.queue = queue

    def _on_blindtransfer(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        if event.get("Result", "Success") != "Success":
            return
        call = None
        transferee = self._legs.get(event.get("TransfereeUniqueid") or "")
        if transferee is not None:
            call = transferee.call
        else:
            call = self._calls.get(event.get("TransfereeLinkedid") or "")
        if call is None:
            return
        key = (
            "blind",
            event.get("TransfererUniqueid") or "",
            event.get("TransfereeUniqueid") or "",
            event.get("Extension") or "",
        )
        if key in call.transfer_keys:
            return
        call.transfer_keys.add(key)
        transferer = event.get("TransfererChannel")
        pending = _PendingTransfer(
            "blind", device_of(transferer) if transferer else None, event.get("Extension") or None
        )
        for earlier in call.transfers:
            earlier.open = False
        call.transfers.append(pending)
        # The new destination may be a device that rang before in this call: pop it again.
        call.rang_phase = set()

    def _on_attendedtransfer(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        if event.get("Result", "Success") != "Success":
            return
        orig = self._calls.get(event.get("OrigTransfererLinkedid") or "")
        if orig is None:
            leg = self._legs.get(event.get("OrigTransfererUniqueid") or "")
            orig = leg.call if leg is not None else None
        if orig is None:
            return
        key = (
            "attended",
            event.get("OrigTransfererUniqueid") or "",
            event.get("SecondTransfererUniqueid") or "",
        )
        if key in orig.transfer_keys:
            return
        orig.transfer_keys.add(key)
        blonde = event.get("DestType") == "App" and event.get("DestApp") == "Dial"
        from_channel = event.get("OrigTransfererChannel")
        from_device = device_of(from_channel) if from_channel else None
        second_channel = event.get("SecondTransfererChannel")
        second_device = device_of(second_channel) if second_channel else None
        second = self._calls.get(event.get("SecondTransfererLinkedid") or "")
        to_number = event.get("SecondTransfererExten") or None
        pending = _PendingTransfer("blonde" if blonde else "attended", from_device, to_number)
        if second is not None:
            if pending.to_number is None:
                pending.to_number = second.callee
            skip = {from_device, second_device}
            if blonde:
                # The target is still ringing: the dialled phones not answered (yet).
                pending.to_devices = [
                    leg.device
                    for leg in second.legs.values()
                    if leg.dialled and leg.ringable and not leg.answered and leg.device not in skip
                ]
            else:
                pending.to_devices = [
                    leg.device for leg in second.answered if leg.device not in skip
                ]
                if pending.to_devices:
                    pending.to_device = pending.to_devices[-1]
        # Asterisk 16+ names the target itself; that beats our reconstruction.
        target_channel = event.get("TransferTargetChannel")
        if target_channel:
            target = device_of(target_channel)
            if target not in pending.to_devices:
                pending.to_devices.append(target)
            if not blonde:
                pending.to_device = target
        for earlier in orig.transfers:
            earlier.open = False
        # A blonde target is still ringing: whoever answers the transferred call next is it.
        pending.open = blonde
        orig.transfers.append(pending)

    def _on_varset(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        # VarSet is the most frequent event; only the recording file name matters.
        if event.get("Variable") != "MIXMONITOR_FILENAME":
            return
        value = event.get("Value")
        leg = self._leg(event, _KEYS, at, out)
        if leg is not None and value:
            leg.call.recording = value
            leg.call.recording_from_var = True

    def _on_newexten(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        if event.get("Application") != "MixMonitor":
            return
        leg = self._leg(event, _KEYS, at, out)
        if leg is None or leg.call.recording_from_var:
            return
        data = event.get("AppData") or ""
        filename = data.split(",", 1)[0].strip()
        if filename:
            leg.call.recording = filename

    def _on_cdr(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        """CDRs only fill gaps (a caller number, an answer whose DialEnd we missed)."""
        uid = event.get("UniqueID") or event.get("Uniqueid")
        leg = self._legs.get(uid or "")
        if leg is None:
            return
        call = leg.call
        if leg is call.caller_leg and leg.cid_num in (None, "", "<unknown>") and not leg.prohibited:
            source = event.get("Source")
            if source and source.lower() not in _NO_NUMBER:
                leg.cid_num = source
        if event.get("Disposition") == "ANSWERED":
            dest_channel = event.get("DestinationChannel") or ""
            for other in call.legs.values():
                if other.channel == dest_channel:
                    if other.dialled and not other.answered and not other.dial_done:
                        other.ringable = other.ringable or self._ringable(other.device)
                        self._answer(call, other, at, out)
                    break

    def _on_originateresponse(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        leg = self._legs.get(event.get("Uniqueid") or "")
        action_id = event.get("ActionID")
        if leg is not None and action_id:
            leg.call.originate_id = action_id

    def _on_pickup(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        """Call pickup: the picking phone answers a call that rang another phone."""
        target = self._legs.get(event.get("TargetUniqueid") or "")
        picker_channel = event.get("Channel")
        if target is None or not picker_channel:
            return
        picker = self._legs.get(event.get("Uniqueid") or "")
        if picker is None or picker is target:
            return
        # Asterisk moves the picker into the rung channel, whose DialEnd then says ANSWER: that
        # answer is the picker's, so the rung leg is marked done and the picker answers instead
        # (on the rung call, whichever Linkedid the picker's own channel still has).
        target.answered = True
        picker.ringable = self._ringable(picker.device)
        if picker.ringable:
            self._answer(target.call, picker, at, out)

    def _on_coreshowchannel(self, event: Event, at: datetime, out: list[CallEffect]) -> None:
        self._adopt_channel(event, at, out)

    def _adopt_channel(
        self, channel: Mapping[str, str], at: datetime, out: list[CallEffect]
    ) -> None:
        """Take over a live channel from a CoreShowChannel snapshot."""
        uid = channel.get("Uniqueid")
        if not uid:
            return
        known = self._legs.get(uid)
        linkedid = channel.get("Linkedid")
        if known is not None:
            if linkedid and linkedid != known.call.linkedid:
                self._move(known, linkedid, at, out)
            return
        name = channel.get("Channel")
        if not linkedid or not name or linkedid in self._ended or uid in self._gone:
            return
        new_call = linkedid not in self._calls
        start = at - timedelta(seconds=_duration_seconds(channel.get("Duration")))
        leg = self._new_leg(uid, name, linkedid, start)
        self._update_ids(leg, channel, _KEYS)
        call = leg.call
        if new_call or start < call.started_at:
            call.started_at = start
        if leg is call.caller_leg:
            if call.callee is None and leg.exten and _is_number(leg.exten):
                call.callee = leg.exten
            return
        state = channel.get("ChannelState")
        leg.ringable = self._ringable(leg.device)
        if not leg.ringable or state not in ("5", "6"):
            return
        leg.dialled = True
        if state == "5":
            self._ring(call, leg.device, at, out)
        else:
            if leg.device not in call.rang:
                call.rang.append(leg.device)
            call.rang_phase.add(leg.device)
            self._answer(call, leg, start, out)
