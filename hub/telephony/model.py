"""Value types of the call tracker: its configuration, the effects it emits and its live view."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

Disposition = Literal["answered", "missed", "busy", "failed", "abandoned", "transferred"]
Direction = Literal["inbound", "outbound", "internal"]
TransferKind = Literal["blind", "attended", "blonde"]
LiveState = Literal["ringing", "up"]

DEFAULT_INTERNAL_PATTERN = r"^\d{2,5}$"


def _default_internal_pattern() -> re.Pattern[str]:
    return re.compile(DEFAULT_INTERNAL_PATTERN)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """What the tracker needs to know about the PBX: which numbers and devices are ours.

    `agent_devices` is either a fixed set or a zero-argument callable returning the current set;
    the callable is consulted on dial events only (not per AMI event), so it should be cheap
    (e.g. return a set the user service keeps up to date).
    """

    internal_pattern: re.Pattern[str] = field(default_factory=_default_internal_pattern)
    agent_devices: Callable[[], Collection[str]] | frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of a call: who handed it on, to whom, and how."""

    kind: TransferKind
    from_device: str | None
    # The device that took the call over: the one that answered after the transfer, else the
    # first one rung for it (a blind transfer to a ring group rings several: see to_devices).
    to_device: str | None
    to_number: str | None = None
    to_devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallRinging:
    """A device started ringing for a call: the moment to show a screen-pop."""

    linkedid: str
    device: str
    extension: str | None
    caller: str | None
    caller_name: str | None
    callee: str | None
    direction: Direction
    queue: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A device answered a call."""

    linkedid: str
    device: str
    extension: str | None
    caller: str | None
    direction: Direction
    queue: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The finished call, as it goes into the call log (one per Linkedid)."""

    linkedid: str
    direction: Direction
    caller: str | None
    caller_name: str | None
    callee: str | None
    # Devices on the called side, in order; the caller's own device (see caller_device) is never
    # listed, not even when a click-to-call rang it first.
    rang: tuple[str, ...]
    answered_by: tuple[str, ...]
    queue: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    wait_seconds: float
    talk_seconds: float
    disposition: Disposition
    hangup_cause: str | None
    recording: str | None
    transfers: tuple[Transfer, ...]
    caller_withheld: bool
    # The device that placed the call (an agent's phone for outbound and click-to-call, the trunk
    # device for inbound when it is a real endpoint), None when unknown or a routing channel.
    caller_device: str | None = None
    # ActionID of the Originate that created the call (click-to-call), from OriginateResponse.
    originate_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The last channel of a call hung up (or vanished in a resync)."""

    record: CallRecord


CallEffect: TypeAlias = CallRinging | CallAnswered | CallEnded


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in progress, for the supervisor wallboard."""

    linkedid: str
    caller: str | None
    direction: Direction
    state: LiveState
    # Real devices currently on the call (caller's device included), oldest first.
    devices: tuple[str, ...]
    started_at: datetime
    answered_at: datetime | None
    callee: str | None = None
    queue: str | None = None
