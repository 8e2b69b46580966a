"""A campaign worker in its own process, for the crash test (it is killed with SIGKILL).

`python crash_worker.py DB_URL JOURNAL_DIR SMTP_PORT` runs the real engine with the real
SmtpSender until SIGTERM (then it stops cleanly). Prints "started" once the engine runs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from connectors.smtp import SmtpSender
from hub.bus import LocalBus
from hub.campaigns.engine import CampaignEngine
from hub.campaigns.messengers import EmailMessenger, MessengerRegistry
from hub.config import load_config
from hub.db import create_engine, session_factory
from hub.services import Hub


async def main(db_url: str, journal_dir: str, smtp_port: int) -> None:
    """Run the engine until SIGTERM."""
    config = load_config(
        environ={
            "COMMHUB_DATABASE_URL": db_url,
            "COMMHUB_WEB_SECRET_KEY": "crash-test-secret-0123456789",
            "COMMHUB_SMTP_HOST": "127.0.0.1",
            "COMMHUB_SMTP_PORT": str(smtp_port),
            "COMMHUB_SMTP_FROM_ADDRESS": "news@shop.test",
            "COMMHUB_SMTP_POOL_SIZE": "4",
            "COMMHUB_CAMPAIGNS_JOURNAL_DIR": journal_dir,
            "COMMHUB_CAMPAIGNS_TICK_SECONDS": "0.2",
            "COMMHUB_CAMPAIGNS_BATCH_SIZE": "200",
        }
    )
    engine = create_engine(config.database)
    bus = LocalBus()
    hub = Hub(config=config, engine=engine, sessions=session_factory(engine), bus=bus)
    sender = SmtpSender(replace(config.smtp), local_hostname="worker.test")
    registry = MessengerRegistry()
    registry.register(EmailMessenger(sender))
    campaigns = CampaignEngine(hub, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await campaigns.start()
    print("started", flush=True)
    ready = os.environ.get("CRASH_WORKER_READY")
    if ready:
        Path(ready).touch()
    await stop.wait()
    await campaigns.stop()
    await sender.close()
    await engine.dispose()
    print(f"stopped {campaigns.stats}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
