"""Run Alembic migrations programmatically (`commhub migrate`, tests, demo start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> AlembicConfig:
    """An Alembic config pointing at our migrations, without an ini file."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    # "heads": each area (telephony, campaigns, email, sms) is its own branch off the foundation.
    command.upgrade(cfg, "heads")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database schema up to date."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def _current(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


async def current_heads(engine: AsyncEngine) -> set[str]:
    """The revisions the database is at."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
