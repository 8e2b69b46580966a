"""Caller lookup at 1,000,000 customers: hub.customers.find_by_phone vs a bare primary-key get.

Run: .venv/bin/python bench/bench_lookup.py [--customers N] [--lookups N] [--rebuild] [--no-pg]

Builds (once; cached under var/bench/, keyed by the schema's migration heads) a SQLite database
with N customers, each with one phone, by bulk insert outside the ORM. Then times, interleaved in
one run, L random lookups through the real code path of the screen-pop (a new session, then
`find_by_phone(session, e164)`) and L random `session.get(Customer, id)` in a new session, and
prints median and p99 in microseconds and the p99 ratio. When the PostgreSQL peer is up
(127.0.0.1:15432) the same is done there (its database is cached too). Target: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import socket
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from hub.config import DatabaseConfig  # noqa: E402
from hub.customers import find_by_phone  # noqa: E402
from hub.db import create_engine, session_factory  # noqa: E402
from hub.migrate import current_heads, upgrade  # noqa: E402
from hub.models.customers import Customer  # noqa: E402

CACHE = ROOT / "var" / "bench"
PG_ADMIN = "postgresql://postgres@127.0.0.1:15432"
TARGET = 1.5


def phone_of(i: int) -> str:
    """The phone of customer number i (1-based): distinct, E.164-shaped, index-friendly order."""
    return f"+49301{i:07d}"


async def schema_key() -> str:
    """A short hash of the migrations' contents, so any schema change rebuilds the caches."""
    from hub.migrate import MIGRATIONS

    digest = hashlib.sha256()
    for migration in sorted((MIGRATIONS / "versions").glob("0*.py")):
        digest.update(migration.read_bytes())
    return digest.hexdigest()[:10]


# -- building -------------------------------------------------------------------------------------


async def migrated(url: str) -> None:
    engine = create_engine(DatabaseConfig(url=url))
    try:
        await upgrade(engine)
        assert await current_heads(engine)
    finally:
        await engine.dispose()


def fill_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")  # build only; the file is switched to WAL after
    conn.execute("PRAGMA synchronous=OFF")
    now = datetime.now(UTC).isoformat(sep=" ")
    chunk = 100_000
    with conn:
        for start in range(1, n + 1, chunk):
            ids = range(start, min(start + chunk, n + 1))
            conn.executemany(
                "INSERT INTO customers (id, name, company, source, city, region, notes, custom,"
                " created_at, updated_at) VALUES (?, ?, ?, '', '', '', '', '{}', ?, ?)",
                ((i, f"Customer {i}", f"Company {i % 5000}", now, now) for i in ids),
            )
            conn.executemany(
                "INSERT INTO contact_points (customer_id, kind, value, label)"
                " VALUES (?, 'phone', ?, '')",
                ((i, phone_of(i)) for i in ids),
            )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA user_version=1")  # marks a finished build
    conn.close()


async def build_sqlite(n: int, rebuild: bool) -> str:
    path = CACHE / f"lookup-{await schema_key()}-{n}.db"
    ready = False
    if path.exists() and not rebuild:
        conn = sqlite3.connect(path)
        ready = conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.close()
    if not ready:
        CACHE.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        started = time.perf_counter()
        url = f"sqlite+aiosqlite:///{path}"
        await migrated(url)
        await asyncio.to_thread(fill_sqlite, path, n)
        print(f"sqlite: built {n:,} customers in {time.perf_counter() - started:.1f} s ({path})")
    else:
        print(f"sqlite: using cached {path}")
    return f"sqlite+aiosqlite:///{path}"


