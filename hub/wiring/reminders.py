"""Wire the reminder notifier: due reminders pop on their assignee's screen."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

from hub.reminders import run_due_notifier
from hub.runtime import wiring
from hub.services import Hub


@wiring("reminders")
async def setup(hub: Hub, stack: AsyncExitStack) -> None:
    """Start the notifier task; cancel it on shutdown."""
    task = asyncio.create_task(run_due_notifier(hub), name="reminder-notifier")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
