"""Database engine and sessions: SQLite (embedded default) or PostgreSQL, both async."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hub.config import DatabaseConfig
from hub.errors import NotFound

T = TypeVar("T")


def dialect_insert(dialect: Dialect) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


def insert_for(session: AsyncSession) -> Any:
    """`dialect_insert` for the session's database."""
    return dialect_insert(session.get_bind().dialect)


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web app read while the AMI writer commits; foreign keys are off by default.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
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
