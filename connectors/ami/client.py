"""The AMI link: login, keepalive, reconnect with backoff, resync after login, and PBX commands.

Policy, in short (the package's start() adds the serve-time view: log and carry on):
- start() returns after the first login. A wrong secret raises AuthError at once and nothing is
  retried. An unreachable Asterisk raises RetryableError, and the connector keeps trying in the
  background (capped exponential backoff, full jitter) until stop().
- A login refused later, on a reconnect, is retried only every `reconnect_max` seconds with an
  ERROR line each time: no storm, and the link heals by itself once Asterisk accepts us again.
- Ping every `ping_interval`; no answer within `ping_timeout` means a dead link: it is dropped and
  re-established (panoramisk would wait for TCP to notice, which can take hours).
- After every login CoreShowChannels is sent and its snapshot reaches the sink (on_resync) before
  any event Asterisk emitted after taking it.
- An Originate is sent at most once. If the link drops or times out before its answer, the caller
  gets OriginateOutcomeUnknown (a RetryableError) that says the call may or may not exist.

Why not panoramisk's `Manager`: everything it adds over the protocol is what we must change. Its
Pings are fire-and-forget (a silent dead link is never noticed), it reconnects every
`reconnect_timeout` seconds with no backoff, also after a refused login (a storm against
Asterisk's security log), it truncates its timers with int() (0.5 s becomes a busy loop), and it
re-sends unanswered actions after a reconnect. So this module owns the connection loop and uses
panoramisk's protocol, Action and Message underneath (see protocol.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from panoramisk.actions import Action
from panoramisk.message import Message

from hub.errors import AuthError, ConfigError, PermanentError, RetryableError, ValidationError
from hub.telephony.ports import OriginateRequest, PbxEventSink

from .const import (
    DEFAULT_EVENT_QUEUE_SIZE,
    LOGOFF_TIMEOUT,
    MAX_TRACKED_ORIGINATES,
    ORIGINATE_ACTION_PREFIX,
    STOP_DRAIN_TIMEOUT,
)
from .delivery import DeliveryQueue, LinkChange, Resync
from .errors import LinkLost, OriginateOutcomeUnknown, unreachable
from .protocol import AmiProtocol, EventQueue

_LOG = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class AmiSettings:
    """Where and how to reach Asterisk's manager interface; times in seconds."""

    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    event_queue_size: int = DEFAULT_EVENT_QUEUE_SIZE

    def __post_init__(self) -> None:
        for name in ("host", "username", "secret"):
            value = getattr(self, name)
            if not value:
                raise ConfigError(f"ami.{name} is required")
            if "\r" in value or "\n" in value:
                raise ConfigError(f"ami.{name} must not contain a line break")
        for name in (
            "ping_interval",
            "ping_timeout",
            "reconnect_min",
            "connect_timeout",
            "action_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ami.{name} must be positive")
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError("ami.reconnect_max must not be below ami.reconnect_min")
        if self.event_queue_size < 1:
            raise ConfigError("ami.event_queue_size must be at least 1")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AmiSettings:
        """Build from the [ami] config section, ignoring keys that are not link settings."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in section and f.name in ("host", "port", "username", "secret"):
                raise ConfigError(f"ami.{f.name} is required")
            if f.name in section:
                kind = {"int": int, "float": float}.get(str(f.type), str)
                try:
                    kwargs[f.name] = kind(section[f.name])
                except (TypeError, ValueError) as err:
                    raise ConfigError(f"ami.{f.name}: {err}") from err
        return cls(**kwargs)

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"{self.host}:{self.port}"


def backoff_delay(attempt: int, low: float, high: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(high, low * 2**attempt))."""
    return float(rand() * min(high, low * 2.0 ** min(attempt, 32)))


class _DiscardEvents:
    """An EventQueue that keeps nothing: check() does not want the events of its short login."""

    def __init__(self) -> None:
        self.items: deque[Any] = deque(maxlen=0)
        self.limit = 1

    def drop(self, event: dict[str, str]) -> None:
        """Never called: the deque never fills."""

    def wake(self) -> None:
        """Nobody to wake."""


