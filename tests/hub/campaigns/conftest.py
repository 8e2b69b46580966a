"""Fixtures: a hub on SQLite and PostgreSQL, a recording SMTP server, a running engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connectors.smtp import SmtpSender
from hub.campaigns.engine import CampaignEngine
from hub.campaigns.messengers import EmailMessenger, MessengerRegistry
from hub.config import Config, SmtpConfig
from hub.services import Hub
from tests.hub.campaigns.helpers import MemorySink, hub_config, make_hub, smtp_server


@pytest.fixture
async def chub(config: Config, db_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    """A hub on the parametrised database (SQLite and PostgreSQL), no connectors."""
    async with make_hub(hub_config(config, db_url, tmp_path)) as hub:
        yield hub


@pytest.fixture
def hub_with(
    config: Config, db_url: str, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[Hub]]:
    """A hub on the parametrised database with [campaigns] settings changed."""

    def build(**campaigns: Any) -> AbstractAsyncContextManager[Hub]:
        return make_hub(hub_config(config, db_url, tmp_path, **campaigns))

    return build


@pytest.fixture
async def sink() -> AsyncIterator[tuple[MemorySink, int]]:
    """A real SMTP server (aiosmtpd) in this loop recording what it accepts; (record, port)."""
    record = MemorySink()
    async with smtp_server(record) as port:
        yield record, port


EngineFactory = Callable[..., AbstractAsyncContextManager[CampaignEngine]]


@pytest.fixture
def running_engine(sink: tuple[MemorySink, int]) -> EngineFactory:
    """Start an engine on a hub, sending email through the real SmtpSender into the sink."""

    @asynccontextmanager
    async def start(hub: Hub, **kwargs: Any) -> AsyncIterator[CampaignEngine]:
        _record, port = sink
        smtp = replace(
            SmtpConfig(),
            host="127.0.0.1",
            port=port,
            from_address="news@shop.test",
            pool_size=4,
            timeout=10.0,
        )
        sender = SmtpSender(smtp, max_attempts=1, local_hostname="test.local")
        registry = MessengerRegistry()
        registry.register(EmailMessenger(sender))
        engine = CampaignEngine(hub, registry, **kwargs)
        await engine.start()
        try:
            yield engine
        finally:
            await engine.stop()
            await sender.close()

    return start
