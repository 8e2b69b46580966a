"""Helpers shared by the benchmarks: percentiles, a cached 1,000,000-customer SQLite database."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "var" / "bench"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> str:
    """p50 / p99 in the unit given."""
    return f"p50 {statistics.median(values):.2f}, p99 {pct(values, 99):.2f}"


def phone_of(i: int) -> str:
    """The E.164 number of synthetic customer i (German fixed line, unique)."""
    return f"+4930{i:08d}"


def customers_db(n: int = 1_000_000) -> Path:
    """A migrated SQLite file with n customers, one phone each; built once, then cached."""
    from hub.config import DatabaseConfig
    from hub.db import create_engine
    from hub.migrate import upgrade

    CACHE.mkdir(parents=True, exist_ok=True)
    heads = "-".join(
        sorted(p.stem for p in (ROOT / "hub" / "migrations" / "versions").glob("0*.py"))
    )
    import hashlib

    path = CACHE / f"customers-{n}-{hashlib.sha256(heads.encode()).hexdigest()[:8]}.db"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)

    async def migrate() -> None:
        engine = create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp}"))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    t0 = time.perf_counter()
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now = "2026-01-01 00:00:00.000000"
    rng = random.Random(1)
    batch = 50_000
    for start in range(1, n + 1, batch):
        ids = range(start, min(start + batch, n + 1))
        conn.executemany(
            "INSERT INTO customers (id, name, company, source, city, region, notes, custom,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, '', '', '', '{}', ?, ?)",
            (
                (i, f"Customer {i}", f"Company {i % 997}", rng.choice(("web", "fair")), now, now)
                for i in ids
            ),
        )
        conn.executemany(
            "INSERT INTO contact_points (id, customer_id, kind, value, label) VALUES (?, ?, 'phone', ?, '')",
            ((i, i, phone_of(i)) for i in ids),
        )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    shutil.move(tmp, path)
    print(f"(built {n:,} customers in {time.perf_counter() - t0:.1f} s, cached at {path})")
    return path
