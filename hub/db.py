"""Database engine and sessions: SQLite (embedded default) or PostgreSQL, both async."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import JSON, ColumnElement, any_, bindparam, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import InstrumentedAttribute

from hub.config import DatabaseConfig
from hub.errors import NotFound

T = TypeVar("T")
log = logging.getLogger(__name__)


def dialect_insert(dialect: Dialect) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


def insert_for(session: AsyncSession) -> Any:
    """`dialect_insert` for the session's database."""
    return dialect_insert(session.get_bind().dialect)


def among(
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    dialect: Dialect,
    values: Iterable[int | str] | None = None,
    *,
    key: str | None = None,
) -> ColumnElement[bool]:
    """`column IN values` with all the values in ONE bound parameter (a list): a JSON array read
    with json_each on SQLite, an array with = ANY on PostgreSQL. The SQL is then the same
    whatever the count, so it is compiled once and reused; `column.in_(values)` renders a
    placeholder per value on every execution (~0.7 ms on the event loop for 500 values).
    Give `values` now, or name the parameter (`key`) to pass the list at execution."""
    given = None if values is None else list(values)
    if dialect.name == "postgresql":
        array = bindparam(key, given, type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    listed = func.json_each(bindparam(key, given, type_=JSON())).table_valued("value")
    return column.in_(select(listed.c.value))


async def get_or_not_found(session: AsyncSession, model: type[T], row_id: int, what: str) -> T:
    """The row with this primary key, or NotFound("<what> <id> not found")."""
    row = await session.get(model, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row


def is_sqlite(engine_or_url: AsyncEngine | str) -> bool:
    """True when the database is SQLite (some statements differ: upserts, locking)."""
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


def _sqlite_setup(thread_nice: int) -> Callable[[Any, Any], None]:
    """What every new SQLite connection gets (a "connect" listener)."""

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets the web app read while the AMI writer commits; foreign keys are off by default.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if thread_nice and sys.platform == "linux":
            # SQLite calls the function on the thread that runs the statement: aiosqlite's.
            dbapi_conn.create_function(
                "commhub_lower_priority", 0, lambda: _lower_this_thread(thread_nice)
            )
            cursor.execute("SELECT commhub_lower_priority()")
        cursor.close()

    return on_connect


def _lower_this_thread(increment: int) -> int:
    """Make the calling thread `increment` nicer than it is (Linux: a priority per thread).

    aiosqlite runs every statement on a thread of its own. When the machine's CPUs are busy,
    the kernel shares one fairly between that thread and the event loop's, and a statement
    that runs for a few milliseconds (a group commit, a 500-row claim) then keeps the loop off
    the CPU just as long: every SMTP connection, websocket and AMI event waits. A nicer
    database thread still gets every idle moment, but the loop, woken by the network, takes
    the CPU back at once: in the campaign bench the sink idled about a third less (1.15 s ->
    0.72 s per 10,000 messages); throughput moved within the machine's noise (+0.015 of the
    ratio to bare over 14 paired rounds)."""
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + increment))
    except OSError as err:  # e.g. a seccomp profile without setpriority: only slower
        log.warning("could not lower the SQLite thread's CPU priority: %s", err)
        return 0
    return 1


def create_engine(config: DatabaseConfig) -> AsyncEngine:
    """Create the async engine; makes the SQLite file's folder if needed."""
    url = make_url(config.url)
    kwargs: dict[str, Any] = {"echo": config.echo}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=config.pool_size, max_overflow=config.pool_size, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_setup(config.sqlite_thread_nice))
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error."""
    async with sessions() as session, session.begin():
        yield session
