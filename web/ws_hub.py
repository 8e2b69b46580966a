"""Open websockets by user, and delivery of bus events to exactly the sockets entitled to them.

Topics: "user:<id>" (that user's sockets only: screen-pops, reminders), "role:<role>"
(everyone holding that role, e.g. supervisors' live calls; admins get every role topic)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class SocketHub:
    """Sockets keyed by user; each socket has a bounded outbox so one slow browser stalls nobody."""

    OUTBOX = 256

    def __init__(self) -> None:
        self._by_user: dict[int, set[_Client]] = defaultdict(set)

    def add(self, user_id: int, role: str, ws: web.WebSocketResponse) -> _Client:
        """Register an open socket."""
        client = _Client(user_id, role, ws, self.OUTBOX)
        self._by_user[user_id].add(client)
        return client

    def remove(self, client: _Client) -> None:
        """Forget a closed socket."""
        clients = self._by_user.get(client.user_id)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._by_user[client.user_id]
        client.close()

    def deliver(self, topic: str, event: dict[str, Any]) -> None:
        """Bus handler: queue the event on every socket the topic addresses."""
        kind, _, target = topic.partition(":")
        text = json.dumps(event)
        if kind == "user":
            try:
                user_id = int(target)
            except ValueError:
                return
            for client in self._by_user.get(user_id, ()):
                client.push(text)
        elif kind == "role":
            for clients in self._by_user.values():
                for client in clients:
                    if client.role == target or client.role == "admin":
                        client.push(text)

    def count(self, user_id: int | None = None) -> int:
        """Open sockets (of one user, or all)."""
        if user_id is not None:
            return len(self._by_user.get(user_id, ()))
        return sum(len(c) for c in self._by_user.values())

    async def close_all(self) -> None:
        """Close every socket (shutdown)."""
        for clients in list(self._by_user.values()):
            for client in list(clients):
                with contextlib.suppress(Exception):
                    await client.ws.close(code=1001, message=b"server shutdown")
                client.close()
        self._by_user.clear()


class _Client:
    def __init__(self, user_id: int, role: str, ws: web.WebSocketResponse, size: int) -> None:
        self.user_id = user_id
        self.role = role
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.dropped = 0
        self.writer = asyncio.create_task(self._write(), name=f"ws-writer-{user_id}")

    def push(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100, 1000):
                log.warning(
                    "websocket of user %s is not reading; %d events dropped",
                    self.user_id,
                    self.dropped,
                )

    async def _write(self) -> None:
        while True:
            text = await self.queue.get()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    def close(self) -> None:
        self.writer.cancel()
