"""Screen-pop latency: the simulator writes DialBegin → the agent's websocket gets call.ringing.

The load (PBX simulator + websocket clients) runs in its own process (bench/_popload.py); this
process runs the system under test: commhub (AMI connector → tracker → card lookup among
1,000,000 customers → bus → websocket), or, as the baseline in the same run, a bare forwarder
that reads the same AMI stream and sends each DialBegin straight to a bare aiohttp websocket.
Prints p50/p99 (ms) for both at 20 and 100 new calls per second."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import customers_db, pct  # type: ignore[import-not-found]
from aiohttp import web

HERE = Path(__file__).resolve().parent
AGENTS = {f"ag{ext}": (str(ext), f"PJSIP/{ext}") for ext in range(201, 211)}
RATES = (20, 100)
SECONDS = 10
N_CUSTOMERS = 1_000_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn_load(ami_port: int, ws_urls: list[str], rate: int) -> asyncio.subprocess.Process:
    args = [
        sys.executable,
        str(HERE / "_popload.py"),
        "--ami-port",
        str(ami_port),
        "--rate",
        str(rate),
    ]
    args += ["--seconds", str(SECONDS), "--customers", str(N_CUSTOMERS)]
    for url in ws_urls:
        args += ["--ws", url]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"READY", line
    return proc


async def _result(proc: asyncio.subprocess.Process) -> dict:
    assert proc.stdout is not None
    out = await asyncio.wait_for(proc.stdout.read(), SECONDS * 20 + 60)
    await proc.wait()
    return json.loads(out.decode().strip().splitlines()[-1])


async def commhub_run(db: Path, rate: int) -> tuple[dict, dict[str, int]]:
    sys.path.insert(0, str(HERE.parent))
    from hub.config import load_config
    from hub.runtime import running_hub
    from hub.users import create_token, create_user, hash_password
    from web.app import create_app

    ami_port, port = _free_port(), _free_port()
    config = load_config(
        environ={
            "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "COMMHUB_WEB_SECRET_KEY": "bench",
            "COMMHUB_WEB_PORT": str(port),
            "COMMHUB_AMI_ENABLED": "true",
            "COMMHUB_AMI_PORT": str(ami_port),
            "COMMHUB_AMI_USERNAME": "hub",
            "COMMHUB_AMI_SECRET": "hubsecret",
        }
    )
    tokens = []
    async with (
        running_hub(config, connectors=False) as hub,
        hub.sessions() as session,
        session.begin(),
    ):
        pw = hash_password("benchmark-password")
        for name, (ext, dev) in AGENTS.items():
            await create_user(
                session, name, "", "agent", extension=ext, devices=(dev,), password_hash=pw
            )
            tokens.append(await create_token(session, name))
    proc = await _spawn_load(
        ami_port, [f"ws://127.0.0.1:{port}/ws?token={t}" for t in tokens], rate
    )
    async with running_hub(config, only={"telephony"}) as hub:
        runner = web.AppRunner(create_app(hub), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        result = await _result(proc)
        stats = dict(hub.part("calls").stats)
        await runner.cleanup()
    return result, stats


async def bare_run(rate: int) -> dict:
    """The same path without commhub: read AMI, forward each DialBegin to a websocket."""
    ami_port, port = _free_port(), _free_port()
    clients: set[web.WebSocketResponse] = set()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clients.add(ws)
        async for _ in ws:
            pass
        clients.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proc = await _spawn_load(ami_port, [f"ws://127.0.0.1:{port}/ws"], rate)
    reader, writer = await asyncio.open_connection("127.0.0.1", ami_port)
    await reader.readline()
    writer.write(b"Action: Login\r\nUsername: hub\r\nSecret: hubsecret\r\nEvents: on\r\n\r\n")
    await writer.drain()

    async def forward() -> None:
        frame: list[bytes] = []
        while line := await reader.readline():
            if line != b"\r\n":
                frame.append(line)
                continue
            if frame and frame[0].startswith(b"Event: DialBegin"):
                fields = dict(x.decode().rstrip("\r\n").split(": ", 1) for x in frame if b": " in x)
                text = json.dumps({"type": "call.ringing", "call_id": fields.get("Linkedid")})
                for ws in list(clients):
                    await ws.send_str(text)
            frame = []

    task = asyncio.create_task(forward())
    result = await _result(proc)
    task.cancel()
    writer.close()
    await runner.cleanup()
    return result


def main() -> None:
    base = customers_db(N_CUSTOMERS)
    print(
        f"screen-pop latency: {N_CUSTOMERS:,} customers, 10 agents with open websockets, "
        f"{SECONDS:g} s per rate, load generator in its own process"
    )
    for rate in RATES:
        bare = asyncio.run(bare_run(rate))
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            shutil.copyfile(base, db)
            t0 = time.perf_counter()
            ours, stats = asyncio.run(commhub_run(db, rate))
            elapsed = time.perf_counter() - t0
        lo, lb = ours["latencies"], bare["latencies"]
        if not lo or not lb:
            raise SystemExit(
                f"{rate} calls/s: no pops measured (commhub {len(lo)}, bare {len(lb)})"
            )
        gap = pct(lo, 99) - pct(lb, 99)
        print(
            f"{rate:>4} calls/s: commhub p50 {statistics.median(lo):.2f} ms, p99 {pct(lo, 99):.2f} ms "
            f"({len(lo)}/{ours['calls']} pops, {ours['missing_card']} without card) | bare path p50 "
            f"{statistics.median(lb):.2f} ms, p99 {pct(lb, 99):.2f} ms | p99 gap {gap:+.2f} ms "
            f"| targets p99 < 10 ms and gap < 5 ms: {'met' if pct(lo, 99) < 10 and gap < 5 else 'MISSED'}"
        )
        print(
            f"      ({stats['events']:,} AMI events, {stats['calls_written']} calls written in {elapsed:.1f} s)"
        )


if __name__ == "__main__":
    main()
