"""Wire SMS: build the configured gateway from the registry, register it as hub.parts["sms"]."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from hub.errors import CommhubError
from hub.runtime import wiring
from hub.services import Hub
from hub.sms.registry import REGISTRY, GatewayContext
from hub.sms.service import SmsEvents, expire_stale, purge_pending_reports

log = logging.getLogger(__name__)
MAINTENANCE_SECONDS = 3600.0


async def _maintenance(hub: Hub) -> None:
    """Hourly: expire messages never reported on, drop reports whose message never came."""
    while True:
        try:
            expired = await expire_stale(hub)
            purged = await purge_pending_reports(hub)
            if expired or purged:
                log.info("sms: %d message(s) expired, %d orphan report(s) dropped", expired, purged)
        except (CommhubError, OSError) as err:
            log.warning("sms maintenance failed: %s", err)
        await asyncio.sleep(MAINTENANCE_SECONDS)


@wiring("sms")
async def setup(hub: Hub, stack: AsyncExitStack) -> None:
    """When [sms] gateway is set: build it (unknown names fail with the list), start, register."""
    cfg = hub.config.sms
    if cfg.gateway in ("", "none"):
        log.info('sms off ([sms] gateway = "none")')
        return
    import connectors.sms

    connectors.sms.register_all(REGISTRY)
    context = GatewayContext(
        config=hub.config, settings=dict(cfg.settings.get(cfg.gateway, {})), sink=SmsEvents(hub)
    )
    gateway = REGISTRY.create(cfg.gateway, context)
    if not cfg.webhook_secret:
        log.warning("[sms] webhook_secret is empty: every SMS webhook will be refused (403)")
    start = getattr(gateway, "start", None)
    if start is not None:
        await start()
    stack.push_async_callback(gateway.close)
    hub.parts["sms"] = gateway
    task = asyncio.create_task(_maintenance(hub), name="sms-maintenance")

    async def stop_maintenance() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop_maintenance)
    log.info("sms gateway %s ready", gateway.name)
