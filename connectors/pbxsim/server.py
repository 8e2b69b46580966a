"""PbxSimulator: an AMI server over TCP that behaves like Asterisk 20+ for commhub's tests.

It speaks the manager protocol byte for byte as the recorded Asterisk 22 does (banner, CRLF
frames, responses echoing ActionID), runs call scenarios that emit the events a real PBX emits,
replays recorded traces, and offers fault injection (dropped sockets, a silent link, garbage,
restart on the same port) for the AMI connector's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from connectors.pbxsim.frames import BANNER, Fields, Frame, FrameParser, encode_frame
from connectors.pbxsim.model import UNKNOWN, Channel, cause_text
from connectors.pbxsim.replay import Chunk, load_trace
from connectors.pbxsim.scenarios import (
    CALL,
    SCENARIOS,
    SCRIPTS,
    CallParams,
    CallRuntime,
    HangupRequested,
)

log = logging.getLogger(__name__)

ALL_CLASSES = frozenset(
    {
        "system",
        "call",
        "log",
        "verbose",
        "command",
        "agent",
        "user",
        "config",
        "dtmf",
        "reporting",
        "cdr",
        "dialplan",
        "originate",
        "agi",
        "cc",
        "aoc",
        "test",
        "security",
        "message",
    }
)
# Asterisk ends a session whose socket will not drain; so do we, past this backlog.
MAX_BACKLOG = 64 << 20
UNKNOWN_COMMAND = (
    "Invalid/unknown command: {}. Use Action: ListCommands to show available commands."
)
DEFAULT_DEVICES = {str(ext): f"PJSIP/{ext}" for ext in range(200, 210)}


def _true(value: str | None) -> bool:
    """ast_true()."""
    return (value or "").strip().lower() in ("yes", "true", "y", "t", "1", "on")


def _false(value: str | None) -> bool:
    """ast_false()."""
    return (value or "").strip().lower() in ("no", "false", "n", "f", "0", "off")


def parse_event_mask(value: str | None) -> frozenset[str]:
    """What a Login `Events:` or Events `EventMask:` header lets through."""
    if value is None or _true(value) or value.strip().lower() == "all":
        return ALL_CLASSES
    if _false(value) or value.strip().lower() == "none" or not value.strip():
        return frozenset()
    if value.strip().isdigit():
        return ALL_CLASSES
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


def parse_callerid(value: str | None) -> tuple[str, str] | None:
    """`"Name" <number>` (or a bare number) as (number, name)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].partition("<")
        return number.strip() or UNKNOWN, name.strip().strip('"') or UNKNOWN
    return text, UNKNOWN


