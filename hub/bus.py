"""The event bus: in-process by default, Redis pub/sub when several processes share the load.

Events are JSON objects with a "type"; they are published only after the database write they
describe has committed (see `Publisher.after_commit`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Event = dict[str, Any]
Handler = Callable[[str, Event], None]


class Bus(Protocol):
    """Publish JSON events on topics; subscribers get every event of their topics."""

    async def publish(self, topic: str, event: Event) -> None:
        """Send one event to every subscriber of `topic`, in any process."""

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call `handler(topic, event)` for every event in this process; returns unsubscribe."""

    async def start(self) -> None:
        """Open connections."""

    async def close(self) -> None:
        """Close connections."""


class LocalBus:
    """In-process bus. Events are round-tripped through JSON so an unserialisable one fails here,
    not in production behind Redis."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Forget subscribers."""
        self._handlers.clear()

    async def publish(self, topic: str, event: Event) -> None:
        """Deliver synchronously to local handlers."""
        self._deliver(topic, json.loads(json.dumps(event)))

    def _deliver(self, topic: str, event: Event) -> None:
        for handler in list(self._handlers):
            try:
                handler(topic, event)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("bus handler failed for %s", topic)

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Register a handler."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None


class RedisBus(LocalBus):
    """Redis pub/sub on one channel: every process receives every event and delivers locally."""

    CHANNEL = "commhub:events"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Connect and start listening."""
        import redis.asyncio as redis_async

        self._redis = redis_async.from_url(self._url)
        await self._redis.ping()
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    self._ready.set()
                    backoff = 0.5
                    async for message in _messages(pubsub):
                        payload = json.loads(message)
                        self._deliver(payload["topic"], payload["event"])
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("redis bus link lost (%s); retrying in %.1fs", err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def publish(self, topic: str, event: Event) -> None:
        """Publish through Redis; local delivery happens when it comes back."""
        await self._redis.publish(self.CHANNEL, json.dumps({"topic": topic, "event": event}))

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()
        await super().close()


async def _messages(pubsub: Any) -> AsyncIterator[bytes]:
    async for message in pubsub.listen():
        if message.get("type") == "message":
            yield message["data"]


def make_bus(redis_url: str) -> Bus:
    """The bus the configuration asks for."""
    return RedisBus(redis_url) if redis_url else LocalBus()
