"""Backup while the app writes, restore, and the refusals (wrong backend, unknown revision)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from sqlalchemy import func, insert, inspect, select, text

from hub.backup import BackupError, backup, inspect_backup, restore, run_backup_cli, run_restore_cli
from hub.config import Config, DatabaseConfig, load_config
from hub.db import create_engine, session_factory
from hub.models.base import utcnow
from hub.models.customers import ContactPoint, Customer

COMMHUB = str(Path(sys.executable).parent / "commhub")
BULK = 20_000


def config_for(url: str) -> Config:
    return load_config(environ={"COMMHUB_DATABASE_URL": url})


async def counts(engine) -> tuple[int, int]:
    async with engine.connect() as conn:
        customers = await conn.scalar(select(func.count()).select_from(Customer))
        contacts = await conn.scalar(select(func.count()).select_from(ContactPoint))
    return int(customers or 0), int(contacts or 0)


async def fill(engine, n: int) -> None:
    """n customers with one phone each (bulk, so the backup has something to copy)."""
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            insert(Customer.__table__),
            [
                {
                    "id": i,
                    "name": f"Bulk {i}",
                    "company": "",
                    "source": "",
                    "city": "",
                    "region": "",
                    "notes": "",
                    "custom": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, n + 1)
            ],
        )
        await conn.execute(
            insert(ContactPoint.__table__),
            [
                {"customer_id": i, "kind": "phone", "value": f"+49301{i:07d}", "label": ""}
                for i in range(1, n + 1)
            ],
        )
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT setval('customers_id_seq', :n)"), {"n": n})


async def test_backup_while_writing_then_restore(db_url, tmp_path):
    config = config_for(db_url)
    engine = create_engine(config.database)  # plays the running app: it stays open throughout
    sessions = session_factory(engine)
    try:
        await fill(engine, BULK)
        stop = asyncio.Event()
        written = 0

        async def writer() -> None:
            """The app keeps taking calls: a customer and their phone per transaction."""
            nonlocal written
            while not stop.is_set():
                async with sessions() as session, session.begin():
                    customer = Customer(name=f"Live {written}", custom={})
                    session.add(customer)
                    await session.flush()
                    session.add(
                        ContactPoint(
                            customer_id=customer.id, kind="phone", value=f"+4940{written:08d}"
                        )
                    )
                written += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        while written < 5:
            await asyncio.sleep(0.01)
        before = written
        target = tmp_path / "backup.bin"
        assert await backup(config, target) in ("sqlite", "postgresql")
        during = written - before
        stop.set()
        await task
        # The backup ran in a thread / subprocess while the writer kept committing...
        assert during > 0
        # ...and it is one consistent snapshot: never a customer without the phone written
        # in the same transaction, never a phone without its customer.
        heads = await inspect_backup(config, target)
        assert "0001_foundation" not in heads and heads  # heads, not history

        await restore(config, target)
        customers, contacts = await counts(engine)  # seen through the app's own pool
        assert customers == contacts
        assert BULK + before <= customers <= BULK + written

        # Change everything, then restore again: the data is the backup's, extras are gone.
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM contact_points"))
            await conn.execute(text("DELETE FROM customers WHERE id > 10"))
            await conn.execute(text("CREATE TABLE zzz_extra (id integer)"))
        assert await counts(engine) == (10, 0)
        args = Namespace(file=str(target), yes=True)
        assert await run_restore_cli(config, args) == 0
        assert await counts(engine) == (customers, contacts)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert "zzz_extra" not in tables and "customers" in tables
        async with sessions() as session:
            assert (
                await session.scalar(select(Customer.name).where(Customer.id == BULK))
                == f"Bulk {BULK}"
            )
    finally:
        await engine.dispose()


async def test_restore_refuses_the_other_backend(db_url, tmp_path):
    config = config_for(db_url)
    other = "postgresql" if db_url.startswith("sqlite") else "sqlite"
    fake = tmp_path / "other.bak"
    fake.write_bytes(b"PGDMP\x01\x0e" if other == "postgresql" else b"SQLite format 3\x00")
    with pytest.raises(BackupError, match=f"is a {other} backup but the configured database"):
        await inspect_backup(config, fake)
    code = await run_restore_cli(config, Namespace(file=str(fake), yes=True))
    assert code == 2


@pytest.fixture
async def sqlite_setup(config: Config, tmp_path: Path):
    engine = create_engine(config.database)
    try:
        from hub.migrate import upgrade

        await upgrade(engine)
        await fill(engine, 100)
    finally:
        await engine.dispose()
    target = tmp_path / "backup.db"
    assert await run_backup_cli(config, Namespace(file=str(target))) == 0
    return config, target


async def test_sqlite_backup_is_a_self_contained_file(sqlite_setup, tmp_path, capsys):
    config, target = sqlite_setup
    again = tmp_path / "again.db"
    assert await run_backup_cli(config, Namespace(file=str(again))) == 0
    assert f"to {again}" in capsys.readouterr().out
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (100,)
    finally:
        conn.close()
    assert not Path(f"{target}-wal").exists()
    assert not Path(f"{target}.part").exists()


async def test_restore_refuses_unknown_revisions_and_damaged_files(sqlite_setup, tmp_path):
    config, target = sqlite_setup
    future = tmp_path / "future.db"
    shutil.copy(target, future)
    conn = sqlite3.connect(future)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future' WHERE rowid = 1")
    conn.close()
    with pytest.raises(BackupError, match="revision 9999_future, which this commhub does not know"):
        await inspect_backup(config, future)

    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(BackupError, match="not a commhub backup"):
        await inspect_backup(config, plain)

    damaged = tmp_path / "damaged.db"
    data = bytearray(target.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header, wreck every page after it
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError):
        await inspect_backup(config, damaged)

    junk = tmp_path / "junk.bak"
    junk.write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a commhub backup"):
        await inspect_backup(config, junk)
    with pytest.raises(BackupError, match="no such file"):
        await inspect_backup(config, tmp_path / "missing.db")
    # Nothing of that touched the live database.
    engine = create_engine(config.database)
    try:
        assert await counts(engine) == (100, 100)
    finally:
        await engine.dispose()


async def test_backup_errors(tmp_path, capsys):
    config = load_config(
        environ={"COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/missing.db"}
    )
    assert await run_backup_cli(config, Namespace(file=str(tmp_path / "b.db"))) == 2
    assert "no SQLite database at" in capsys.readouterr().err
    config = load_config(environ={"COMMHUB_DATABASE_URL": "sqlite+aiosqlite:///:memory:"})
    assert await run_backup_cli(config, Namespace(file=str(tmp_path / "b.db"))) == 2
    assert "in-memory" in capsys.readouterr().err


async def test_restore_asks_first(tmp_path):
    """Through the real CLI: `no` keeps the data, `yes` restores it."""
    live = tmp_path / "live.db"
    url = f"sqlite+aiosqlite:///{live}"
    engine = create_engine(DatabaseConfig(url=url))
    try:
        from hub.migrate import upgrade

        await upgrade(engine)
    finally:
        await engine.dispose()
    assert await run_backup_cli(config_for(url), Namespace(file=str(tmp_path / "empty.db"))) == 0
    conn = sqlite3.connect(live)
    with conn:
        conn.execute(
            "INSERT INTO customers (name, company, source, city, region, notes, custom,"
            " created_at, updated_at) VALUES ('Max', '', '', '', '', '', '{}',"
            " '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
    conn.close()

    def customers() -> int:
        conn = sqlite3.connect(live)
        try:
            return int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])
        finally:
            conn.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env["COMMHUB_DATABASE_URL"] = url

    def restore_cli(answer: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMMHUB, "restore", "empty.db"],
            input=answer,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = await asyncio.to_thread(restore_cli, "no\n")
    assert result.returncode == 1
    assert "Replace ALL data" in result.stderr and "restore cancelled" in result.stdout
    assert customers() == 1
    result = await asyncio.to_thread(restore_cli, "yes\n")
    assert result.returncode == 0, result.stderr
    assert "restored empty.db" in result.stdout
    assert customers() == 0


async def test_postgres_backup_is_pg_dump_custom_format(tmp_path):
    from tests.conftest import drop_pg_database, pg_database

    url = await pg_database()
    try:
        config = config_for(url)
        target = tmp_path / "pg.dump"
        assert await backup(config, target) == "postgresql"
        assert target.read_bytes().startswith(b"PGDMP")
        sqlite_config = config_for(f"sqlite+aiosqlite:///{tmp_path}/x.db")
        with pytest.raises(BackupError, match="is a postgresql backup but the configured database"):
            await inspect_backup(sqlite_config, target)
        bad = load_config(
            environ={"COMMHUB_DATABASE_URL": url.rsplit("/", 1)[0] + "/no_such_database_here"}
        )
        with pytest.raises(BackupError, match="pg_dump failed"):
            await backup(bad, tmp_path / "nope.dump")
        assert not (tmp_path / "nope.dump").exists()
    finally:
        await drop_pg_database(url)


def test_database_config_is_what_backup_reads(tmp_path):
    # The backup follows [database] url exactly (relative SQLite paths are relative to the cwd).
    from hub.backup import sqlite_file

    assert sqlite_file("sqlite+aiosqlite:///var/commhub.db") == Path("var/commhub.db")
    assert sqlite_file(f"sqlite+aiosqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert DatabaseConfig().url.startswith("sqlite")
