"""The AMI wire protocol: bytes to frames, frames to events and action answers, on panoramisk.

We keep panoramisk's `AMIProtocol` as the base (its action table and `handle_message`, which
matches answers to actions by ActionID), its `Action` (ActionID generation, serialisation, the
answer future and its list/complete rules) and its `Message` for answers. We replace its
`data_received` and its closing, because on both paths panoramisk 1.4 gets in the way:

- it decodes every TCP read on its own with errors="ignore", so a UTF-8 character split across two
  reads silently vanishes ("Jürgen" arrives as "Jrgen"; checked against 1.4);
- it buffers without limit while no blank line arrives (junk or a hostile peer eats memory);
- it wraps every event in a case-insensitive dict (lower-casing each key, lists for repeated keys,
  an extra "content" key) that the sink would have to copy back into a plain dict: together with
  its regex dispatch that costs two to three times the parse below, per event (bench/bench_ami.py);
- on close it queues unanswered actions to be sent again after the reconnect; for an Originate
  that means a second call. Here every unanswered action fails with LinkLost and nothing is resent.

Events go straight from the parser into the delivery queue as plain `dict[str, str]`, in arrival
order, with no per-event task, copy or callback indirection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from hub.errors import ValidationError

from .const import BANNER_PREFIX, FRAME_END, GARBAGE_LOG_INTERVAL, MAX_FRAME_BYTES
from .errors import LinkLost

_LOG = logging.getLogger(__name__)

Event = dict[str, str]
AnswerHook = Callable[[Action, Message], None]


class RateLimitedLog:
    """Log one kind of message at most once per interval, counting the ones held back."""

    def __init__(self, logger: logging.Logger, level: int, interval: float) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log msg % args unless one was logged less than `interval` seconds ago."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        if self._suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        self._logger.log(self._level, msg, *args, exc_info=exc_info)


class EventQueue(Protocol):
    """Where the protocol puts parsed events: the delivery queue (see delivery.py)."""

    items: deque[Any]
    limit: int

    def drop(self, event: Event) -> None:
        """Called instead of appending when `items` holds `limit` entries."""

    def wake(self) -> None:
        """New items are waiting."""


class Frame(Message):  # type: ignore[misc]
    """A panoramisk Message that also keeps the plain dict it was parsed into."""

    def __init__(self, fields: Event) -> None:
        super().__init__(fields)
        self.fields = fields


def _snippet(text: str | bytes, size: int = 80) -> str:
    """A short printable excerpt of junk for a log line."""
    return repr(text[:size]) + ("..." if len(text) > size else "")


class AmiProtocol(AMIProtocol):  # type: ignore[misc]
    """One AMI connection: parses frames, answers pending actions, queues events in order."""

    closed: bool
    version: str | None

    def __init__(
        self,
        queue: EventQueue,
        clock: Callable[[], datetime],
        on_lost: Callable[[str], None],
        on_originate_response: Callable[[Event], None] | None = None,
    ) -> None:
        self._events = queue
        self._on_originate_response = on_originate_response
        self._clock = clock
        self._on_lost = on_lost
        self._pending = b""
        self._discarding = False
        self._banner_seen = False
        self._close_reason = ""
        self._answer_hooks: dict[str, AnswerHook] = {}
        self.lost_reason = ""
        self.lost = asyncio.Event()
        self._log_garbage = RateLimitedLog(_LOG, logging.WARNING, GARBAGE_LOG_INTERVAL)
        self._log_unknown = RateLimitedLog(_LOG, logging.WARNING, GARBAGE_LOG_INTERVAL)
        self._log_oversize = RateLimitedLog(_LOG, logging.WARNING, GARBAGE_LOG_INTERVAL)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set up panoramisk's per-connection state (action table, version)."""
        super().connection_made(transport)
        self.log = _LOG
        self.encoding = "utf-8"

    def data_received(self, data: bytes) -> None:
        """Split the stream into frames; only complete frames are decoded, never a partial one."""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        if self._discarding:
            data = self._skip_oversize(data)
            if self._discarding:
                return
        if not self._banner_seen:
            data = self._take_banner(data)
        end = data.rfind(FRAME_END)
        if end < 0:
            self._keep(data)
            return
        self._keep(data[end + 4 :])
        # Frames end on the ASCII bytes CRLF CRLF, so this cut never splits a UTF-8 sequence.
        self._handle_frames(data[:end].decode("utf-8", "replace").split("\r\n\r\n"))
        self._events.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every unanswered action with LinkLost: nothing is ever sent again by itself."""
        if self.closed:
            return
        self.closed = True
        if self._close_reason:
            reason = self._close_reason
        elif exc is not None:
            reason = f"connection lost: {exc}"
        else:
            reason = "Asterisk closed the connection"
        self.lost_reason = reason
        err = LinkLost(reason)
        for action in {id(a): a for a in self.responses.values()}.values():
            fut = action.future
            if not fut.done():
                fut.set_exception(err)
                # Marks the exception as seen: a ping nobody waits for any more must not log
                # "exception was never retrieved"; whoever still awaits it gets LinkLost.
                fut.exception()
        self.responses.clear()
        self._answer_hooks.clear()
        self.lost.set()
        self._on_lost(reason)

    # -- actions ---------------------------------------------------------------------------------

    def send_action(
        self,
        fields: Mapping[str, str | Sequence[str]],
        *,
        on_answer: AnswerHook | None = None,
        as_list: bool | None = None,
    ) -> Action:
        """Write one action; `on_answer` runs at its first answer, in stream order with events."""
        for key, value in fields.items():
            values = [value] if isinstance(value, str) else value
            for item in (key, *values):
                if "\r" in item or "\n" in item:
                    raise ValidationError(f"AMI {key} must not contain a line break", field=key)
        if self.closed:
            raise LinkLost(self.lost_reason or "not connected")
        action = Action(dict(fields), as_list=as_list)
        if action.id in self.responses:
            raise ValidationError(f"ActionID {action.id!r} is already waiting for an answer")
        self.responses[action.id] = action
        if on_answer is not None:
            self._answer_hooks[action.id] = on_answer
        # Not panoramisk's send(): on an encoding error it logs the whole action, Login secret
        # included, and leaves the future pending for ever.
        self.transport.write(str(action).encode("utf-8"))
        return action

    def forget(self, action: Action) -> None:
        """Stop waiting for an action's answer (after a timeout); a late answer is ignored."""
        self.responses.pop(action.id, None)
        self._answer_hooks.pop(action.id, None)

    def close(self, reason: str = "closed by commhub") -> None:
        """Close after sending what is buffered (the Logoff); connection_lost follows."""
        self._close_reason = self._close_reason or reason
        self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (a dead link has nothing worth flushing)."""
        self._close_reason = self._close_reason or reason
        self.transport.abort()

    # -- parsing ---------------------------------------------------------------------------------

    def _handle_frames(self, frames: list[str]) -> None:
        """Parse frames in order: events to the queue, answers to their actions."""
        at = self._clock()
        queue = self._events
        items = queue.items
        limit = queue.limit
        responses = self.responses
        for frame in frames:
            fields: Event = {}
            bad = 0
            for line in frame.split("\r\n"):
                key, sep, value = line.partition(": ")
                if sep:
                    if key in fields:
                        # Repeated keys (ChanVariable) are kept, one value per line: an AMI value
                        # never holds a line break, so nothing is lost or confused.
                        fields[key] += "\n" + value
                    else:
                        fields[key] = value
                elif line:
                    if line[-1] == ":" and " " not in line:
                        fields.setdefault(line[:-1], "")
                    else:
                        bad += 1
            if bad:
                self._log_garbage(
                    "skipped %d malformed AMI line(s) in frame %s", bad, _snippet(frame)
                )
            action_id = fields.get("ActionID")
            if action_id is not None:
                action = responses.get(action_id)
                if action is not None:
                    self._answer(action_id, Frame(fields))
                    continue
            if "Event" in fields:
                if len(items) < limit:
                    items.append((fields, at))
                else:
                    queue.drop(fields)
                if (
                    action_id is not None
                    and fields["Event"] == "OriginateResponse"
                    and self._on_originate_response is not None
                ):
                    self._on_originate_response(fields)
            elif "Response" in fields:
                _LOG.debug("answer to no pending action: %s", _snippet(frame))
            elif fields:
                self._log_unknown(
                    "skipped AMI frame without Event or Response: %s", _snippet(frame)
                )

    def _answer(self, action_id: str, message: Frame) -> None:
        """Hand an answer to its action via panoramisk, after the hook that marks its position."""
        hook = self._answer_hooks.pop(action_id, None)
        try:
            if hook is not None:
                hook(self.responses[action_id], message)
            self.handle_message(message)
        except Exception:
            # An exception here would make asyncio drop the connection: one odd answer must not.
            _LOG.exception("AMI answer to %s not understood: %s", action_id, message.fields)

    def _keep(self, rest: bytes) -> None:
        """Buffer an incomplete frame, unless it is already too large to be a real one."""
        if len(rest) > MAX_FRAME_BYTES:
            self._log_oversize(
                "discarding an AMI frame over %d bytes: %s", MAX_FRAME_BYTES, _snippet(rest)
            )
            self._discarding = True
            self._pending = rest[-3:]
        else:
            self._pending = rest

    def _skip_oversize(self, data: bytes) -> bytes:
        """While discarding an oversize frame, drop bytes up to the next frame end."""
        end = data.find(FRAME_END)
        if end < 0:
            self._pending = data[-3:]
            return b""
        self._discarding = False
        return data[end + 4 :]

    def _take_banner(self, data: bytes) -> bytes:
        """Read "Asterisk Call Manager/<version>" off the first line, if it is there."""
        if len(data) < len(BANNER_PREFIX) and BANNER_PREFIX.startswith(data):
            return data
        if not data.startswith(BANNER_PREFIX):
            self._banner_seen = True
            _LOG.warning("peer did not greet like Asterisk AMI: %s", _snippet(data))
            return data
        eol = data.find(b"\r\n")
        if eol < 0:
            return data if len(data) < 200 else self._no_banner(data)
        self._banner_seen = True
        self.version = data[len(BANNER_PREFIX) : eol].decode("ascii", "replace").strip()
        return data[eol + 2 :]

    def _no_banner(self, data: bytes) -> bytes:
        self._banner_seen = True
        _LOG.warning("AMI banner line too long, treating it as data: %s", _snippet(data))
        return data
