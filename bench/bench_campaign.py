"""A 100,000-recipient email campaign through the engine vs bare aiosmtplib, into a local sink.

Run: .venv/bin/python bench/bench_campaign.py [--recipients 100000] [--small 10000]
                                              [--bare 15000] [--rounds 5] [--large-runs 3]
                                              [--connections 4]

Processes (the sink runs alone on the first CPU, the client on the others; --no-pin lets
the scheduler place them):
  sink    an aiosmtpd server that counts what it accepts (NOOP answers the count);
  bare    C aiosmtplib connections sending pre-rendered messages (bytes built before timing:
          the same template rendered for the same customers, the same MIME composer) with
          sendmail(); the fastest aiosmtplib can push; run on commhub's event loop (uvloop,
          hub/eventloop.py) and on asyncio's own, the faster of the two is the reference;
  engine  a temp SQLite with N customers, one campaign, "send now", the real CampaignEngine with
          the real SmtpSender (pool of C connections, 2C messages in flight): segment streaming,
          claiming, rendering, consent check, journal, group commits with timeline rows, all
          timed from "send now" to the run marked finished.
Bare (on both loops) and the --small engine run alternate for --rounds rounds: the best of each
is compared, and each round's own ratio (to that round's faster bare run) is shown with their
median (a shared machine slows some rounds down; runs made moments apart see the same machine).
Then --large-runs engine runs at --recipients, each between two bare pairs (neighbours share
one) and its ratio taken to their mean: the median run is the figure (the host's speed drifts
by a fifth within a minute now and then; one run can land on either side of such a drift), with
its ratio to the best bare run of all beside it. The engine runs on commhub's loop. Each engine
run is a fresh process on a copy of a database built by another, so its peak memory
(ru_maxrss) is the engine's: compare the sizes to see that it does not grow with the recipient
count. Every figure is checked against the sink's own count, so nothing is silently lost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _sink import run_sink, sink_count  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.eventloop import describe, freeze_startup_heap, run  # noqa: E402  (after the path is set)

SECRET = "bench-secret-key-0123456789abcdef"
FROM = "news@shop.test"
TEMPLATE = {
    "name": "bench",
    "channel": "email",
    "subject": "Spring offers for {{ customer.first_name }}",
    "html": (
        "<html><body><p>Hello {{ customer.name }},</p>"
        "<p>our spring offers are here: 20% off everything in {{ customer.city }}.</p>"
        "<p><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p></body></html>"
    ),
    "text": (
        "Hello {{ customer.name }},\n\nour spring offers are here: 20% off everything in "
        "{{ customer.city }}.\n\nUnsubscribe: {{ unsubscribe_url }}\n"
    ),
}


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system): robust to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- sink -----------------------------------------------------------------------------------


# --- data -----------------------------------------------------------------------------------


def customer_rows(n: int) -> list[tuple[str, str]]:
    """(name, email) of the synthetic customers, the same in every phase."""
    return [(f"Customer Number{i}", f"c{i}@example.test") for i in range(n)]


def build_db(path: Path, n: int) -> None:
    """A migrated SQLite file with n customers (one email each), inserted with executemany."""
    from hub.config import DatabaseConfig
    from hub.db import create_engine
    from hub.migrate import upgrade

    async def migrate() -> None:
        engine = create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{path}"))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    con = sqlite3.connect(path)
    with con:
        con.executemany(
            "INSERT INTO customers (id, name, company, source, city, region, notes, custom,"
            " created_at, updated_at) VALUES (?, ?, '', 'web', 'Berlin', '', '', '{}', ?, ?)",
            ((i + 1, name, now, now) for i, (name, _email) in enumerate(customer_rows(n))),
        )
        con.executemany(
            "INSERT INTO contact_points (customer_id, kind, value, label) VALUES (?, 'email', ?, '')",
            ((i + 1, email) for i, (_name, email) in enumerate(customer_rows(n))),
        )
    con.close()


# --- bare -----------------------------------------------------------------------------------


def prerender(n: int) -> list[tuple[str, bytes]]:
    """The messages the engine would send, rendered and composed before any timing."""
    from connectors.smtp.compose import render
    from hub.campaigns.consent import open_pixel_url, unsubscribe_url
    from hub.campaigns.engine import _with_open_pixel
    from hub.campaigns.templates import CompiledTemplate, sample_context
    from hub.messaging.ports import OutgoingEmail

    compiled = CompiledTemplate("email", TEMPLATE)
    base = sample_context()
    out = []
    for i, (name, email) in enumerate(customer_rows(n)):
        link = unsubscribe_url(
            "http://127.0.0.1:8080", SECRET, channel="email", customer_id=i + 1, source="c1"
        )
        context = {
            **base,
            "customer": {**base["customer"], "name": name, "first_name": name.split()[0]},
            "unsubscribe_url": link,
        }
        # Byte for byte what the engine sends (open pixel and campaign header included), so the
        # sink does the same work for both.
        rendered = _with_open_pixel(
            compiled.render(context),
            open_pixel_url("http://127.0.0.1:8080", SECRET, customer_id=i + 1, campaign_id=1),
        )
        composed = render(
            OutgoingEmail(
                to=email,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=f"<cd{i + 1}.00000000@shop.test>",
                headers={
                    "List-Unsubscribe": f"<{link}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    "Precedence": "bulk",
                    "X-Commhub-Campaign": "1",
                },
            ),
            FROM,
        )
        out.append((email, composed.data))
    return out


async def bare(
    port: int, messages: list[tuple[str, bytes]], connections: int
) -> tuple[float, float]:
    """(msg/s, CPU s per message) of C plain aiosmtplib connections sending the messages."""
    import aiosmtplib

    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench")
        for _ in range(connections)
    ]
    for smtp in clients:
        await smtp.connect()
    queue = iter(messages)

    async def worker(smtp: aiosmtplib.SMTP) -> None:
        for rcpt, data in queue:
            await smtp.sendmail(FROM, [rcpt], data)

    before = await sink_count(port)
    cpu = cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in clients))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    for smtp in clients:
        await smtp.quit()
    got = await sink_count(port) - before
    assert got == len(messages), f"sink counted {got}, sent {len(messages)}"
    return len(messages) / elapsed, cpu / len(messages)


# --- engine ---------------------------------------------------------------------------------


async def engine_run(port: int, db: Path, n: int, connections: int, journal: Path) -> dict:
    """One campaign to n customers through the real engine; timings and peak memory."""
    from dataclasses import replace

    from connectors.smtp import SmtpSender
    from hub.bus import LocalBus
    from hub.campaigns import service
    from hub.campaigns.engine import CampaignEngine
    from hub.campaigns.messengers import EmailMessenger, MessengerRegistry
    from hub.config import load_config
    from hub.db import create_engine, session_factory
    from hub.models.campaigns import CampaignRun
    from hub.services import Hub

    config = load_config(
        environ={
            "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "COMMHUB_WEB_SECRET_KEY": SECRET,
            "COMMHUB_SMTP_HOST": "127.0.0.1",
            "COMMHUB_SMTP_PORT": str(port),
            "COMMHUB_SMTP_FROM_ADDRESS": FROM,
            "COMMHUB_SMTP_POOL_SIZE": str(connections),
            # The same connections as bare; twice as many messages in flight, so a connection is
            # never idle while the next message is rendered (the [campaigns] default ratio).
            "COMMHUB_CAMPAIGNS_EMAIL_CONCURRENCY": str(2 * connections),
            "COMMHUB_CAMPAIGNS_EMAIL_RATE_PER_SECOND": "0",
            "COMMHUB_CAMPAIGNS_JOURNAL_DIR": str(journal),
        }
    )
    engine = create_engine(config.database)
    hub = Hub(config=config, engine=engine, sessions=session_factory(engine), bus=LocalBus())
    sender = SmtpSender(replace(config.smtp), local_hostname="bench")
    registry = MessengerRegistry()
    registry.register(EmailMessenger(sender))
    campaigns = CampaignEngine(hub, registry)
    async with hub.sessions() as session, session.begin():
        template = await service.create_template(session, TEMPLATE, None)
        campaign = await service.create_campaign(
            session, {"name": "bench", "channel": "email", "template_id": template.id}, None
        )
    await campaigns.start()
    await sender.check()  # connection set-up is not what we measure (bare connects first too)
    freeze_startup_heap()  # as `commhub serve` does once it has started (bare does it too)
    before = await sink_count(port)
    cpu = cpu_seconds()
    start = time.perf_counter()
    async with hub.sessions() as session, session.begin():
        run_id = (await service.schedule_campaign(session, campaign.id, {"now": True}))["run_id"]
    campaigns.wake()
    first = None
    while campaigns.stats["sent"] < n:
        await asyncio.sleep(0.01)
        if first is None and campaigns.stats["sent"]:
            first = time.perf_counter() - start
    # The engine marks the run finished itself once its last messages are recorded.
    while True:
        async with hub.sessions() as session:
            run = await session.get(CampaignRun, run_id, populate_existing=True)
            if run is not None and run.status == "finished":
                break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    got = await sink_count(port) - before
    await campaigns.stop()
    await sender.close()
    await engine.dispose()
    assert got == n, f"sink counted {got}, engine sent {n}"
    return {
        "recipients": n,
        "seconds": round(elapsed, 2),
        "msg_per_s": round(n / elapsed, 1),
        "first_message_s": round(first or 0.0, 3),
        "cpu_us_per_msg": round(cpu / n * 1e6),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "in_doubt_resends": campaigns.stats["in_doubt_resends"],
        "loop": describe(),
    }


def engine_child(port: int, db: Path, n: int, connections: int) -> None:
    """Run one engine phase in this (fresh) process on a built database; print JSON figures.

    The database is built by another process, so this one's peak memory is the engine's."""
    with tempfile.TemporaryDirectory(prefix="commhub-bench-") as tmp:
        figures = run(engine_run(port, db, n, connections, Path(tmp) / "journal"))
        print(json.dumps(figures), flush=True)


def bare_child(port: int, n: int, connections: int, loop: str) -> None:
    """Run the bare phase in this (fresh) process and print its figures as JSON."""
    messages = prerender(n)

    async def measured() -> tuple[tuple[float, float], str]:
        freeze_startup_heap()
        return await bare(port, messages, connections), describe()

    (rate, cpu), name = run(measured(), loop)
    figures = {"messages": n, "msg_per_s": round(rate, 1), "cpu_us_per_msg": round(cpu * 1e6)}
    print(json.dumps({**figures, "loop": loop, "loop_name": name}), flush=True)


def child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rates(figures: list[dict]) -> str:
    return ", ".join(f"{f['msg_per_s']:,.0f}" for f in figures)


def bare_pair(n: int, common: list[str]) -> list[dict]:
    """Bare on commhub's loop, then on asyncio's own: the faster is what bare can do."""
    return [
        child("--role", "bare", "-n", str(n), "--loop", loop, *common)
        for loop in ("auto", "asyncio")
    ]


def _faster(pair: list[dict]) -> float:
    return max(f["msg_per_s"] for f in pair)


def main() -> None:
    """Run the phases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--bare", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--large-runs", type=int, default=3, help="engine runs at --recipients (the median counts)"
    )
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--role", choices=["sink", "bare", "engine", "build"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--db", type=Path)
    parser.add_argument("-n", type=int)
    parser.add_argument("--cpus", help="(child roles) the CPUs this process may run on, e.g. 1,2")
    parser.add_argument(
        "--loop", default="auto", help="(bare) the event loop: auto (commhub's) or asyncio"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the sink and the clients (default: a CPU to the sink alone)",
    )
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    if args.role == "sink":
        run_sink(args.port)
        return
    if args.role == "bare":
        bare_child(args.port, args.n, args.connections, args.loop)
        return
    if args.role == "build":
        build_db(args.db, args.n)
        return
    if args.role == "engine":
        engine_child(args.port, args.db, args.n, args.connections)
        return

    import shutil
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The sink gets a CPU to itself and the client (bare or engine, threads included) the
    # others: otherwise the scheduler now and then runs the client on the sink's CPU and the
    # sink, the reference, slows down with it (the same for both clients, but noisier).
    # (Linux only: elsewhere there is no affinity call and nothing is pinned.)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = not args.no_pin and len(cpus) >= 2
    sink_cpus = ["--cpus", str(cpus[0])] if pinned else []
    client_cpus = ["--cpus", ",".join(str(cpu) for cpu in cpus[1:])] if pinned else []
    sink = subprocess.Popen(
        [sys.executable, __file__, "--role", "sink", "--port", str(port), *sink_cpus],
        stdout=subprocess.PIPE,
        text=True,
    )
    common = ["--port", str(port), "--connections", str(args.connections), *client_cpus]
    bare_figs: list[dict] = []
    small_figs: list[dict] = []
    larges: list[dict] = []
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="commhub-bench-") as tmp:
            dbs = {}
            for n in (args.small, args.recipients):
                dbs[n] = Path(tmp) / f"customers-{n}.db"
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--role",
                        "build",
                        "--db",
                        str(dbs[n]),
                        "-n",
                        str(n),
                    ],
                    check=True,
                )
            # Alternating rounds: a shared machine slows some rounds down. Best against best is
            # what each side can do; each round's own ratio pairs runs made moments apart.
            for round_no in range(args.rounds):
                bare_figs.append(bare_pair(args.bare, common))
                copy = Path(tmp) / f"round-{round_no}.db"
                shutil.copy(dbs[args.small], copy)
                small_figs.append(
                    child("--role", "engine", "--db", str(copy), "-n", str(args.small), *common)
                )
            # Each long run is bracketed by bare runs, so its ratio compares like with like.
            around = [bare_pair(args.bare, common)]
            for run_no in range(args.large_runs):
                copy = Path(tmp) / f"large-{run_no}.db"
                shutil.copy(dbs[args.recipients], copy)
                larges.append(
                    child(
                        "--role",
                        "engine",
                        "--db",
                        str(copy),
                        "-n",
                        str(args.recipients),
                        *common,
                    )
                )
                copy.unlink()
                around.append(bare_pair(args.bare, common))
        total = time.perf_counter() - started
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
    every_bare = [fig for pair in bare_figs + around for fig in pair]
    bare = max(every_bare, key=lambda f: f["msg_per_s"])
    on_loop = {
        loop: max(f["msg_per_s"] for f in every_bare if f["loop"] == loop)
        for loop in ("auto", "asyncio")
    }
    small = max(small_figs, key=lambda f: f["msg_per_s"])
    rate = bare["msg_per_s"]
    paired = [e["msg_per_s"] / _faster(b) for b, e in zip(bare_figs, small_figs, strict=True)]
    brackets = [
        (_faster(before) + _faster(after)) / 2 for before, after in itertools.pairwise(around)
    ]
    large_ratios = [run["msg_per_s"] / b for run, b in zip(larges, brackets, strict=True)]
    middle = sorted(range(len(larges)), key=large_ratios.__getitem__)[len(larges) // 2]
    large = larges[middle]
    largest_rss = max(run["peak_rss_mb"] for run in larges)
    placement = (
        f"sink alone on CPU {cpus[0]}, clients on CPU {','.join(str(c) for c in cpus[1:])}"
        if pinned
        else "not pinned to CPUs"
    )
    print(
        f"commhub campaign bench: {args.connections} SMTP connections for both (engine:"
        f" {2 * args.connections} messages in flight, on {large['loop']}), sink in its own"
        f" process, {placement}"
    )
    print(
        f"  bare aiosmtplib, {args.bare:,} pre-rendered messages: {rate:>8,.0f} msg/s"
        f"  (best of {_rates(every_bare)};"
        f" CPU {bare['cpu_us_per_msg']} us/msg; best on {large['loop']}: {on_loop['auto']:,.0f},"
        f" on asyncio's loop: {on_loop['asyncio']:,.0f})"
    )
    print(
        f"  commhub engine, {args.small:>7,} recipients: {small['msg_per_s']:>8,.0f} msg/s"
        f"  ratio {small['msg_per_s'] / rate:.2f} best to best  (runs {_rates(small_figs)};"
        f" each round's ratio {', '.join(f'{r:.2f}' for r in paired)},"
        f" median {statistics.median(paired):.2f};"
        f" CPU {small['cpu_us_per_msg']} us/msg; peak RSS {small['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"  commhub engine, {args.recipients:>7,} recipients: {large['msg_per_s']:>8,.0f} msg/s"
        f"  ratio {large_ratios[middle]:.2f} to the bare runs just before and after"
        f" ({_faster(around[middle]):,.0f}, {_faster(around[middle + 1]):,.0f}),"
        f" {large['msg_per_s'] / rate:.2f} to the best; the median of {len(larges)} runs"
        f" ({_rates(larges)} msg/s; ratios {', '.join(f'{r:.2f}' for r in large_ratios)})"
    )
    print(
        f"      {large['seconds']:.1f} s end to end, first message recorded after"
        f" {large['first_message_s'] * 1000:.0f} ms; CPU {large['cpu_us_per_msg']} us/msg;"
        f" peak RSS {large['peak_rss_mb']:.0f} MB"
    )
    growth = largest_rss - small["peak_rss_mb"]
    print(
        f"  peak memory {small['peak_rss_mb']:.0f} MB at {args.small:,} recipients vs"
        f" {largest_rss:.0f} MB at {args.recipients:,} (largest of the runs; {growth:+.0f} MB)"
    )
    print(f"  total bench time {total:.0f} s")


if __name__ == "__main__":
    main()
