"""SIGKILL the worker process at random instants during a run; every recipient exactly once.

The worker (crash_worker.py) and the SMTP sink (sink_process.py) are separate processes; the sink
records every message it accepts, so a kill can only lose what our process held. After each kill
the worker is restarted; at the end every non-suppressed recipient must have exactly one distinct
Message-ID at the sink and suppressed ones none. A raw duplicate (same Message-ID twice) can only
come from the one window SMTP leaves open, between the server taking the message and our journal
noting its "250": every such duplicate must be matched by an in-doubt resend the engine counted."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.campaigns import service
from hub.config import Config, DatabaseConfig
from hub.consent import suppress
from hub.db import create_engine
from hub.migrate import upgrade
from hub.models.campaigns import CampaignDelivery, CampaignRun
from hub.models.interactions import Interaction
from tests.conftest import drop_pg_database, free_port, pg_database
from tests.hub.campaigns.helpers import bulk_customers, make_hub

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RECIPIENTS = 3000
SUPPRESS_EVERY = 50
# 15 SIGKILLs keep the test near half a minute per database; CRASH_KILLS=30 for a longer run.
KILLS = int(os.environ.get("CRASH_KILLS", "15"))


async def _wait_growth(path: Path, size: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if path.exists() and path.stat().st_size > size:
            return True
        await asyncio.sleep(0.005)
    return False


async def _run_status(hub, run_id: int) -> str:
    async with hub.sessions() as session:
        run = await session.get(CampaignRun, run_id, populate_existing=True)
        assert run is not None
        return run.status


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_during_a_run_sends_each_message_exactly_once(
    backend: str, config: Config, tmp_path: Path
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    if backend == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
        engine = create_engine(DatabaseConfig(url=db_url))
        await upgrade(engine)
        await engine.dispose()
    else:
        db_url = await pg_database()
    journal = tmp_path / "journal"
    record = tmp_path / "sink.log"
    worker_log = (tmp_path / "worker.log").open("ab")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sink = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "sink_process.py"),
        str(port),
        str(record),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    hub_cfg = replace(config, database=DatabaseConfig(url=db_url))
    try:
        assert sink.stdout is not None
        assert (await asyncio.wait_for(sink.stdout.readline(), 20)).strip() == b"ready"
        async with make_hub(hub_cfg) as hub:
            await bulk_customers(hub, RECIPIENTS)
            suppressed = {f"c{n}@example.test" for n in range(0, RECIPIENTS, SUPPRESS_EVERY)}
            async with hub.sessions() as session, session.begin():
                for address in suppressed:
                    await suppress(session, "email", address, "unsubscribed")
                template = await service.create_template(
                    session,
                    {
                        "name": "crash",
                        "channel": "email",
                        "subject": "Offer for {{ customer.name }}",
                        "text": "Hello {{ customer.first_name }}, see {{ unsubscribe_url }}",
                    },
                    None,
                )
                campaign = await service.create_campaign(
                    session,
                    {"name": "crash", "channel": "email", "template_id": template.id},
                    None,
                )
                run_id = (await service.schedule_campaign(session, campaign.id, {"now": True}))[
                    "run_id"
                ]

            async def start_worker() -> asyncio.subprocess.Process:
                return await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE / "crash_worker.py"),
                    db_url,
                    str(journal),
                    str(port),
                    stdout=worker_log,
                    stderr=worker_log,
                    env=env,
                )

            kills = 0
            while kills < KILLS:
                size = record.stat().st_size if record.exists() else 0
                worker = await start_worker()
                sending = await _wait_growth(record, size, 30)
                if sending:
                    await asyncio.sleep(rng.uniform(0.0, 0.12))
                worker.send_signal(signal.SIGKILL)
                await worker.wait()
                if not sending:
                    break  # nothing left to send
                kills += 1
                if await _run_status(hub, run_id) == "finished":
                    break

            ready = tmp_path / "worker.ready"
            env["CRASH_WORKER_READY"] = str(ready)
            worker = await start_worker()
            async with asyncio.timeout(90):
                while await _run_status(hub, run_id) != "finished" or not ready.exists():
                    await asyncio.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 30) == 0

            async with hub.sessions() as session:
                states = dict(
                    (
                        await session.execute(
                            select(CampaignDelivery.state, func.count())
                            .where(CampaignDelivery.run_id == run_id)
                            .group_by(CampaignDelivery.state)
                        )
                    ).all()
                )
                in_doubt = int(
                    await session.scalar(
                        select(func.coalesce(func.sum(CampaignDelivery.in_doubt), 0)).where(
                            CampaignDelivery.run_id == run_id
                        )
                    )
                    or 0
                )
                timeline = await session.scalar(
                    select(func.count())
                    .select_from(Interaction)
                    .where(Interaction.channel == "email")
                )
        expected = {f"c{n}@example.test" for n in range(RECIPIENTS)} - suppressed
        lines = [line.split("\t") for line in record.read_text().splitlines()]
        per_rcpt = Counter(rcpt for rcpt, _ in lines)
        ids: dict[str, set[str]] = defaultdict(set)
        for rcpt, message_id in lines:
            ids[rcpt].add(message_id)
        raw_duplicates = sum(count - 1 for count in per_rcpt.values())
        print(
            f"\ncrash test [{backend}] seed={seed}: {kills} SIGKILLs, {len(lines)} messages "
            f"accepted for {len(per_rcpt)} recipients, raw duplicates={raw_duplicates}, "
            f"in-doubt resends counted={in_doubt}, after Message-ID dedupe: 0 duplicates"
        )
        assert kills >= min(10, KILLS), f"only {kills} kills landed during sending"
        assert set(per_rcpt) == expected, "someone was missed or a suppressed address was mailed"
        assert all(len(v) == 1 for v in ids.values()), "a resend changed its Message-ID"
        assert raw_duplicates <= in_doubt, "a duplicate the engine did not account for"
        assert states == {"sent": len(expected), "suppressed": len(suppressed)}
        assert timeline == len(expected)
    finally:
        worker_log.close()
        if sink.returncode is None:
            sink.send_signal(signal.SIGTERM)
            await sink.wait()
        if backend == "postgres":
            await drop_pg_database(db_url)
