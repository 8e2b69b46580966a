"""SMS/s through commhub's Kannel gateway vs bare aiohttp sendsms GETs, same concurrency, same run.

Run: .venv/bin/python bench/bench_sms.py [--messages N] [--concurrency C] [--rounds R]
Needs the real Kannel of scripts/peers.sh (sendsms :13013, fake SMSC listener :10000).

This process is also Kannel's SMSC (a reader drains the fakesmsc socket and counts lines) and
the dlr-url target on :18080 (a bare 200; both sides ask for the same delivery reports). For each
round it times N messages
  (a) bare: aiohttp GETs of the same sendsms URL commhub would build, C at a time;
  (b) commhub: KannelGateway.send(OutgoingSms), C at a time (the connector alone);
from the first request until the N-th line reached the SMSC, and prints the best of R rounds for
each, and b/a. Then, once, (c) the full service path hub.sms.service.send_sms (normalise, log to
SQLite, queued → sent) with the real app taking the DLR callbacks, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.sms import kannel  # noqa: E402
from hub.config import load_config  # noqa: E402
from hub.messaging.ports import OutgoingSms  # noqa: E402
from hub.sms.registry import GatewayContext  # noqa: E402
from tests.connectors.sms.fakesmsc import fake_smsc, smsc_slot  # noqa: E402

CALLBACK_PORT = 18080
TEXT = "Your appointment on Tuesday at 10:00 is confirmed. Reply STOP to opt out."


async def run_pool(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """n calls of one(i), `concurrency` workers."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(
    smsc_lines: asyncio.Queue[object],
    n: int,
    concurrency: int,
    one: Callable[[int], Awaitable[None]],
) -> tuple[float, float]:
    """(seconds until every call returned, seconds until the SMSC had n lines)."""
    start = time.perf_counter()
    await run_pool(n, concurrency, one)
    accepted = time.perf_counter() - start
    for _ in range(n):
        await asyncio.wait_for(smsc_lines.get(), 60)
    return accepted, time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--service-messages", type=int, default=500)
    args = parser.parse_args()
    n, c = args.messages, args.concurrency

    tmp = Path(tempfile.mkdtemp(prefix="bench-sms-"))
    config = load_config(
        environ={
            "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
            "COMMHUB_WEB_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "COMMHUB_WEB_BASE_URL": f"http://127.0.0.1:{CALLBACK_PORT}",
            "COMMHUB_SMS_WEBHOOK_SECRET": "test-webhook-secret",
            "COMMHUB_SMS_GATEWAY": "kannel",
        }
    )
    gateway = kannel.create(
        GatewayContext(
            config=config,
            settings={"username": "commhub", "password": "kannelpw", "connections": c},
        )
    )

    dlrs = 0

    async def dlr(_request: web.Request) -> web.Response:
        nonlocal dlrs
        dlrs += 1
        return web.Response(text="")

    async with smsc_slot():
        sink = web.Application()
        sink.router.add_route("*", "/{tail:.*}", dlr)
        runner = web.AppRunner(sink, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", CALLBACK_PORT).start()
        async with (
            fake_smsc() as smsc,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as bare_http,
        ):
            await smsc.drain()
            await gateway.start()

            async def bare(i: int) -> None:
                sms = OutgoingSms(
                    to=f"+49151{i:08d}", text=TEXT, reference=f"bare{i}", sender="commhub"
                )
                async with bare_http.get(gateway.request_url(sms)) as resp:
                    await resp.read()
                    assert resp.status == 202, resp.status

            async def ours(i: int) -> None:
                await gateway.send(OutgoingSms(to=f"+49152{i:08d}", text=TEXT, reference=f"hub{i}"))

            # Warm both paths (connections, Kannel's store) before timing.
            await timed(smsc.lines, 100, c, bare)  # type: ignore[arg-type]
            await timed(smsc.lines, 100, c, ours)  # type: ignore[arg-type]
            results: dict[str, list[tuple[float, float]]] = {"bare": [], "commhub": []}
            for _ in range(args.rounds):
                results["bare"].append(await timed(smsc.lines, n, c, bare))  # type: ignore[arg-type]
                results["commhub"].append(await timed(smsc.lines, n, c, ours))  # type: ignore[arg-type]
            await gateway.close()

            # (c) the full service path, DLRs into the real app.
            await runner.cleanup()
            from hub.runtime import running_hub
            from hub.sms.service import send_sms
            from web.app import create_app

            service_rate = 0.0
            async with running_hub(config, connectors=False) as hub:
                hub.parts["sms"] = kannel.create(
                    GatewayContext(
                        config=config,
                        settings={"username": "commhub", "password": "kannelpw", "connections": c},
                    )
                )
                app_runner = web.AppRunner(create_app(hub), access_log=None)
                await app_runner.setup()
                await web.TCPSite(app_runner, "127.0.0.1", CALLBACK_PORT).start()

                async def full(i: int) -> None:
                    await send_sms(hub, to=f"+49153{i:08d}", text=TEXT)

                m = args.service_messages
                _, service_s = await timed(smsc.lines, m, c, full)  # type: ignore[arg-type]
                service_rate = m / service_s
                await asyncio.sleep(1.0)  # let the last delivery reports land before closing
                await app_runner.cleanup()
                await hub.parts["sms"].close()

    def best(kind: str) -> tuple[float, float]:
        accepted = max(n / a for a, _ in results[kind])
        delivered = max(n / d for _, d in results[kind])
        return accepted, delivered

    bare_acc, bare_del = best("bare")
    hub_acc, hub_del = best("commhub")
    print(f"SMS through Kannel, {n} messages x {args.rounds} rounds, concurrency {c} (best round)")
    print(
        f"  bare aiohttp sendsms : {bare_acc:8.0f} SMS/s accepted   {bare_del:8.0f} SMS/s at the SMSC"
    )
    print(
        f"  commhub KannelGateway: {hub_acc:8.0f} SMS/s accepted   {hub_del:8.0f} SMS/s at the SMSC"
    )
    print(
        f"  ratio commhub/bare   : {hub_acc / bare_acc:8.2f} accepted         {hub_del / bare_del:8.2f} at the SMSC  (target >= 0.80)"
    )
    print(
        f"  full send_sms path (normalise + SQLite log queued->sent + DLR webhooks): {service_rate:.0f} SMS/s, {args.service_messages} messages"
    )
    print(f"  delivery reports received during (a)/(b): {dlrs}")


if __name__ == "__main__":
    asyncio.run(main())
