"""Helpers for campaign tests: a recording SMTP server, bulk customers, a hub on any database."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import insert

from hub.bus import LocalBus
from hub.config import Config, DatabaseConfig
from hub.db import create_engine, session_factory
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.services import Hub

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Received:
    """One message the server accepted."""

    rcpt: str
    message_id: str
    data: bytes


@dataclass
class MemorySink:
    """An SMTP server's record: every accepted message, and scripted refusals by recipient."""

    received: list[Received] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    fail_all_data: str | None = None  # e.g. "451 try later"
    # The next n messages are taken and then the connection is cut before the reply: the
    # server has them, the client cannot know.
    lose_replies: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_all_data:
            return self.fail_all_data
        data = envelope.original_content or b""
        match = _MESSAGE_ID.search(data)
        for rcpt in envelope.rcpt_tos:
            self.received.append(
                Received(str(rcpt), match.group(1).decode() if match else "", data)
            )
        if self.lose_replies > 0:
            self.lose_replies -= 1
            # uvloop's transports are not asyncio.Transport subclasses, only alike.
            cast(asyncio.Transport, server.transport).abort()
        return "250 OK"

    def by_rcpt(self) -> Counter[str]:
        """How many messages each recipient got."""
        return Counter(r.rcpt for r in self.received)


@asynccontextmanager
async def smtp_server(sink: MemorySink) -> AsyncIterator[int]:
    """An aiosmtpd server on a free loopback port in this loop; yields the port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test", loop=loop), "127.0.0.1", 0
    )
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def hub_config(config: Config, db_url: str, tmp_path: Path, **campaigns: Any) -> Config:
    """The test config on `db_url`, with a journal folder of its own and fast ticks."""
    settings = {"journal_dir": str(tmp_path / "journal"), "tick_seconds": 0.2, **campaigns}
    return replace(
        config,
        database=DatabaseConfig(url=db_url),
        campaigns=replace(config.campaigns, **settings),
    )


@asynccontextmanager
async def make_hub(config: Config) -> AsyncIterator[Hub]:
    """A Hub (no connectors) on an already migrated database."""
    engine = create_engine(config.database)
    bus = LocalBus()
    await bus.start()
    try:
        yield Hub(config=config, engine=engine, sessions=session_factory(engine), bus=bus)
    finally:
        await bus.close()
        await engine.dispose()


async def bulk_customers(
    hub: Hub,
    count: int,
    *,
    first: int = 0,
    source: str = "web",
    city: str = "Berlin",
    email: bool = True,
    mobile: bool = False,
    tags: Iterable[str] = (),
    birthday: Any = None,
    domain: str = "example.test",
) -> list[int]:
    """Insert customers fast (Core executemany); emails are c<n>@<domain>; returns their ids."""
    now = datetime.now(UTC)
    ids: list[int] = []
    async with hub.sessions() as session, session.begin():
        for start in range(first, first + count, 1000):
            stop = min(first + count, start + 1000)
            rows = [
                {
                    "name": f"Customer {n}",
                    "company": "",
                    "source": source,
                    "city": city,
                    "region": "",
                    "notes": "",
                    "custom": {"n": n},
                    "birthday": birthday,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(start, stop)
            ]
            result = await session.execute(insert(Customer).returning(Customer.id), rows)
            new_ids = sorted(result.scalars().all())
            ids.extend(new_ids)
            points = []
            for n, cid in zip(range(start, stop), new_ids, strict=True):
                if email:
                    points.append(
                        {
                            "customer_id": cid,
                            "kind": "email",
                            "value": f"c{n}@{domain}",
                            "label": "",
                        }
                    )
                if mobile:
                    points.append(
                        {
                            "customer_id": cid,
                            "kind": "phone",
                            "value": f"+49151{n:08d}",
                            "label": "mobile",
                        }
                    )
            if points:
                await session.execute(insert(ContactPoint), points)
            tag_rows = [{"customer_id": cid, "tag": t} for cid in new_ids for t in tags]
            if tag_rows:
                await session.execute(insert(CustomerTag), tag_rows)
    return ids


async def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll an async predicate until true (fails the test with a timeout otherwise)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(interval)