async def build_pg(n: int, rebuild: bool) -> str:
    import asyncpg

    name = f"commhub_bench_lookup_{await schema_key()}_{n}"
    admin = await asyncpg.connect(f"{PG_ADMIN}/postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not rebuild:
            conn = await asyncpg.connect(f"{PG_ADMIN}/{name}")
            try:
                done = await conn.fetchval(
                    "SELECT obj_description('customers'::regclass, 'pg_class')"
                )
            finally:
                await conn.close()
            if done == "bench-ready":
                print(f"postgresql: using cached database {name}")
                return f"postgresql+asyncpg://postgres@127.0.0.1:15432/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    started = time.perf_counter()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:15432/{name}"
    await migrated(url)
    conn = await asyncpg.connect(f"{PG_ADMIN}/{name}")
    try:
        now = datetime.now(UTC)
        chunk = 100_000
        for start in range(1, n + 1, chunk):
            ids = range(start, min(start + chunk, n + 1))
            await conn.copy_records_to_table(
                "customers",
                records=[
                    (i, f"Customer {i}", f"Company {i % 5000}", "", "", "", "", "{}", now, now)
                    for i in ids
                ],
                columns=[
                    "id",
                    "name",
                    "company",
                    "source",
                    "city",
                    "region",
                    "notes",
                    "custom",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.copy_records_to_table(
                "contact_points",
                records=[(i, i, "phone", phone_of(i), "") for i in ids],
                columns=["id", "customer_id", "kind", "value", "label"],
            )
        for table in ("customers", "contact_points"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        await conn.execute("VACUUM ANALYZE customers")
        await conn.execute("VACUUM ANALYZE contact_points")
        await conn.execute("COMMENT ON TABLE customers IS 'bench-ready'")
    finally:
        await conn.close()
    print(f"postgresql: built {n:,} customers in {time.perf_counter() - started:.1f} s ({name})")
    return url


# -- timing ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(engine: AsyncEngine, n: int, lookups: int, seed: int) -> dict[str, list[float]]:
    sessions = session_factory(engine)
    rng = random.Random(seed)

    async def phone(i: int) -> float:
        started = time.perf_counter_ns()
        async with sessions() as session:
            customer = await find_by_phone(session, phone_of(i))
        elapsed = (time.perf_counter_ns() - started) / 1000
        assert customer is not None and customer.id == i, (i, customer)
        return elapsed

    async def pk(i: int) -> float:
        started = time.perf_counter_ns()
        async with sessions() as session:
            customer = await session.get(Customer, i)
        elapsed = (time.perf_counter_ns() - started) / 1000
        assert customer is not None and customer.id == i
        return elapsed

    for _ in range(500):  # warm-up: connection pool, statement caches, hot index pages
        await phone(rng.randint(1, n))
        await pk(rng.randint(1, n))
    times: dict[str, list[float]] = {"phone": [], "pk": []}
    gc.collect()
    for k in range(lookups):
        # Alternate which goes first so neither always gets the warmer cache.
        order = ("phone", "pk") if k % 2 == 0 else ("pk", "phone")
        for kind in order:
            i = rng.randint(1, n)
            times[kind].append(await (phone(i) if kind == "phone" else pk(i)))
    return times


def summary(label: str, n: int, times: dict[str, list[float]]) -> str:
    p50, p99 = statistics.median(times["phone"]), pct(times["phone"], 0.99)
    k50, k99 = statistics.median(times["pk"]), pct(times["pk"], 0.99)
    ratio = p99 / k99
    verdict = "ok" if ratio <= TARGET else "MISSED"
    size = f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"
    return (
        f"{label}: phone lookup @{size}: p50 {p50:.0f} µs, p99 {p99:.0f} µs; "
        f"pk lookup p50 {k50:.0f} µs, p99 {k99:.0f} µs; "
        f"p99 ratio {ratio:.2f}× (target ≤ {TARGET}×, {verdict})"  # noqa: RUF001 (the sign is meant)
    )


def pg_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 15432)) == 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cached databases")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    lines = []
    backends = [("sqlite", build_sqlite)]
    if not args.no_pg and pg_up():
        backends.insert(0, ("postgresql", build_pg))
    elif not args.no_pg:
        print("postgresql: peer not running on 127.0.0.1:15432; SQLite only")
    for label, build in backends:
        url = await build(args.customers, args.rebuild)
        engine = create_engine(DatabaseConfig(url=url))
        try:
            times = await measure(engine, args.customers, args.lookups, args.seed)
        finally:
            await engine.dispose()
        lines.append(summary(label, args.customers, times))
        print(lines[-1])
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
