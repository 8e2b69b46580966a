"""SMS gateways, one module per protocol: each module with a NAME and a create(ctx) factory is
registered by name, so adding a gateway is adding a module here (nothing in hub/ changes)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from hub.sms.registry import REGISTRY, GatewayRegistry

# Modules of this package that are not gateways.
_NOT_GATEWAYS = frozenset({"const", "errors"})


def register_all(registry: GatewayRegistry = REGISTRY) -> GatewayRegistry:
    """Register every gateway module of this package (idempotent for the same registry)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_GATEWAYS or info.name.startswith("_"):
            continue
        module: Any = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "NAME", None)
        factory = getattr(module, "create", None)
        if name is None or factory is None or registry.factory(name) is factory:
            continue
        registry.register(name, factory)  # a second module claiming a taken name: ValueError
    return registry
