"""AMI events/s over loopback TCP: panoramisk's bare parser vs our connector into a no-op sink.

Run: .venv/bin/python bench/bench_ami.py [--events N] [--rounds R]

A server in a separate process blasts N real Asterisk 22 events (the Event frames of the recorded
traces, repeated) after answering CoreShowChannels. We time, in this process, from sending that
action until the N-th event has been handled by
  (a) panoramisk 1.4's AMIProtocol.data_received -> Message.from_line -> handle_message ->
      Manager-style dispatch to a no-op callback (its bare parse path),
  (b) our AmiConnector delivering plain dicts to a no-op PbxEventSink (full path: parse, queue,
      delivery task, await sink.on_event),
  (c) our protocol's parse alone, events appended to a counter (no delivery task),
and print the best of R rounds for each, and b/a.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from panoramisk.ami_protocol import AMIProtocol  # noqa: E402

from connectors.ami import AmiConnector, AmiSettings  # noqa: E402
from connectors.ami.protocol import AmiProtocol  # noqa: E402

TRACES = ROOT / "tests" / "fixtures" / "asterisk22"


def event_frames() -> list[bytes]:
    """Every Event frame of the recorded traces, as bytes with their CRLF CRLF end."""
    frames = []
    for path in sorted(TRACES.glob("*.ami")):
        for chunk in path.read_bytes().split(b"\r\n\r\n"):
            if chunk.startswith(b"Event: "):
                frames.append(chunk + b"\r\n\r\n")
    return frames


def build_payload(n: int) -> bytes:
    frames = event_frames()
    return b"".join(frames[i % len(frames)] for i in range(n))


# -- the server, in its own process ----------------------------------------------------------------


def serve(n: int, port_queue: Any) -> None:
    payload = build_payload(n)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(
                    line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line
                )
                aid = fields.get("ActionID", "")
                action = fields.get("Action")
                if action == "Login":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n\r\n".encode())
                elif action == "Ping":
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode()
                    )
                elif action == "CoreShowChannels":
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"
                        f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n\r\n".encode()
                    )
                    writer.write(payload)
                elif action == "Logoff":
                    writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


# -- the clients ---------------------------------------------------------------------------------

TRIGGER = b"Action: CoreShowChannels\r\nActionID: bench-1\r\n\r\n"


async def run_panoramisk(port: int, n: int) -> float:
    """(a) panoramisk's protocol with a no-op dispatch; counts dispatched events."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    # n events plus the CoreShowChannelsComplete (its ActionID is no pending action of panoramisk's)
    target = n + 1

    class Factory:
        count = 0

        def dispatch(self, message: Any) -> None:
            self.count += 1
            if self.count == target:
                done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    transport, proto = await loop.create_connection(AMIProtocol, "127.0.0.1", port)
    proto.factory = Factory()
    proto.encoding = "utf8"
    await asyncio.sleep(0.05)  # banner
    start = time.perf_counter()
    transport.write(TRIGGER)
    await done
    elapsed = time.perf_counter() - start
    transport.close()
    return elapsed


async def run_connector(port: int, n: int) -> float:
    """(b) AmiConnector into a no-op sink; the trigger is its own CoreShowChannels after login."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class NoopSink:
        count = 0

        async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
            self.count += 1
            if self.count == n:
                done.set_result(None)

        async def on_resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> None:
            pass

        async def on_link(self, up: bool, reason: str) -> None:
            pass

    settings = AmiSettings(
        host="127.0.0.1",
        port=port,
        username="bench",
        secret="bench",
        ping_interval=60.0,
    )
    conn = AmiConnector(settings, NoopSink())
    start = time.perf_counter()  # includes connect and login: a few hundred microseconds
    await conn.start()
    # Only a full queue (events dropped) would keep the sink from counting to n.
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - start
    await conn.stop()
    return elapsed


async def run_tracker(port: int, n: int) -> float:
    """(d) AmiConnector into the call tracker: what commhub does with each event before any I/O."""
    from hub.telephony.model import TrackerConfig
    from hub.telephony.tracker import CallTracker

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tracker = CallTracker(
        TrackerConfig(agent_devices=frozenset({"Local/100@agents", "Local/200@agents"}))
    )

    class TrackerSink:
        count = 0

        async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
            tracker.handle(event, at)
            self.count += 1
            if self.count == n:
                done.set_result(None)

        async def on_resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> None:
            tracker.resync(channels, at)

        async def on_link(self, up: bool, reason: str) -> None:
            pass

    settings = AmiSettings(
        host="127.0.0.1", port=port, username="bench", secret="bench", ping_interval=60.0
    )
    conn = AmiConnector(settings, TrackerSink())
    start = time.perf_counter()
    await conn.start()
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - start
    await conn.stop()
    return elapsed


async def run_our_parser(port: int, n: int) -> float:
    """(c) our AmiProtocol alone: events counted where the delivery queue would take them."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    target = n + 1

    class Counter:
        count = 0

        def __len__(self) -> int:
            return 0

        def append(self, _item: Any) -> None:
            self.count += 1
            if self.count == target:
                done.set_result(None)

    class Queue:
        items = Counter()
        limit = 1

        def drop(self, event: Any) -> None:
            pass

        def wake(self) -> None:
            pass

    queue: Any = Queue()  # a counter where the protocol expects a deque
    transport, _proto = await loop.create_connection(
        lambda: AmiProtocol(queue, lambda: datetime.now(UTC), lambda _r: None), "127.0.0.1", port
    )
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    transport.write(TRIGGER)
    await done
    elapsed = time.perf_counter() - start
    transport.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.events

    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(n, port_queue), daemon=True)
    server.start()
    port = port_queue.get(timeout=30)
    payload_bytes = len(build_payload(n))
    print(f"{n:,} events, {payload_bytes / 1e6:.1f} MB, best of {args.rounds} rounds")

    async def bench() -> dict[str, float]:
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, fn in (
                ("a", run_panoramisk),
                ("b", run_connector),
                ("c", run_our_parser),
                ("d", run_tracker),
            ):
                elapsed = await fn(port, n)
                best[name] = min(best.get(name, float("inf")), elapsed)
        return best

    try:
        best = asyncio.run(bench())
    finally:
        server.terminate()
        server.join()
    rate = {k: n / v for k, v in best.items()}
    print(f"(a) panoramisk 1.4 bare parse, no-op dispatch : {rate['a']:>10,.0f} events/s")
    print(f"(b) AmiConnector -> no-op sink (full path)    : {rate['b']:>10,.0f} events/s")
    print(f"(c) our parser alone (no delivery)            : {rate['c']:>10,.0f} events/s")
    print(f"(d) AmiConnector -> call tracker              : {rate['d']:>10,.0f} events/s")
    print(
        f"ratio b/a = {rate['b'] / rate['a']:.2f}; events processed (d)/a = {rate['d'] / rate['a']:.2f}"
        f" (target >= 0.5)"
    )


if __name__ == "__main__":
    main()
