"""Wiring: the campaign engine (scheduler, materialiser, senders) runs in every hub process.

Several processes on one PostgreSQL share the work safely (claims with SKIP LOCKED, unique runs).
Messengers for "email" and "sms" are registered from hub.parts by the engine itself, whenever the
email and SMS wiring (which may run after this one) has put them there."""

from __future__ import annotations

from contextlib import AsyncExitStack

from hub.campaigns.defaults import install_defaults
from hub.campaigns.engine import CampaignEngine
from hub.runtime import wiring
from hub.services import Hub


@wiring("campaigns")
async def setup(hub: Hub, stack: AsyncExitStack) -> None:
    """Install the shipped templates, start the engine, register it as hub.parts["campaigns"]."""
    async with hub.sessions() as session, session.begin():
        await install_defaults(session)
    engine = CampaignEngine(hub)
    await engine.start()
    stack.push_async_callback(engine.stop)
    hub.parts["campaigns"] = engine
