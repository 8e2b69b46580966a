"""The running system as the web layer and workers see it: config, database, bus, ports.

Filled in by the composition root (hub.runtime); domain code receives what it needs from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.bus import Bus
from hub.config import Config


@dataclass
class Hub:
    """Everything long-lived, created once per process."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    # Optional parts registered by the composition root: "pbx" (PbxCommands), "calls"
    # (CallService), "email" (EmailSender), "sms" (SmsGateway), "campaigns", ...
    parts: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> Any:
        """A registered part, or None when that channel is not configured."""
        return self.parts.get(name)

    @property
    def region(self) -> str:
        """Default phone region."""
        return self.config.phone.default_region
