"""Interfaces the telephony core consumes; connectors/ami implements them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class PbxEventSink(Protocol):
    """What a PBX connector feeds: raw events, a live-channel snapshot after reconnect, link state."""

    async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
        """One AMI event (header fields as str), stamped with its receipt time (UTC)."""

    async def on_resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> None:
        """The live channels (CoreShowChannel events) seen right after a (re)connect."""

    async def on_link(self, up: bool, reason: str) -> None:
        """The link to the PBX went up or down; reason is for operators' logs."""


@dataclass(frozen=True)
class OriginateRequest:
    """Click-to-call: ring `channel` (the agent's phone) first, then dial `exten` in `context`."""

    channel: str
    exten: str
    context: str
    caller_id: str
    timeout_s: float = 30.0
    variables: Mapping[str, str] = field(default_factory=dict)
    # A unique id of ours; the connector sends it as ActionID so a retried request is recognisable.
    request_id: str = ""


class PbxCommands(Protocol):
    """Commands the hub sends to the PBX."""

    async def originate(self, request: OriginateRequest) -> str:
        """Queue an async Originate; returns the ActionID. Raises hub.errors on refusal."""

    async def hangup(self, channel: str) -> None:
        """Hang up one channel."""
