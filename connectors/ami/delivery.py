"""Ordered delivery to the sink: one queue, one task, events and link changes in arrival order.

The reader (protocol.py) appends without ever waiting, so a slow sink cannot stall Ping answers.
The queue is bounded: when it is full, new events are dropped (logged at ERROR) and, once the sink
has caught up, `on_overflow` asks the link for a CoreShowChannels resync so the tracker can close
what it missed. Stopping the reader instead would not save those events: Asterisk drops an AMI
client that does not read (manager.conf `writetimeout`), and our own Ping would time out first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from panoramisk.actions import Action

from hub.telephony.ports import PbxEventSink

from .const import DELIVERY_BATCH, GARBAGE_LOG_INTERVAL
from .errors import LinkLost
from .protocol import Event, RateLimitedLog

_LOG = logging.getLogger(__name__)


class Marker:
    """Something other than an event that the sink must see at its place in the stream."""

    async def deliver(self, sink: PbxEventSink) -> None:
        """Hand this marker to the sink."""
        raise NotImplementedError


class LinkChange(Marker):
    """The link went up or down."""

    def __init__(self, up: bool, reason: str) -> None:
        self.up = up
        self.reason = reason

    async def deliver(self, sink: PbxEventSink) -> None:
        """Call sink.on_link."""
        await sink.on_link(self.up, self.reason)


class Resync(Marker):
    """The CoreShowChannels snapshot, placed where Asterisk took it: at its first answer.

    Events that arrive while the list is still streaming in wait behind this marker, so the sink
    gets the snapshot before any event that Asterisk emitted after taking it.
    """

    def __init__(self, action: Action, clock: Callable[[], datetime]) -> None:
        self._action = action
        self._at: datetime | None = None
        self._clock = clock
        action.future.add_done_callback(self._stamp)

    def _stamp(self, _fut: asyncio.Future[Any]) -> None:
        self._at = self._clock()

    async def deliver(self, sink: PbxEventSink) -> None:
        """Wait for the whole list, then call sink.on_resync with the CoreShowChannel events."""
        try:
            # Shielded: cancelling the delivery task at stop must not cancel the action itself.
            answers = await asyncio.shield(self._action.future)
        except LinkLost as err:
            _LOG.warning("resync abandoned: %s", err)
            return
        if not isinstance(answers, list):
            return  # an error answer; the link logs it
        # Every answer is a protocol.Frame, which keeps the plain dict it was parsed into.
        channels = [m.fields for m in answers if m.fields.get("Event") == "CoreShowChannel"]
        await sink.on_resync(channels, self._at or self._clock())


_STOP: Final = object()


class DeliveryQueue:
    """A bounded FIFO of (event, received_at) tuples and markers, drained by one task."""

    def __init__(self, sink: PbxEventSink, limit: int, on_overflow: Callable[[int], None]) -> None:
        self.items: deque[Any] = deque()
        self.limit = limit
        self.dropped = 0
        self._sink = sink
        self._on_overflow = on_overflow
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log_drop = RateLimitedLog(_LOG, logging.ERROR, GARBAGE_LOG_INTERVAL)
        self._log_sink_error = RateLimitedLog(_LOG, logging.ERROR, GARBAGE_LOG_INTERVAL)

    def start(self) -> None:
        """Start the delivery task."""
        self._task = asyncio.create_task(self._run(), name="ami-delivery")

    def drop(self, event: Event) -> None:
        """The queue is full: count and log the event we cannot keep."""
        self.dropped += 1
        self._log_drop(
            "AMI event queue full (%d): the sink is too slow, dropping %s; a resync will follow",
            self.limit,
            event.get("Event"),
        )

    def put(self, marker: Marker) -> None:
        """Queue a marker; markers are never dropped."""
        self.items.append(marker)
        self.wake()

    def wake(self) -> None:
        """Wake the delivery task if it sleeps."""
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def close(self, drain_s: float) -> None:
        """Deliver what is queued (at most `drain_s` seconds), then end the task."""
        task = self._task
        if task is None:
            return
        self._task = None
        self.items.append(_STOP)
        self.wake()
        try:
            async with asyncio.timeout(drain_s):
                await asyncio.shield(task)
        except TimeoutError:
            _LOG.warning(
                "sink too slow at stop: %d queued AMI items not delivered", len(self.items)
            )
            task.cancel()
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _run(self) -> None:
        items = self.items
        sink = self._sink
        wakeup = self._wakeup
        done = 0
        while True:
            if not items:
                if self.dropped:
                    dropped, self.dropped = self.dropped, 0
                    _LOG.error(
                        "AMI sink caught up after %d dropped events; resynchronising", dropped
                    )
                    self._on_overflow(dropped)
                    continue
                wakeup.clear()
                await wakeup.wait()
                continue
            item = items.popleft()
            if item.__class__ is tuple:
                try:
                    await sink.on_event(item[0], item[1])
                except Exception:
                    self._log_sink_error(
                        "sink failed on AMI event %s", item[0].get("Event"), exc_info=True
                    )
                done += 1
                if done >= DELIVERY_BATCH:
                    done = 0
                    await asyncio.sleep(0)
            elif item is _STOP:
                return
            else:
                try:
                    await item.deliver(sink)
                except Exception:
                    _LOG.exception("sink failed on %s", type(item).__name__)
