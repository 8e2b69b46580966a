"""Channels and bridges as Asterisk snapshots them into AMI events."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connectors.pbxsim.frames import Fields

if TYPE_CHECKING:
    from connectors.pbxsim.scenarios import CallRuntime

DOWN, RING, RINGING, UP, BUSY = 0, 4, 5, 6, 7

STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}

# Texts as Asterisk's ast_cause2str() gives them.
CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    27: "Destination out of order",
    34: "Circuit/channel congestion",
    127: "Interworking, unspecified",
}

UNKNOWN = "<unknown>"


def cause_text(cause: int) -> str:
    """Asterisk's description of a hangup cause code."""
    return CAUSE_TEXT.get(cause, "Unknown")


@dataclass(eq=False)
class Bridge:
    """A basic two-party bridge."""

    uniqueid: str = field(default_factory=lambda: str(uuid.uuid4()))
    channels: list[Channel] = field(default_factory=list)

    def snapshot(self, prefix: str = "", count: int | None = None) -> Fields:
        """Bridge state fields (ast_manager_build_bridge_state_string)."""
        number = len(self.channels) if count is None else count
        return [
            (f"{prefix}BridgeUniqueid", self.uniqueid),
            (f"{prefix}BridgeType", "basic"),
            (f"{prefix}BridgeTechnology", "simple_bridge"),
            (f"{prefix}BridgeCreator", UNKNOWN),
            (f"{prefix}BridgeName", UNKNOWN),
            (f"{prefix}BridgeNumChannels", str(number)),
            (f"{prefix}BridgeVideoSourceMode", "none"),
        ]


@dataclass(eq=False)
class Channel:
    """One live channel, with the fields a channel snapshot carries."""

    name: str
    uniqueid: str
    linkedid: str
    state: int = DOWN
    cid_num: str = UNKNOWN
    cid_name: str = UNKNOWN
    conn_num: str = UNKNOWN
    conn_name: str = UNKNOWN
    language: str = "en"
    accountcode: str = ""
    context: str = ""
    exten: str = ""
    priority: int = 1
    application: str = ""
    appdata: str = ""
    bridge: Bridge | None = None
    bridge_id: str = ""
    call: CallRuntime | None = None
    alive: bool = True
    created: float = field(default_factory=time.monotonic)

    @property
    def resource(self) -> str:
        """The device this channel belongs to: its name without the `-<n>` suffix."""
        base, _, _ = self.name.rpartition("-")
        return base or self.name

    def snapshot(self, prefix: str = "") -> Fields:
        """Channel state fields (ast_manager_build_channel_state_string_prefix)."""
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", str(self.state)),
            (f"{prefix}ChannelStateDesc", STATE_DESC.get(self.state, "Unknown")),
            (f"{prefix}CallerIDNum", self.cid_num or UNKNOWN),
            (f"{prefix}CallerIDName", self.cid_name or UNKNOWN),
            (f"{prefix}ConnectedLineNum", self.conn_num or UNKNOWN),
            (f"{prefix}ConnectedLineName", self.conn_name or UNKNOWN),
            (f"{prefix}Language", self.language),
            (f"{prefix}AccountCode", self.accountcode),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", str(self.priority)),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]

    def duration(self) -> str:
        """Age as CoreShowChannel reports it, HH:MM:SS."""
        seconds = int(time.monotonic() - self.created)
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def current_bridge_id(self) -> str:
        """Uniqueid of the bridge the channel is in, or empty."""
        return self.bridge.uniqueid if self.bridge else self.bridge_id

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Channel:
        """A channel known only from a replayed Newchannel event."""
        chan = cls(
            name=fields.get("Channel", ""),
            uniqueid=fields.get("Uniqueid", ""),
            linkedid=fields.get("Linkedid", fields.get("Uniqueid", "")),
        )
        chan.update_from(fields)
        return chan

    def update_from(self, fields: dict[str, str]) -> None:
        """Refresh snapshot fields from a replayed channel event."""
        if "ChannelState" in fields and fields["ChannelState"].isdigit():
            self.state = int(fields["ChannelState"])
        self.cid_num = fields.get("CallerIDNum", self.cid_num)
        self.cid_name = fields.get("CallerIDName", self.cid_name)
        self.conn_num = fields.get("ConnectedLineNum", self.conn_num)
        self.conn_name = fields.get("ConnectedLineName", self.conn_name)
        self.context = fields.get("Context", self.context)
        self.exten = fields.get("Exten", self.exten)
        self.linkedid = fields.get("Linkedid", self.linkedid)
        priority = fields.get("Priority", "")
        if priority.isdigit():
            self.priority = int(priority)
