"""`commhub pbx-sim`: run the PBX simulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from connectors.pbxsim.scenarios import SCENARIOS
from connectors.pbxsim.server import PbxSimulator

# Human-scale timings: someone watching the screen-pop should see the phone ring.
DEMO_RING = 3.0
DEMO_TALK = 8.0
DEFAULT_SCENARIO_RATE = 0.2


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT, or :PORT for loopback) into host and port."""
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return host, port


async def run_pbx_sim(
    listen: str,
    scenario: str | None,
    replay: str | None,
    rate: float | None,
    username: str,
    secret: str,
) -> None:
    """Serve AMI on `listen`; place calls (one scenario or a mix, `rate` per second) or hand
    every client a recorded trace after login; stop on SIGINT/SIGTERM or cancellation."""
    if scenario and replay:
        raise ValueError("choose either a scenario or a replay trace, not both")
    if scenario and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if rate is not None and rate <= 0:
        raise ValueError("--rate must be positive")
    trace = Path(replay) if replay else None
    if trace is not None and not trace.is_file():
        raise FileNotFoundError(f"no such trace: {trace}")
    host, port = parse_listen(listen)
    sim = PbxSimulator(host=host, port=port, username=username, secret=secret)
    sim.click_to_call_options = {"ring": DEMO_RING, "talk": DEMO_TALK}
    if trace is not None:
        # A person watches a replay: keep the recorded pacing where timings exist.
        sim.login_replay = (trace, True)
    await sim.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)

    load: asyncio.Task[int] | None = None
    if trace is not None:
        mode = f"replaying {trace.name} to every client after login"
    elif scenario or rate:
        calls_per_s = rate or DEFAULT_SCENARIO_RATE
        load = asyncio.create_task(
            sim.run_load(calls_per_s, scenario, ring=DEMO_RING, talk=DEMO_TALK)
        )
        mode = f"{scenario or 'mixed scenarios'} at {calls_per_s:g} calls/s"
    else:
        mode = "idle, answering Originate (click-to-call)"
    print(
        f"pbx-sim: AMI on {host}:{sim.port} as {username!r} ({sim.systemname}); {mode}; "
        "Ctrl-C to stop",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if load is not None:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        await sim.stop()
        print(f"pbx-sim: stopped after {sim.calls_placed} calls", flush=True)
