"""The composition root: reads the config and wires the running system (hub + connectors + web).

The only module of hub/ (with the CLI) that knows connectors/ and web/ exist."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from aiohttp import web

from hub.bus import make_bus
from hub.config import Config
from hub.db import create_engine, session_factory
from hub.eventloop import describe, freeze_startup_heap
from hub.migrate import upgrade
from hub.services import Hub

log = logging.getLogger(__name__)

# Extra wiring steps registered by channel modules: each gets (hub, exit stack) and may add parts
# and background tasks. Order is registration order.
Wiring = Callable[[Hub, AsyncExitStack], Awaitable[None]]
WIRINGS: list[tuple[str, Wiring]] = []
# Channels first, then what uses them (campaigns send through email and SMS); shutdown runs in
# reverse, so the campaign engine stops before the senders close.
ORDER = ("email", "sms", "telephony", "reminders", "campaigns")


def wiring(name: str) -> Callable[[Wiring], Wiring]:
    """Register a wiring step (used by this module's own channel set-up functions)."""

    def register(func: Wiring) -> Wiring:
        WIRINGS.append((name, func))
        return func

    return register


def _ensure_secret(config: Config) -> Config:
    if config.web.secret_key:
        return config
    log.warning(
        "[web] secret_key is not set: using a random one; set COMMHUB_WEB_SECRET_KEY in production"
    )
    return replace(config, web=replace(config.web, secret_key=secrets.token_urlsafe(32)))


@asynccontextmanager
async def running_hub(
    config: Config,
    *,
    migrate: bool = True,
    connectors: bool = True,
    only: Collection[str] | None = None,
) -> AsyncIterator[Hub]:
    """Start everything the config asks for (or only the named channels); stop it all in reverse
    order on exit."""
    config = _ensure_secret(config)
    engine = create_engine(config.database)
    bus = make_bus(config.redis.url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        if migrate:
            await upgrade(engine)
        await bus.start()
        stack.push_async_callback(bus.close)
        hub = Hub(config=config, engine=engine, sessions=session_factory(engine), bus=bus)
        if connectors:
            _load_channel_wiring()
            steps = sorted(
                WIRINGS, key=lambda w: ORDER.index(w[0]) if w[0] in ORDER else len(ORDER)
            )
            for name, step in steps:
                if only is not None and name not in only:
                    continue
                log.debug("wiring %s", name)
                await step(hub, stack)
        yield hub


def _load_channel_wiring() -> None:
    """Import the wiring modules so their @wiring steps register (idempotent)."""
    import importlib
    import pkgutil

    import hub.wiring as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")


async def serve(config: Config, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the web app and every configured connector until SIGINT/SIGTERM."""
    from web.app import create_app

    async with running_hub(config) as hub:
        app = create_app(hub)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.web.host, config.web.port)
        await site.start()
        url = f"http://{config.web.host}:{config.web.port}"
        frozen = freeze_startup_heap()
        log.info(
            "commhub listening on %s (event loop: %s; %d start-up objects kept out of the"
            " garbage collector's full passes)",
            url,
            describe(),
            frozen,
        )
        if ready:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
