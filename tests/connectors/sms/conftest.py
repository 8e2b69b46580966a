"""Fixtures for the SMS connector tests: a commhub app on :18080 wired to the real Kannel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest
from aiohttp import web

from connectors.sms import kannel
from hub.services import Hub
from hub.sms.registry import GatewayContext
from tests.conftest import require_peer
from tests.connectors.sms.fakesmsc import FakeSmsc, fake_smsc, smsc_slot

CALLBACK_PORT = 18080  # where scripts/kannel.conf.in's get-url points
T = TypeVar("T")


@dataclass
class KannelRig:
    """A running hub whose SMS gateway is our Kannel connector, and the SMSC end of Kannel."""

    hub: Hub
    gateway: kannel.KannelGateway
    smsc: FakeSmsc


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0) -> T:
    """Poll until `probe` returns something truthy (callbacks from Kannel arrive when they do)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.05)


@pytest.fixture
async def kannel_rig(hub: Hub) -> AsyncIterator[KannelRig]:
    """Kannel gateway in hub.parts["sms"], the app on 127.0.0.1:18080, us as the SMSC."""
    require_peer("kannel")
    hub.config = replace(
        hub.config,
        web=replace(hub.config.web, base_url=f"http://127.0.0.1:{CALLBACK_PORT}"),
        sms=replace(hub.config.sms, gateway="kannel", create_leads=True, cost_per_segment=0.05),
    )
    from web.app import create_app

    async with smsc_slot():
        gateway = kannel.create(
            GatewayContext(
                config=hub.config, settings={"username": "commhub", "password": "kannelpw"}
            )
        )
        await gateway.start()
        hub.parts["sms"] = gateway
        runner = web.AppRunner(create_app(hub), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", CALLBACK_PORT).start()
            async with fake_smsc() as smsc:
                await smsc.drain()  # anything an earlier run left queued in Kannel
                yield KannelRig(hub, gateway, smsc)
        finally:
            await runner.cleanup()
            await gateway.close()