class _Session:
    """One connected AMI client."""

    def __init__(
        self, sim: PbxSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.logged_in = False
        self.username = ""
        self.mask: frozenset[str] = ALL_CLASSES
        self.banner_sent = False
        self.challenge = ""
        self.session_id = f"0x{secrets.randbits(44):x}"
        self.tasks: set[asyncio.Task[None]] = set()

    def wants(self, privilege: str) -> bool:
        """Whether an event of this privilege reaches the session."""
        classes = {part for part in privilege.split(",") if part and part != "all"}
        return bool(classes & self.mask)

    def send(self, data: bytes) -> None:
        """Queue bytes to the client unless its socket is going away."""
        if self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > self.sim.max_backlog:
            log.warning("pbxsim: dropping a client that stopped reading")
            transport.abort()
            return
        self.writer.write(data)

    def send_banner(self) -> None:
        """The greeting line Asterisk sends on connect."""
        if not self.banner_sent:
            self.banner_sent = True
            self.send(BANNER)

    def respond(
        self,
        frame: Frame,
        response: str,
        message: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A response frame: Response, ActionID (echoed when given), extras, Message."""
        fields: Fields = [("Response", response)]
        action_id = frame.get("ActionID")
        if action_id:
            fields.append(("ActionID", action_id))
        fields.extend(extra)
        if message is not None:
            fields.append(("Message", message))
        self.send(encode_frame(fields))

    def address(self, local: bool) -> str:
        """IPV4/TCP/host/port as Asterisk's security events write it."""
        info = self.writer.get_extra_info("sockname" if local else "peername") or ("", 0)
        host, port = str(info[0]), int(info[1])
        family = "IPV6" if ":" in host else "IPV4"
        return f"{family}/TCP/{host}/{port}"


class PbxSimulator:
    """A protocol-level Asterisk: AMI over TCP, call scenarios, trace replay, fault injection."""

    SCENARIOS: tuple[str, ...] = SCENARIOS

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "hub",
        secret: str = "hubsecret",  # noqa: S107 - the simulator's documented test credential
        systemname: str = "pbxsim",
        devices: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.username = username
        self.secret = secret
        self.systemname = systemname
        self.devices = dict(DEFAULT_DEVICES if devices is None else devices)
        self.actions: list[dict[str, str]] = []
        # Parameters merged into calls started by an Originate action (ring, talk, ...).
        self.click_to_call_options: dict[str, Any] = {}
        # When set, every client gets this trace right after logging in (`pbx-sim --replay`).
        self.login_replay: tuple[Path, bool] | None = None
        # Asterisk sleeps a second before refusing a login; tests want it fast.
        self.auth_fail_delay = 0.0
        # Bytes queued for a client that stopped reading before we cut it off.
        self.max_backlog = MAX_BACKLOG
        self.calls_placed = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._channels: dict[str, Channel] = {}
        self._silent = False
        self._uid_seq = itertools.count()
        self._chan_seq = itertools.count()
        self._started_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (the bound one once started with port=0)."""
        return self._port

    async def start(self) -> None:
        """Listen for AMI clients (again on the same port after a stop)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self._port)
        sockets = self._server.sockets or ()
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        self._started_at = time.monotonic()

    async def stop(self, *, keep_calls: bool = False) -> None:
        """Stop like an Asterisk restart: sockets cut, calls gone (unless keep_calls)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop_clients()
        handlers = set(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=2)
        if not keep_calls:
            calls = set(self._calls)
            for task in calls:
                task.cancel()
            if calls:
                await asyncio.wait(calls, timeout=2)
            self._channels.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def __aenter__(self) -> PbxSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- calls ----------------------------------------------------------------------------

    async def place_call(
        self,
        scenario: str,
        *,
        caller: str = "+4930123456",
        extension: str = "201",
        **kw: Any,
    ) -> str:
        """Start a scenario as a task and return its Linkedid."""
        if scenario not in SCRIPTS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        params = CallParams(caller=caller, extension=extension, **kw)
        runtime = CallRuntime(self, scenario, params)
        self._start_call(runtime)
        return runtime.linkedid

    def _start_call(self, runtime: CallRuntime) -> asyncio.Task[None]:
        self.calls_placed += 1
        task = asyncio.create_task(self._run_call(runtime), name=f"pbxsim-{runtime.linkedid}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return task

    async def _run_call(self, runtime: CallRuntime) -> None:
        try:
            try:
                await SCRIPTS[runtime.scenario](runtime)
            except HangupRequested:
                runtime.teardown()
            else:
                runtime.finish()
            runtime.close_cdrs()
        except asyncio.CancelledError:
            # A restart: channels vanish without events, as they do when Asterisk dies.
            for chan in runtime.channels:
                chan.alive = False
                self._unregister(chan)
            raise
        except Exception:
            log.exception("pbxsim: scenario %s failed", runtime.scenario)
            runtime.finish()
        finally:
            waiter = runtime.originate_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(False)

    async def wait_idle(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - agreed API
        """Wait until every running call has ended."""
        async with asyncio.timeout(timeout):
            while self._calls:
                await asyncio.wait(set(self._calls))

    async def run_load(
        self,
        rate: float,
        scenario: str | None = None,
        *,
        duration: float | None = None,
        seed: int | None = None,
        **kw: Any,
    ) -> int:
        """Start `rate` new calls per second (one scenario or a mix) until cancelled or
        `duration` seconds have passed; returns how many were started."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        rng = random.Random(seed)
        names = [scenario] if scenario else list(SCENARIOS)
        extensions = sorted(self.devices) or ["201"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        started = 0
        while duration is None or loop.time() - began < duration:
            name = names[started % len(names)]
            ext = rng.choice(extensions)
            others = [e for e in extensions if e != ext] or [ext]
            params: dict[str, Any] = {"transfer_to": rng.choice(others), **kw}
            if name == "queue" and "members" not in kw:
                params["members"] = [ext, params["transfer_to"]]
            caller = f"+49{rng.choice(('30', '40', '89', '221'))}{rng.randrange(10**6, 10**8)}"
            await self.place_call(name, caller=caller, extension=ext, **params)
            started += 1
            next_at = began + started / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        return started

    @property
    def client_count(self) -> int:
        """Connected AMI clients (logged in or not)."""
        return len(self._sessions)

    def live_channels(self) -> list[str]:
        """Names of the channels CoreShowChannels would list now."""
        return [chan.name for chan in self._channels.values()]

    # -- hooks used by running calls ---------------------------------------------------------

    def device_for(self, extension: str) -> str:
        """The device (channel name prefix) of an extension."""
        return self.devices.get(extension, f"PJSIP/{extension}")

    def agent_name(self, extension: str) -> str:
        """Caller ID name of an agent's phone."""
        return f"Agent {extension}"

    def is_extension(self, number: str) -> bool:
        """Whether a dialed number is one of our extensions."""
        return number in self.devices

    def _new_uniqueid(self) -> str:
        return f"{self.systemname}-{int(time.time())}.{next(self._uid_seq)}"

    def _next_channel_seq(self) -> str:
        return f"{next(self._chan_seq):08x}"

    def _register(self, chan: Channel) -> None:
        self._channels[chan.uniqueid] = chan

    def _unregister(self, chan: Channel) -> None:
        self._channels.pop(chan.uniqueid, None)

    def _emit(self, event: str, privilege: str, fields: Fields) -> None:
        """Send one event to every logged-in client whose event mask takes it."""
        if self._silent:
            return
        data = encode_frame(
            [("Event", event), ("Privilege", privilege), ("SystemName", self.systemname), *fields]
        )
        for session in list(self._sessions):
            if session.logged_in and session.wants(privilege):
                session.send(data)

    # -- replay ---------------------------------------------------------------------------

    async def replay(self, path: str | Path, *, timed: bool = False) -> None:
        """Send a recorded trace to every logged-in client (raw `.ami` without its banner and
        login response, or cacofonisk JSON rendered as frames); timed honours .meta.json."""
        chunks = load_trace(Path(path), timed=timed)
        targets = [session for session in self._sessions if session.logged_in]
        await self._play(chunks, targets)

    async def _play(self, chunks: list[Chunk], targets: list[_Session]) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        tracker = FrameParser()
        for delay, data in chunks:
            wait = began + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            for frame in tracker.feed(data):
                self._track_replayed(frame)
            if self._silent:
                continue
            for session in targets:
                session.send(data)

    def _track_replayed(self, frame: Frame) -> None:
        """Keep CoreShowChannels truthful while a trace plays."""
        event = frame.get("Event")
        uniqueid = frame.get("Uniqueid")
        if not event or not uniqueid:
            return
        fields = frame.as_dict()
        if event == "Newchannel":
            self._channels[uniqueid] = Channel.from_fields(fields)
            return
        chan = self._channels.get(uniqueid)
        if chan is None or chan.call is not None:
            return
        if event == "Hangup":
            self._channels.pop(uniqueid, None)
            return
        chan.update_from(fields)
        if event == "BridgeEnter":
            chan.bridge_id = fields.get("BridgeUniqueid", "")
        elif event == "BridgeLeave":
            chan.bridge_id = ""
        elif event == "Newexten":
            chan.application = fields.get("Application", chan.application)
            chan.appdata = fields.get("AppData", chan.appdata)

    # -- fault injection --------------------------------------------------------------------

    async def drop_clients(self) -> None:
        """Abruptly close every client socket (no Goodbye, no FIN handshake)."""
        for session in list(self._sessions):
            transport = session.writer.transport
            transport.abort()
        await asyncio.sleep(0)

    def set_silent(self, silent: bool) -> None:
        """Keep sockets open but answer nothing, events included: a dead link."""
        self._silent = silent
        if not silent:
            for session in list(self._sessions):
                session.send_banner()

    async def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes to every logged-in client."""
        for session in list(self._sessions):
            if session.logged_in:
                session.send(data)
        await asyncio.sleep(0)

    # -- connections ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        try:
            if not self._silent:
                session.send_banner()
            parser = FrameParser()
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for frame in parser.feed(data):
                    if not await self._dispatch(session, frame):
                        await _drain(writer)
                        return
                await _drain(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._sessions.discard(session)
            for pending in list(session.tasks):
                pending.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            if task is not None:
                self._handlers.discard(task)

    async def _dispatch(self, session: _Session, frame: Frame) -> bool:
        """Answer one action; False closes the connection."""
        action = frame.get("Action")
        if action is not None:
            self.actions.append(frame.as_dict())
        if self._silent:
            return True
        if not action:
            session.respond(frame, "Error", "Missing action in request")
            return True
        name = action.strip().lower()
        if not session.logged_in and name not in ("login", "logoff", "challenge"):
            session.respond(frame, "Error", "Permission denied")
            return True
        handler = _ACTIONS.get(name)
        if handler is None:
            session.respond(frame, "Error", UNKNOWN_COMMAND.format(action))
            return True
        return await handler(self, session, frame)

    # -- actions --------------------------------------------------------------------------

    async def _action_login(self, session: _Session, frame: Frame) -> bool:
        if session.logged_in:
            session.respond(frame, "Success", "Already authenticated")
            return True
        if not self._credentials_ok(session, frame):
            if self.auth_fail_delay:
                await asyncio.sleep(self.auth_fail_delay)
            session.respond(frame, "Error", "Authentication failed")
            return False
        session.logged_in = True
        session.username = frame.get("Username") or ""
        session.mask = parse_event_mask(frame.get("Events"))
        session.respond(frame, "Success", "Authentication accepted")
        if self.login_replay is not None:
            path, timed = self.login_replay
            chunks = load_trace(path, timed=timed)
            task = asyncio.create_task(self._play(chunks, [session]))
            session.tasks.add(task)
            task.add_done_callback(session.tasks.discard)
            return True
        if session.wants("system,all"):
            uptime = str(int(time.monotonic() - self._started_at))
            session.send(
                encode_frame(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", uptime),
                        ("LastReload", uptime),
                        ("Status", "Fully Booted"),
                    ]
                )
            )
        stamp = _event_tv()
        self._emit(
            "SuccessfulAuth",
            "security,all",
            [
                ("EventTV", stamp),
                ("Severity", "Informational"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", session.username),
                ("SessionID", session.session_id),
                ("LocalAddress", session.address(local=True)),
                ("RemoteAddress", session.address(local=False)),
                ("UsingPassword", "0"),
                ("SessionTV", stamp),
            ],
        )
        return True

    def _credentials_ok(self, session: _Session, frame: Frame) -> bool:
        if (frame.get("Username") or "") != self.username:
            return False
        if (frame.get("AuthType") or "").lower() == "md5":
            if not session.challenge:
                return False
            expected = hashlib.md5(
                (session.challenge + self.secret).encode(), usedforsecurity=False
            ).hexdigest()
            return secrets.compare_digest(expected, (frame.get("Key") or "").lower())
        return secrets.compare_digest((frame.get("Secret") or "").encode(), self.secret.encode())

    async def _action_challenge(self, session: _Session, frame: Frame) -> bool:
        if (frame.get("AuthType") or "").lower() != "md5":
            session.respond(frame, "Error", "Must specify AuthType")
            return True
        if not session.challenge:
            session.challenge = str(secrets.randbelow(10**9))
        session.respond(frame, "Success", extra=[("Challenge", session.challenge)])
        return True

    async def _action_logoff(self, session: _Session, frame: Frame) -> bool:
        session.respond(frame, "Goodbye", "Thanks for all the fish.")
        return False

    async def _action_ping(self, session: _Session, frame: Frame) -> bool:
        session.respond(
            frame, "Success", extra=[("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]
        )
        return True

    async def _action_events(self, session: _Session, frame: Frame) -> bool:
        mask = frame.get("EventMask")
        if mask is None:
            mask = frame.get("Events")
        session.mask = parse_event_mask(mask)
        session.respond(frame, "Success", extra=[("Events", "On" if session.mask else "Off")])
        return True

    async def _action_coreshowchannels(self, session: _Session, frame: Frame) -> bool:
        session.respond(frame, "Success", "Channels will follow", extra=[("EventList", "start")])
        action_id = frame.get("ActionID")
        id_field: Fields = [("ActionID", action_id)] if action_id else []
        channels = list(self._channels.values())
        for chan in channels:
            session.send(
                encode_frame(
                    [
                        ("Event", "CoreShowChannel"),
                        *id_field,
                        *chan.snapshot(),
                        ("BridgeId", chan.current_bridge_id()),
                        ("Application", chan.application),
                        ("ApplicationData", chan.appdata),
                        ("Duration", chan.duration()),
                    ]
                )
            )
        session.send(
            encode_frame(
                [
                    ("Event", "CoreShowChannelsComplete"),
                    *id_field,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(channels))),
                ]
            )
        )
        return True

    async def _action_hangup(self, session: _Session, frame: Frame) -> bool:
        name = (frame.get("Channel") or "").strip()
        if not name:
            session.respond(frame, "Error", "No channel specified")
            return True
        chan = next((c for c in self._channels.values() if c.name.lower() == name.lower()), None)
        if chan is None:
            session.respond(frame, "Error", "No such channel")
            return True
        cause_header = (frame.get("Cause") or "").strip()
        cause = int(cause_header) if cause_header.isdigit() else 16
        session.respond(frame, "Success", "Channel Hungup")
        if chan.call is not None:
            chan.call.request_hangup(chan, cause)
        else:
            self._hangup_replayed(chan, cause)
        return True

    def _hangup_replayed(self, chan: Channel, cause: int) -> None:
        self._unregister(chan)
        self._emit("SoftHangupRequest", CALL, [*chan.snapshot(), ("Cause", str(cause))])
        self._emit(
            "Hangup",
            CALL,
            [*chan.snapshot(), ("Cause", str(cause)), ("Cause-txt", cause_text(cause))],
        )

    async def _action_originate(self, session: _Session, frame: Frame) -> bool:
        channel = (frame.get("Channel") or "").strip()
        if not channel:
            session.respond(frame, "Error", "Channel not specified")
            return True
        if "/" not in channel:
            session.respond(frame, "Error", "Invalid channel")
            return True
        is_async = _true(frame.get("Async"))
        application = (frame.get("Application") or "").strip() or None
        timeout_text = (frame.get("Timeout") or "").strip()
        timeout = int(timeout_text) / 1000 if timeout_text.isdigit() else 30.0
        variables = tuple(
            (name.strip(), value)
            for header in frame.get_all("Variable")
            for item in header.split(",")
            if item
            for name, _, value in [item.partition("=")]
        )
        options: dict[str, Any] = {
            **self.click_to_call_options,
            "action_id": frame.get("ActionID") if is_async else None,
            "requested_channel": channel,
            "callerid": parse_callerid(frame.get("CallerID")),
            "context": (frame.get("Context") or "").strip() or "from-internal",
            "number": (frame.get("Exten") or "").strip() or "s",
            "application": application,
            "app_data": frame.get("Data") or "",
            "variables": variables,
            "timeout": timeout,
        }
        extension = self._extension_of(channel)
        params = CallParams(extension=extension or "", **options)
        runtime = CallRuntime(self, "click_to_call", params)
        if extension is None:
            if not is_async:
                session.respond(frame, "Error", "Originate failed")
                return True
            session.respond(frame, "Success", "Originate successfully queued")
            # No such endpoint: the channel is never created, only the failure is reported.
            cid = params.callerid or (UNKNOWN, UNKNOWN)
            asyncio.get_running_loop().call_soon(runtime.originate_response, False, None, 0, cid)
            return True
        if is_async:
            session.respond(frame, "Success", "Originate successfully queued")
            self._start_call(runtime)
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        runtime.originate_waiter = waiter
        self._start_call(runtime)
        ok = await waiter
        if ok:
            session.respond(frame, "Success", "Originate successfully queued")
        else:
            session.respond(frame, "Error", "Originate failed")
        return True

    def _extension_of(self, channel: str) -> str | None:
        """The extension whose device an Originate's Channel names, if any."""
        wanted = channel.lower()
        for extension, device in self.devices.items():
            if device.lower() == wanted:
                return extension
        return None


async def _drain(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _event_tv() -> str:
    """Security event timestamps: 2026-11-22T08:46:07.942+0000."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


_ACTIONS = {
    "login": PbxSimulator._action_login,
    "challenge": PbxSimulator._action_challenge,
    "logoff": PbxSimulator._action_logoff,
    "ping": PbxSimulator._action_ping,
    "events": PbxSimulator._action_events,
    "coreshowchannels": PbxSimulator._action_coreshowchannels,
    "hangup": PbxSimulator._action_hangup,
    "originate": PbxSimulator._action_originate,
}
