"""A lease in Redis: exactly one process holds a role (the AMI link) and another takes it over
when the holder dies or stalls. SET NX PX to take it, a compare-and-extend script to keep it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# Extend only if we still hold it; release only if we still hold it.
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class RedisLease:
    """Run `on_acquire` while holding the lease `name`, `on_lose` when it is lost or released."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        on_acquire: Callable[[], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
        *,
        ttl: float = 10.0,
    ) -> None:
        self.key = f"commhub:lease:{name}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl_ms = int(ttl * 1000)
        self._url = redis_url
        self._on_acquire = on_acquire
        self._on_lose = on_lose
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None
        self.held = False

    async def start(self) -> None:
        """Connect and start competing for the lease."""
        import redis.asyncio as redis_async

        self._redis = redis_async.from_url(self._url)
        await self._redis.ping()
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.key}")

    async def _run(self) -> None:
        period = self.ttl_ms / 3000
        while True:
            try:
                if self.held:
                    still = await self._redis.eval(_EXTEND, 1, self.key, self.holder, self.ttl_ms)
                    if not still:
                        log.warning("lost lease %s; stopping what it guards", self.key)
                        self.held = False
                        await self._on_lose()
                else:
                    got = await self._redis.set(self.key, self.holder, nx=True, px=self.ttl_ms)
                    if got:
                        self.held = True
                        log.info("took lease %s as %s", self.key, self.holder)
                        await self._on_acquire()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # Redis away: we cannot prove we hold it, so stop before another process starts.
                log.warning("lease %s: redis error %s", self.key, err)
                if self.held:
                    self.held = False
                    await self._on_lose()
            await asyncio.sleep(period)

    async def stop(self) -> None:
        """Stop competing; release the lease so another process takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.held:
            self.held = False
            await self._on_lose()
            with contextlib.suppress(Exception):
                await self._redis.eval(_RELEASE, 1, self.key, self.holder)
        if self._redis is not None:
            await self._redis.aclose()
