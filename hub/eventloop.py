"""The event loop commhub runs on: uvloop where it is installed (the default), else asyncio's own.

uvloop is asyncio's event loop rebuilt on libuv, in C. A busy worker spends much of its time in
the loop itself (waking tasks, reading sockets, running callbacks), and there uvloop costs less:
in alternating 10,000-recipient bench_campaign runs into the same sink, the engine sent 7% more
messages per second on uvloop (mean 1,469 vs 1,370) with 9% less CPU per message. Everything
commhub uses (aiohttp, aiosqlite, asyncpg, redis, aiosmtplib, aioimaplib, panoramisk) runs on
both. The test suite runs on the loop chosen here; the SMTP, AMI and campaign engine tests run on
both.

`[runtime] event_loop` (or COMMHUB_RUNTIME_EVENT_LOOP): "auto" takes uvloop if it can be
imported (it is a dependency everywhere but Windows); "uvloop" insists on it; "asyncio" rules it
out, e.g. while chasing a bug that might be the loop's."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from importlib import metadata
from typing import Any, TypeVar

from hub.errors import ConfigError

CHOICES = ("auto", "uvloop", "asyncio")
# Items between pauses in `paced`: ~0.1-0.3 ms of per-row Python each.
PACE = 32

T = TypeVar("T")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes new event loops for this choice of `[runtime] event_loop`."""
    if choice not in CHOICES:
        raise ConfigError(f"[runtime] event_loop must be auto, uvloop or asyncio, got {choice!r}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                '[runtime] event_loop = "uvloop", but uvloop is not installed '
                '(pip install uvloop; it does not exist for Windows), or set it to "auto"'
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)


def freeze_startup_heap() -> int:
    """Take everything alive now out of the garbage collector's sight, once start-up is over;
    returns how many objects that was.

    A started process holds ~90,000 objects for good (modules, mappers, compiled statements and
    templates). CPython's full collection walks every one of them and runs in the event loop's
    thread: in a campaign worker each took 50-70 ms, during which no SMTP reply, websocket
    message or AMI event was read (the bench's sink sat idle for as long). Frozen, they are
    skipped: the full collections that follow walk only what was allocated since (~13 ms in the
    same run). Start-up garbage is collected first, as frozen objects are never collected."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def describe(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """'uvloop 0.23.0' or 'asyncio', for the log line that says what a process runs on."""
    loop = loop or asyncio.get_running_loop()
    if type(loop).__module__.partition(".")[0] == "uvloop":
        return f"uvloop {metadata.version('uvloop')}"
    return "asyncio"


async def paced(items: Iterable[T], every: int = PACE) -> AsyncIterator[T]:
    """The items, with a pause for the loop after every `every` of them.

    A batch of a few hundred rows is milliseconds of Python in one go, and everything else in
    the process waits behind it: SMTP replies (a connection that waits sends nothing), and in
    `commhub serve` the screen-pops too. Campaign claims of 500 rows took 3 ms and more at a
    stretch before they were paced."""
    for count, item in enumerate(items, 1):
        yield item
        if count % every == 0:
            await asyncio.sleep(0)
