"""Several commhub processes on PostgreSQL + Redis: one AMI link, pops reach any process.

A real `commhub serve` subprocess and an in-process hub share a PostgreSQL database and Redis;
the PBX simulator accepts both. Exactly one holds the AMI link (Redis lease); a pop reaches the
agent's websocket on either process; click-to-call asked on the other process is forwarded;
when the holder is killed with SIGKILL the other takes the link over and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web

from hub.config import load_config
from tests.conftest import (
    ROOT,
    add_user,
    bearer,
    drop_pg_database,
    free_port,
    pg_database,
    port_open,
    require_peer,
)

REDIS = "redis://127.0.0.1:16379/0"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    require_peer("postgres")
    require_peer("redis")
    url = await pg_database()
    yield url
    await drop_pg_database(url)


def _env(pg_url: str, sim_port: int, web_port: int) -> dict[str, str]:
    return {
        "COMMHUB_DATABASE_URL": pg_url,
        "COMMHUB_REDIS_URL": REDIS,
        "COMMHUB_REDIS_LEASE_SECONDS": "1.5",
        "COMMHUB_WEB_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "COMMHUB_WEB_PORT": str(web_port),
        "COMMHUB_AMI_ENABLED": "true",
        "COMMHUB_AMI_PORT": str(sim_port),
        "COMMHUB_AMI_USERNAME": "hub",
        "COMMHUB_AMI_SECRET": "hubsecret",
        "COMMHUB_AMI_PING_INTERVAL": "1.0",
    }


async def _wait(condition: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def _wait_calls(port: int, token: str, n: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            resp = await http.get(f"http://127.0.0.1:{port}/api/v1/calls", headers=bearer(token))
            if len((await resp.json())["items"]) >= n:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} calls logged")


async def _pop(
    url: str, token: str, ready: asyncio.Event, got: asyncio.Queue[dict[str, Any]]
) -> None:
    async with websockets.connect(f"{url}/ws?token={token}") as ws:
        await ws.recv()  # hello
        ready.set()
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "call.ringing":
                await got.put(msg)


async def test_two_processes_share_one_ami_link_and_every_pop(pg_url: str, tmp_path: Path) -> None:
    import redis.asyncio as redis_async

    from connectors.pbxsim import PbxSimulator
    from hub.runtime import running_hub
    from web.app import create_app

    r = redis_async.from_url(REDIS)
    await r.delete("commhub:lease:ami")
    await r.aclose()
    sim = PbxSimulator(username="hub", secret="hubsecret")
    await sim.start()
    port_a, port_b = free_port(), free_port()
    env_a = _env(pg_url, sim.port, port_a)
    config_a = load_config(environ=env_a)
    async with running_hub(config_a, connectors=False) as setup:
        anna = await add_user(setup, "anna", "agent", extension="201", devices=("PJSIP/201",))
        ben = await add_user(setup, "ben", "agent", extension="202", devices=("PJSIP/202",))
        sam = await add_user(setup, "sam", "supervisor")
    # Process B: a real `commhub serve`, started first so it takes the AMI link.
    env_b = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env_b.update(_env(pg_url, sim.port, port_b))
    log_b = (tmp_path / "b.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve"],
        cwd=ROOT,
        env=env_b,
        stdout=log_b,
        stderr=subprocess.STDOUT,
    )
    try:
        await _wait(lambda: port_open(port_b) and sim.client_count == 1)
        async with running_hub(config_a, only={"telephony"}) as hub_a:
            runner = web.AppRunner(create_app(hub_a), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port_a).start()
            try:
                await asyncio.sleep(2.0)  # A competes for the lease and must not get it
                assert sim.client_count == 1, "two processes hold the AMI link"
                assert hub_a.part("pbx") is None
                # anna's browser is on A, ben's on B; the link is held by B.
                got_a: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                got_b: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                ready_a, ready_b = asyncio.Event(), asyncio.Event()
                url_a, url_b = f"ws://127.0.0.1:{port_a}", f"ws://127.0.0.1:{port_b}"
                socks = [
                    asyncio.create_task(_pop(url_a, anna, ready_a, got_a)),
                    asyncio.create_task(_pop(url_b, ben, ready_b, got_b)),
                ]
                await asyncio.wait_for(asyncio.gather(ready_a.wait(), ready_b.wait()), 10)
                await sim.place_call("answered", extension="201")
                await sim.place_call("answered", extension="202")
                assert (await asyncio.wait_for(got_a.get(), 10))["extension"] == "201"
                assert (await asyncio.wait_for(got_b.get(), 10))["extension"] == "202"
                # Click-to-call asked on A (no link) is placed by B, once.
                async with aiohttp.ClientSession() as http:
                    resp = await http.post(
                        f"http://127.0.0.1:{port_a}/api/v1/calls/originate",
                        json={"number": "+4930987654"},
                        headers=bearer(anna),
                    )
                    assert resp.status == 202, await resp.text()
                await _wait(lambda: sum(a.get("Action") == "Originate" for a in sim.actions) == 1)
                await sim.wait_idle()
                # B writes the calls it saw end; a kill before that commit would lose them (the
                # one window of loss, milliseconds wide: see the telephony note).
                await _wait_calls(port_a, sam, 3)
                # Kill the holder: A takes the link over and pops keep coming.
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                await _wait(lambda: hub_a.part("pbx") is not None and hub_a.part("pbx").connected)
                await sim.place_call("missed", extension="201")
                assert (await asyncio.wait_for(got_a.get(), 10))["extension"] == "201"
                await sim.wait_idle()
                await asyncio.sleep(0.3)
                await hub_a.part("calls").drain()
                for task in socks:
                    task.cancel()
                async with aiohttp.ClientSession() as http:
                    resp = await http.get(
                        f"http://127.0.0.1:{port_a}/api/v1/calls", headers=bearer(sam)
                    )
                    calls = (await resp.json())["items"]
                dispositions = sorted((c["direction"], c["disposition"]) for c in calls)
                assert dispositions == [
                    ("inbound", "answered"),
                    ("inbound", "answered"),
                    ("inbound", "missed"),
                    ("outbound", "answered"),
                ], dispositions
                assert len({c["linkedid"] for c in calls}) == 4
            finally:
                await runner.cleanup()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log_b.close()
        await sim.stop()
