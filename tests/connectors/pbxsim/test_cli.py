"""`commhub pbx-sim` as the lead wires it: run_pbx_sim until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from connectors.pbxsim.cli import parse_listen, run_pbx_sim
from tests.connectors.pbxsim.conftest import FIXTURES, AmiClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def connect_when_up(port: int) -> AmiClient:
    async with asyncio.timeout(10):
        while True:
            try:
                return await AmiClient.connect(port)
            except ConnectionRefusedError:
                await asyncio.sleep(0.02)


async def test_cli_serves_scenario_calls_and_stops_on_cancel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    task = asyncio.create_task(
        run_pbx_sim(f"127.0.0.1:{port}", "answered", None, 50.0, "crm", "s3cret")
    )
    ami = await connect_when_up(port)
    refused = await ami.action("Login", "l0", ("Username", "hub"), ("Secret", "hubsecret"))
    assert refused.get("Message") == "Authentication failed"
    await ami.close()
    ami = await connect_when_up(port)
    accepted = await ami.action("Login", "l1", ("Username", "crm"), ("Secret", "s3cret"))
    assert accepted.get("Message") == "Authentication accepted"
    first = await ami.read_until(lambda f: f.get("Event") == "Newchannel")
    assert (first[-1].get("Channel") or "").startswith("PJSIP/trunk-")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await ami.eof()
    await ami.close()
    out = capsys.readouterr().out
    assert f"pbx-sim: AMI on 127.0.0.1:{port} as 'crm'" in out
    assert "answered at 50 calls/s" in out
    assert "pbx-sim: stopped after" in out


async def test_cli_replays_a_trace_after_each_login() -> None:
    port = free_port()
    task = asyncio.create_task(
        run_pbx_sim(
            f"127.0.0.1:{port}",
            None,
            str(FIXTURES / "login-logoff.ami"),
            None,
            "hub",
            "hubsecret",
        )
    )
    ami = await connect_when_up(port)
    await ami.login()
    booted = await ami.read_frame()
    assert booted.get("Event") == "FullyBooted" and booted.get("Uptime") == "4"  # the recording's
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ami.close()


async def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="either a scenario or a replay"):
        await run_pbx_sim("127.0.0.1:0", "answered", "x.ami", None, "hub", "s")
    with pytest.raises(ValueError, match="unknown scenario"):
        await run_pbx_sim("127.0.0.1:0", "dance", None, None, "hub", "s")
    with pytest.raises(FileNotFoundError):
        await run_pbx_sim("127.0.0.1:0", None, "/nonexistent.ami", None, "hub", "s")
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost")
    assert parse_listen(":5038") == ("127.0.0.1", 5038)
    assert parse_listen("[::1]:5038") == ("::1", 5038)