async def _open_session(
    settings: AmiSettings,
    queue: EventQueue,
    clock: Clock,
    on_lost: Callable[[str], None],
    on_login: Callable[[AmiProtocol, Message], None] | None = None,
    on_originate_response: Callable[[dict[str, str]], None] | None = None,
) -> AmiProtocol:
    """Connect and log in with Events: on; the wrapped errors say what failed and where."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(settings.connect_timeout):
            _, proto = await loop.create_connection(
                lambda: AmiProtocol(queue, clock, on_lost, on_originate_response),
                settings.host,
                settings.port,
            )
    except (OSError, TimeoutError) as err:
        raise unreachable(settings.address, err) from err
    assert isinstance(proto, AmiProtocol)
    try:
        await _login(settings, proto, on_login)
    except BaseException:
        proto.abort("login failed")
        raise
    return proto


async def _login(
    settings: AmiSettings,
    proto: AmiProtocol,
    on_login: Callable[[AmiProtocol, Message], None] | None,
) -> None:
    def hook(_action: Action, answer: Message) -> None:
        if on_login is not None and answer.response == "Success":
            on_login(proto, answer)

    action = proto.send_action(
        {
            "Action": "Login",
            "Username": settings.username,
            "Secret": settings.secret,
            "Events": "on",
        },
        on_answer=hook,
    )
    try:
        async with asyncio.timeout(settings.connect_timeout):
            answer = await asyncio.shield(action.future)
    except TimeoutError as err:
        raise RetryableError(
            f"no answer to Login from {settings.address} within {settings.connect_timeout:g} s"
            " (is this an Asterisk AMI port?)"
        ) from err
    except LinkLost as err:
        raise RetryableError(
            f"{settings.address} closed the connection during login: {err}"
        ) from err
    if answer.response != "Success":
        raise AuthError(
            f"Asterisk AMI at {settings.address} refused login for user {settings.username!r}: "
            f"{answer.message or answer.response or 'no reason given'}"
        )


async def _close(proto: AmiProtocol, reason: str) -> None:
    """Log off politely if we can, then close and wait until the socket is gone."""
    if proto.closed:
        return
    with contextlib.suppress(RetryableError, TimeoutError):
        logoff = proto.send_action({"Action": "Logoff"})
        async with asyncio.timeout(LOGOFF_TIMEOUT):
            await asyncio.shield(logoff.future)
    proto.close(reason)
    try:
        async with asyncio.timeout(LOGOFF_TIMEOUT):
            await proto.lost.wait()
    except TimeoutError:
        proto.abort(reason)
        await proto.lost.wait()


async def check(settings: AmiSettings) -> None:
    """Log in once and off again: "check a connection before saving it". Raises hub.errors."""
    proto = await _open_session(settings, _DiscardEvents(), utc_now, lambda _reason: None)
    await _close(proto, "check done")


class AmiConnector:
    """The AMI client: feeds a PbxEventSink and implements hub.telephony.ports.PbxCommands."""

    check = staticmethod(check)

    def __init__(
        self,
        settings: AmiSettings,
        sink: PbxEventSink,
        *,
        clock: Clock = utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rand = rand
        self._queue = DeliveryQueue(sink, settings.event_queue_size, self._overflowed)
        self._proto: AmiProtocol | None = None
        self._logged_in = False
        self._link_announced: bool | None = None
        self._resync_wanted = False
        self._poke = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        # Originates queued and not yet resolved by an OriginateResponse, for the log only.
        self._originates: OrderedDict[str, str] = OrderedDict()

    @property
    def connected(self) -> bool:
        """True while logged in on a live connection."""
        return self._logged_in and self._proto is not None and not self._proto.closed

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Return after the first login; AuthError stops here, RetryableError keeps retrying."""
        if self._supervisor is not None:
            raise RuntimeError("AmiConnector already started")
        self._queue.start()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(first), name="ami-link")
        try:
            await asyncio.shield(first)
        except AuthError:
            await self.stop()
            raise
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Log off, close the link, deliver what is queued, and end every task we started."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait({supervisor})
        proto = self._proto
        if proto is not None:
            await _close(proto, "connector stopped")
        self._logged_in = False
        self._announce_down("connector stopped")
        await self._queue.close(STOP_DRAIN_TIMEOUT)

    # -- the link --------------------------------------------------------------------------------

    async def _supervise(self, first: asyncio.Future[None]) -> None:
        try:
            await self._keep_linked(first)
        finally:
            if not first.done():  # stop() during start(): start() must not wait for ever
                first.set_exception(RetryableError("AMI connector stopped before the first login"))

    async def _keep_linked(self, first: asyncio.Future[None]) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                proto = await _open_session(
                    s,
                    self._queue,
                    self._clock,
                    self._link_lost,
                    self._logged_in_now,
                    self._originate_outcome,
                )
            except AuthError as err:
                self._announce_down(str(err))
                if not first.done():
                    first.set_exception(err)
                    return
                delay = s.reconnect_max
                _LOG.error("%s; trying again in %.0f s", err, delay)
            except Exception as exc:
                # RetryableError, or a bug of ours: either way the link must come back.
                failure = (
                    exc if isinstance(exc, RetryableError) else RetryableError(f"AMI: {exc!r}")
                )
                if failure is not exc:
                    _LOG.exception("AMI connect failed unexpectedly")
                self._announce_down(str(failure))
                delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max, self._rand)
                attempt += 1
                _LOG.warning("AMI: %s; trying again in %.2f s", failure, delay)
                if not first.done():
                    first.set_exception(failure)
            else:
                self._proto = proto
                if not first.done():
                    first.set_result(None)
                up_since = loop.time()
                try:
                    reason = await self._serve(proto)
                except Exception as exc:
                    _LOG.exception("AMI link keeper failed unexpectedly; reconnecting")
                    proto.abort(f"internal error: {exc!r}")
                    await proto.lost.wait()
                    reason = proto.lost_reason
                self._logged_in = False
                self._announce_down(reason)
                if loop.time() - up_since >= s.reconnect_max:
                    attempt = 0  # it was a stable link: reconnect fast
                delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max, self._rand)
                attempt += 1
                _LOG.warning(
                    "AMI link to %s down (%s); reconnecting in %.2f s", s.address, reason, delay
                )
            await asyncio.sleep(delay)

    def _logged_in_now(self, proto: AmiProtocol, _answer: Message) -> None:
        # Runs at the Login answer's place in the stream, so on_link(True) precedes every event.
        self._logged_in = True
        self._link_announced = True
        version = proto.version or "unknown version"
        s = self._settings
        reason = f"logged in to {s.address} as {s.username!r} (Asterisk Call Manager/{version})"
        _LOG.info("AMI %s", reason)
        self._queue.put(LinkChange(True, reason))

    def _originate_outcome(self, fields: dict[str, str]) -> None:
        # Asterisk sends every OriginateResponse to every AMI client: log only our own.
        action_id = fields.get("ActionID", "")
        what = self._originates.pop(action_id, None)
        if what is None:
            return
        if fields.get("Response") == "Success":
            _LOG.info("AMI %s answered: %s", what, fields.get("Channel"))
        else:
            _LOG.warning(
                "AMI %s failed: Response=%s Reason=%s",
                what,
                fields.get("Response"),
                fields.get("Reason"),
            )

    def _link_lost(self, _reason: str) -> None:
        self._logged_in = False
        self._poke.set()

    def _announce_down(self, reason: str) -> None:
        if self._link_announced is not False:
            self._link_announced = False
            self._queue.put(LinkChange(False, reason))

    def _overflowed(self, _dropped: int) -> None:
        self._resync_wanted = True
        self._poke.set()

    async def _serve(self, proto: AmiProtocol) -> str:
        """Keep a logged-in link alive until it drops; returns why it dropped.

        Pings keep going while a CoreShowChannels list is streaming in: a link that dies during
        the resync is noticed within ping_interval + ping_timeout, not after action_timeout.
        """
        loop = asyncio.get_running_loop()
        s = self._settings
        self._resync_wanted = False  # this login resyncs anyway
        resync: Action | None = None
        resync_deadline = 0.0
        next_ping = loop.time() + s.ping_interval
        try:
            resync, resync_deadline = self._send_resync(proto), loop.time() + s.action_timeout
            while not proto.closed:
                self._poke.clear()
                now = loop.time()
                if resync is not None and resync.future.done():
                    self._report_resync(resync)
                    resync = None
                if resync is None and self._resync_wanted:
                    self._resync_wanted = False
                    resync, resync_deadline = self._send_resync(proto), now + s.action_timeout
                if resync is not None and now >= resync_deadline:
                    # Dropping the link fails the action, releasing the Resync marker with it.
                    proto.abort(f"CoreShowChannels not complete within {s.action_timeout:g} s")
                    break
                if now >= next_ping:
                    await self._ping(proto)
                    next_ping = loop.time() + s.ping_interval
                    continue
                wake_at = min(next_ping, resync_deadline) if resync is not None else next_ping
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wake_at - now):
                        await self._poke.wait()
        except LinkLost:
            pass
        await proto.lost.wait()
        return proto.lost_reason

    async def _ping(self, proto: AmiProtocol) -> None:
        timeout = self._settings.ping_timeout
        action = proto.send_action({"Action": "Ping"})
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(action.future)
        except TimeoutError:
            proto.forget(action)
            reason = f"no answer to Ping within {timeout:g} s (silent dead link)"
            _LOG.warning("AMI link to %s: %s; dropping it", self._settings.address, reason)
            proto.abort(reason)

    def _send_resync(self, proto: AmiProtocol) -> Action:
        """Ask for the live channels; the Resync marker takes the snapshot to the sink in order."""

        def hook(action: Action, answer: Message) -> None:
            if answer.response == "Success":
                self._queue.put(Resync(action, self._clock))

        action = proto.send_action({"Action": "CoreShowChannels"}, on_answer=hook)
        action.future.add_done_callback(lambda _fut: self._poke.set())
        return action

    def _report_resync(self, action: Action) -> None:
        if action.future.cancelled() or action.future.exception() is not None:
            return  # LinkLost: the link's own end is reported
        answers = action.future.result()
        if isinstance(answers, list):
            live = sum(1 for m in answers if m.event == "CoreShowChannel")
            _LOG.info("AMI resync: %d live channel(s)", live)
        else:
            _LOG.error(
                "AMI resync impossible, Asterisk answered CoreShowChannels with %s: %s"
                " (the AMI user needs read access to 'system' or 'reporting')",
                answers.response,
                answers.message,
            )

    def _live_link(self, what: str) -> AmiProtocol:
        proto = self._proto
        if proto is None or proto.closed or not self._logged_in:
            raise RetryableError(
                f"not connected to Asterisk AMI at {self._settings.address}: {what} not sent"
            )
        return proto

    # -- commands --------------------------------------------------------------------------------

    async def originate(self, request: OriginateRequest) -> str:
        """Send one async Originate (never twice); returns its ActionID once Asterisk queued it."""
        for name in ("channel", "exten", "context"):
            if not getattr(request, name):
                raise ValidationError(f"originate needs a {name}", field=name)
        action_id = request.request_id or f"{ORIGINATE_ACTION_PREFIX}{uuid.uuid4().hex}"
        proto = self._live_link("Originate")
        action_fields: dict[str, str | list[str]] = {
            "Action": "Originate",
            "ActionID": action_id,
            "Channel": request.channel,
            "Context": request.context,
            "Exten": request.exten,
            "Priority": "1",
            "Timeout": str(round(request.timeout_s * 1000)),
            "Async": "true",
        }
        if request.caller_id:
            action_fields["CallerID"] = request.caller_id
        if request.variables:
            action_fields["Variable"] = [f"{k}={v}" for k, v in request.variables.items()]
        # as_list=False: the future resolves on "Originate successfully queued"; panoramisk would
        # otherwise hold it until the OriginateResponse event, which must reach the sink instead.
        what = f"Originate {action_id} ({request.channel} -> {request.exten}@{request.context})"
        action = proto.send_action(action_fields, as_list=False)
        # Before any await: the OriginateResponse may arrive in the same read as the answer.
        self._originates[action_id] = what
        while len(self._originates) > MAX_TRACKED_ORIGINATES:
            self._originates.popitem(last=False)
        timeout = self._settings.action_timeout
        try:
            async with asyncio.timeout(timeout):
                answer = await asyncio.shield(action.future)
        except LinkLost as err:
            raise OriginateOutcomeUnknown(
                f"AMI link lost before Asterisk answered {what}: the call may or may not have been"
                f" placed; it is not resent ({err})"
            ) from err
        except TimeoutError as err:
            proto.forget(action)
            raise OriginateOutcomeUnknown(
                f"no answer to {what} within {timeout:g} s: the call may or may not have been"
                " placed; it is not resent"
            ) from err
        if answer.response != "Success":
            self._originates.pop(action_id, None)
            raise PermanentError(f"Asterisk refused {what}: {answer.message or answer.response}")
        _LOG.info("AMI %s queued", what)
        return action_id

    async def hangup(self, channel: str) -> None:
        """Hang up one channel; PermanentError if Asterisk refuses (e.g. no such channel)."""
        if not channel:
            raise ValidationError("hangup needs a channel", field="channel")
        proto = self._live_link("Hangup")
        action = proto.send_action({"Action": "Hangup", "Channel": channel})
        timeout = self._settings.action_timeout
        try:
            async with asyncio.timeout(timeout):
                answer = await asyncio.shield(action.future)
        except TimeoutError as err:
            proto.forget(action)
            raise RetryableError(f"no answer to Hangup {channel} within {timeout:g} s") from err
        except LinkLost as err:
            raise RetryableError(
                f"AMI link lost before Asterisk answered Hangup {channel}: {err}"
            ) from err
        if answer.response != "Success":
            raise PermanentError(
                f"Asterisk refused Hangup {channel}: {answer.message or answer.response}"
            )
