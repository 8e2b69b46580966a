"""The SQLite connection set-up: pragmas, and the driver thread's lower CPU priority."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from hub.config import DatabaseConfig, load_config
from hub.db import create_engine
from hub.errors import ConfigError


def _priority_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


async def _connect_and_look(db: Path, nice: int) -> tuple[list[int], tuple[str, int]]:
    """The priorities of the driver threads this engine started, and two pragmas' values."""
    before = set(threading.enumerate())
    engine = create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{db}", sqlite_thread_nice=nice))
    try:
        async with engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            started = [t for t in threading.enumerate() if t not in before and t.is_alive()]
            return [_priority_of(t) for t in started], (journal, keys)
    finally:
        await engine.dispose()


def _loop_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_sqlite_runs_on_a_nicer_thread_than_the_event_loop(tmp_path: Path) -> None:
    loop_priority = _loop_priority()
    workers, pragmas = await _connect_and_look(tmp_path / "nice.db", 7)
    assert workers == [min(19, loop_priority + 7)]
    # Only the driver's thread: the loop's own (this one) is untouched; the pragmas still apply.
    assert _loop_priority() == loop_priority
    assert pragmas == ("wal", 1)


async def test_zero_leaves_the_thread_priority_alone(tmp_path: Path) -> None:
    workers, pragmas = await _connect_and_look(tmp_path / "plain.db", 0)
    assert workers == [_loop_priority()]
    assert pragmas == ("wal", 1)


@pytest.mark.parametrize("value", ["-1", "20"])
def test_the_increment_is_checked(value: str) -> None:
    with pytest.raises(ConfigError, match="sqlite_thread_nice must be 0-19"):
        load_config(environ={"COMMHUB_DATABASE_SQLITE_THREAD_NICE": value})
