"""Wire telephony: the AMI connector feeds the call service; click-to-call goes back through it."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from hub.runtime import wiring
from hub.services import Hub
from hub.telephony.service import CallService

log = logging.getLogger(__name__)


@wiring("telephony")
async def setup(hub: Hub, stack: AsyncExitStack) -> None:
    """When [ami] is enabled: start the call service and the AMI link."""
    if not hub.config.ami.enabled:
        log.info("telephony off ([ami] enabled = false)")
        return
    import connectors.ami as ami

    service = CallService(hub)
    await service.start()
    stack.push_async_callback(service.stop)
    cfg = hub.config.ami
    settings = ami.AmiSettings(
        host=cfg.host,
        port=cfg.port,
        username=cfg.username,
        secret=cfg.secret,
        ping_interval=cfg.ping_interval,
    )
    hub.parts["calls"] = service
    if not hub.config.redis.url:
        connector = await ami.start(settings, service)
        stack.push_async_callback(ami.stop, connector)
        service.pbx = connector
        hub.parts["pbx"] = connector
        return

    # Several processes: exactly one holds the AMI link; the others serve websockets and the API
    # (pops reach them through the Redis bus) and take the link over if the holder dies.
    from hub.lease import RedisLease

    holder: dict[str, ami.AmiConnector] = {}

    async def acquire() -> None:
        connector = await ami.start(settings, service)
        holder["connector"] = connector
        service.pbx = connector
        hub.parts["pbx"] = connector

    async def lose() -> None:
        connector = holder.pop("connector", None)
        service.pbx = None
        hub.parts.pop("pbx", None)
        if connector is not None:
            await ami.stop(connector)

    lease = RedisLease(
        hub.config.redis.url, "ami", acquire, lose, ttl=hub.config.redis.lease_seconds
    )
    await lease.start()
    stack.push_async_callback(lease.stop)
