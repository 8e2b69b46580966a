"""Name-keyed registry of SMS gateway factories: adding a gateway is a new module, not a core change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.config import Config
from hub.errors import ConfigError
from hub.messaging.ports import SmsGateway
from hub.sms.events import SmsEventSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayContext:
    """What a factory gets: the config, its own [sms.<name>] table, and where to report back."""

    config: Config
    settings: Mapping[str, Any]
    sink: SmsEventSink | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


GatewayFactory = Callable[[GatewayContext], SmsGateway]


class GatewayRegistry:
    """Gateway factories by name; a second registration under a taken name is refused."""

    def __init__(self) -> None:
        self._factories: dict[str, GatewayFactory] = {}

    def register(self, name: str, factory: GatewayFactory) -> None:
        """Add a gateway; ValueError if the name is empty or already taken."""
        if not name or not name.isidentifier():
            raise ValueError(f"gateway name must be an identifier, got {name!r}")
        if name in self._factories:
            raise ValueError(f"SMS gateway {name!r} is already registered")
        self._factories[name] = factory

    def factory(self, name: str) -> GatewayFactory | None:
        """The factory registered under a name, or None."""
        return self._factories.get(name)

    def names(self) -> list[str]:
        """Registered gateway names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def create(self, name: str, context: GatewayContext) -> SmsGateway:
        """Build the named gateway; a name nobody registered is a ConfigError listing the known ones."""
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(self.names()) or "(none)"
            raise ConfigError(
                f"{context.config.source}: [sms] gateway {name!r} is not a known SMS gateway; "
                f"known: {known} (or 'none' to switch SMS off)"
            )
        return factory(context)


# The process-wide registry that connectors/sms registers its built-in gateways into.
REGISTRY = GatewayRegistry()
