"""`commhub demo` as a user runs it: it starts, the token answers JSON, calls get logged, and
Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import ROOT, free_port


async def test_demo_serves_customers_and_logs_calls(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "demo", "--port", str(port), "--calls-every", "0.5"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        token_file = tmp_path / "var" / "demo-token.txt"
        async with asyncio.timeout(60):
            while (
                not token_file.exists()
                or "commhub demo on" not in (tmp_path / "demo.log").read_text()
            ):
                assert proc.poll() is None, (tmp_path / "demo.log").read_text()
                await asyncio.sleep(0.2)
        token = token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"http://127.0.0.1:{port}/api/v1/customers", headers=headers)
            assert resp.status == 200
            body = await resp.json()
            assert len(body["items"]) == 50 and body["next"]
            async with asyncio.timeout(60):
                while True:
                    resp = await http.get(f"http://127.0.0.1:{port}/api/v1/calls", headers=headers)
                    calls = (await resp.json())["items"]
                    if calls:
                        break
                    await asyncio.sleep(0.5)
            assert calls[0]["disposition"] in (
                "answered",
                "missed",
                "busy",
                "transferred",
                "abandoned",
            )
            resp = await http.get(f"http://127.0.0.1:{port}/api/v1/customers")
            assert resp.status == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, (tmp_path / "demo.log").read_text()
        assert "Traceback" not in (tmp_path / "demo.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
