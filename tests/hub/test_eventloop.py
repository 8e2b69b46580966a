"""Which event loop a commhub process runs on: uvloop by default, asyncio's own on request."""

from __future__ import annotations

import asyncio
import sys

import pytest

from hub.config import load_config
from hub.errors import ConfigError
from hub.eventloop import describe, freeze_startup_heap, loop_factory, paced, run


async def _loop_name() -> str:
    await asyncio.sleep(0)
    return describe()


def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert run(_loop_name()).startswith("uvloop ")
    assert run(_loop_name(), "uvloop").startswith("uvloop ")


def test_asyncio_rules_uvloop_out() -> None:
    assert run(_loop_name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is asyncio.new_event_loop
    assert run(_loop_name()) == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be auto, uvloop or asyncio, got 'fast'"):
        loop_factory("fast")


def test_the_config_key_and_its_environment_variable() -> None:
    assert load_config(environ={}).runtime.event_loop == "auto"
    config = load_config(environ={"COMMHUB_RUNTIME_EVENT_LOOP": "asyncio"})
    assert run(_loop_name(), config.runtime.event_loop) == "asyncio"


async def test_paced_gives_every_item_and_lets_the_loop_run_between_groups() -> None:
    ticks = 0
    seen_at: list[int] = []

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)  # let it start
    started = ticks
    items = [item async for item in paced(range(100), every=10) if not seen_at.append(ticks)]
    other.cancel()
    assert items == list(range(100))
    # Within a group the other task never ran; between groups it did, once per pause.
    assert seen_at[:10] == [started] * 10
    assert len(set(seen_at)) == 10 and seen_at[-1] - started == 9


def test_freezing_the_start_up_heap_hides_it_from_full_collections() -> None:
    import gc

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    kept = Cycle()
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 10_000  # this process's modules and all
        assert all(o is not kept for o in gc.get_objects(2))  # full passes skip it
        late = Cycle()
        assert any(o is late for o in gc.get_objects(0))  # what comes after is collected as ever
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
