"""Email messages/s into a local SMTP sink: bare aiosmtplib vs commhub's SmtpSender.

Run: .venv/bin/python bench/bench_email.py [--messages N] [--connections C] [--rounds R]

An aiosmtpd counting sink runs in its own process (subprocess of this script). In this process:
  (a) bare: C aiosmtplib.SMTP connections, each sending its share of N pre-rendered messages
      (bytes built once before timing) with sendmail(): the cheapest aiosmtplib can do;
  (b) commhub: SmtpSender with pool_size=C, C worker tasks calling send(OutgoingEmail) for the
      same N messages, so MIME rendering, the pool, rate-limit check and error mapping are all
      inside the timed path (as the campaign engine uses it).
Rounds alternate a, b, a, b...; the best round of each is printed, with the ratio b/a (target
>= 0.8). The sink's own count is checked after each round, so nothing is silently lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from _sink import run_sink, sink_count  # type: ignore[import-not-found]  # noqa: E402

from connectors.smtp import SmtpSender  # noqa: E402
from hub.config import SmtpConfig  # noqa: E402
from hub.messaging.ports import OutgoingEmail  # noqa: E402

FROM = "bench@example.test"
BODY = "Hello {i}, this is a small campaign message body. " * 4
# A loaded machine makes rounds slow: no new round starts after this (the script stays < ~60 s).
BUDGET_S = 40.0


def prerendered(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        m = EmailMessage(policy=SMTP_POLICY)
        m["From"] = FROM
        m["To"] = f"user{i}@example.test"
        m["Subject"] = f"Offer {i}"
        m["Message-ID"] = f"<bench{i}@example.test>"
        m.set_content(BODY.format(i=i))
        out.append(m.as_bytes())
    return out


async def bare(port: int, data: list[bytes], conns: int) -> float:
    async def worker(k: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench")
        await smtp.connect()
        for i in range(k, len(data), conns):
            await smtp.sendmail(FROM, [f"user{i}@example.test"], data[i])
        await smtp.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    return time.perf_counter() - t0


async def commhub(port: int, messages: list[OutgoingEmail], conns: int) -> float:
    sender = SmtpSender(
        SmtpConfig(host="127.0.0.1", port=port, from_address=FROM, pool_size=conns),
        local_hostname="bench",
    )

    async def worker(k: int) -> None:
        for i in range(k, len(messages), conns):
            await sender.send(messages[i])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    elapsed = time.perf_counter() - t0
    await sender.close()
    return elapsed


async def run(port: int, n: int, conns: int, rounds: int) -> None:
    data = prerendered(n)
    messages = [
        OutgoingEmail(to=f"user{i}@example.test", subject=f"Offer {i}", text=BODY.format(i=i))
        for i in range(n)
    ]
    best = {"bare": float("inf"), "commhub": float("inf")}
    cpu = {"bare": float("inf"), "commhub": float("inf")}
    expected = 0
    started = time.perf_counter()
    for r in range(rounds):
        if r and time.perf_counter() - started > BUDGET_S:
            print(f"(stopping after {r} rounds: {BUDGET_S:.0f} s budget used)")
            rounds = r
            break
        for name in ("bare", "commhub"):
            c0 = time.process_time()
            if name == "bare":
                elapsed = await bare(port, data, conns)
            else:
                elapsed = await commhub(port, messages, conns)
            used = time.process_time() - c0
            expected += n
            got = await sink_count(port)
            assert got == expected, f"sink counted {got}, expected {expected}"
            best[name] = min(best[name], elapsed)
            cpu[name] = min(cpu[name], used)
            print(
                f"round {r + 1} {name:8s} {n / elapsed:8.0f} msg/s"
                f"  client CPU {used / n * 1e6:6.0f} us/msg",
                flush=True,
            )
    a, b = n / best["bare"], n / best["commhub"]
    print(f"\n{n} messages over {conns} connections, best of {rounds} rounds:")
    print(
        f"  bare aiosmtplib (pre-rendered bytes): {a:8.0f} msg/s  {cpu['bare'] / n * 1e6:5.0f} us CPU/msg"
    )
    print(
        f"  commhub SmtpSender (OutgoingEmail):   {b:8.0f} msg/s  {cpu['commhub'] / n * 1e6:5.0f} us CPU/msg"
    )
    print(f"  ratio commhub / bare: {b / a:.2f} (target >= 0.80)")
    # On a shared machine wall-clock rounds are noisy; the client's CPU per message is steadier.
    print(f"  client CPU ratio bare / commhub: {cpu['bare'] / cpu['commhub']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink)
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sink", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        asyncio.run(run(port, args.messages, args.connections, args.rounds))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
