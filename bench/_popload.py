"""Load side of bench_screenpop, run in its own process: the PBX simulator places calls at a
rate, websocket clients receive the pops, and it prints one JSON line of latencies (ms) from the
simulator writing DialBegin to the websocket message arriving. time.perf_counter is
CLOCK_MONOTONIC on Linux, the same clock in every process of the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.pbxsim import PbxSimulator


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ami-port", type=int, required=True)
    ap.add_argument("--ws", action="append", required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--customers", type=int, required=True)
    args = ap.parse_args()
    devices = {str(ext): f"PJSIP/{ext}" for ext in range(201, 211)}
    sim = PbxSimulator(port=args.ami_port, username="hub", secret="hubsecret", devices=devices)
    sent: dict[str, float] = {}
    emit = sim._emit

    def stamped(event, privilege, fields):  # the moment the phone starts ringing
        if event == "DialBegin":
            linkedid = dict(fields).get("Linkedid")
            if linkedid and linkedid not in sent:
                sent[linkedid] = time.perf_counter()
        emit(event, privilege, fields)

    sim._emit = stamped
    await sim.start()
    print("READY", flush=True)
    while sim.client_count < 1:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # login + resync
    latencies: list[float] = []
    missing_card = 0
    seen: set[str] = set()

    async def read(url: str) -> None:
        nonlocal missing_card
        async with websockets.connect(url) as ws:
            async for raw in ws:
                now = time.perf_counter()
                msg = json.loads(raw)
                call_id = msg.get("call_id")
                if msg.get("type") == "call.ringing" and call_id in sent and call_id not in seen:
                    seen.add(call_id)
                    latencies.append((now - sent[call_id]) * 1000)
                    if "customer" in msg and msg["customer"] is None:
                        missing_card += 1

    readers = [asyncio.create_task(read(u)) for u in args.ws]
    await asyncio.sleep(0.5)
    rng = random.Random(args.rate)
    loop = asyncio.get_running_loop()
    began = loop.time()
    n = int(args.rate * args.seconds)
    for i in range(n):
        caller = f"+4930{rng.randrange(1, args.customers):08d}"
        await sim.place_call(
            "answered", caller=caller, extension=str(201 + i % 10), ring=0.3, talk=0.3
        )
        await asyncio.sleep(max(0.0, began + (i + 1) / args.rate - loop.time()))
    await sim.wait_idle(timeout=120)
    await asyncio.sleep(1.0)
    for r in readers:
        r.cancel()
    await sim.stop()
    print(
        json.dumps({"latencies": latencies, "calls": n, "missing_card": missing_card}), flush=True
    )


asyncio.run(main())
