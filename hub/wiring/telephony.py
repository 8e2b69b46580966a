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
    connector = await ami.start(settings, service)
    stack.push_async_callback(ami.stop, connector)
    service.pbx = connector
    hub.parts["pbx"] = connector
    hub.parts["calls"] = service
