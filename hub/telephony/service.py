"""The call service: tracker effects → screen-pops, the call log, reminders, the timeline.

It is the PbxEventSink the AMI connector feeds. Event handling itself is synchronous and cheap
(the tracker); anything that needs the database runs in tasks so the AMI reader never waits:
pops in parallel (each looks up one customer), finished calls through one writer queue in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.cards import CardReader, customer_id_for_phone
from hub.db import insert_for
from hub.errors import PermanentError, RetryableError, ValidationError
from hub.models.calls import Call
from hub.models.customers import Customer
from hub.models.users import User, UserDevice
from hub.phone import normalize_caller, normalize_phone
from hub.reminders import create_reminder
from hub.services import Hub
from hub.telephony.model import (
    CallAnswered,
    CallEffect,
    CallEnded,
    CallRecord,
    CallRinging,
    TrackerConfig,
)
from hub.telephony.ports import OriginateRequest, PbxCommands
from hub.telephony.tracker import CallTracker
from hub.timeline import record_interaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agent:
    """What the call service needs to know of a user who owns phones."""

    user_id: int
    username: str
    extension: str | None


class AgentDirectory:
    """Device → agent, kept in memory (the tracker asks on every dial) and refreshed from the DB."""

    def __init__(self) -> None:
        self.by_device: dict[str, Agent] = {}
        self.devices: frozenset[str] = frozenset()

    async def refresh(self, session: AsyncSession) -> None:
        """Reload from the users table (cheap: one small query)."""
        rows = await session.execute(
            select(UserDevice.device, User.id, User.username, User.extension)
            .join(User)
            .where(User.active.is_(True))
        )
        by_device = {
            device: Agent(user_id, username, extension)
            for device, user_id, username, extension in rows
        }
        self.by_device = by_device
        self.devices = frozenset(by_device)

    def agent_for(self, device: str | None) -> Agent | None:
        """The agent owning a device, if any."""
        return self.by_device.get(device) if device else None


def call_to_dict(call: Call, customer_name: str | None = None) -> dict[str, Any]:
    """JSON shape of a call (DESIGN.md contract)."""
    return {
        "id": call.id,
        "linkedid": call.linkedid,
        "direction": call.direction,
        "caller": call.caller,
        "caller_name": call.caller_name,
        "callee": call.callee,
        "agent": call.agent,
        "rang": call.rang,
        "answered_by": call.answered_by,
        "queue": call.queue,
        "started_at": call.started_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat(),
        "wait_seconds": round(call.wait_seconds, 3),
        "talk_seconds": round(call.talk_seconds, 3),
        "disposition": call.disposition,
        "hangup_cause": call.hangup_cause,
        "recording": call.recording,
        "customer_id": call.customer_id,
        "customer_name": customer_name,
        "transfers": call.transfers,
        "caller_withheld": call.caller_withheld,
    }


class CallService:
    """Implements hub.telephony.ports.PbxEventSink; owns the tracker and the call log writes."""

    WRITE_QUEUE = 10_000

    def __init__(self, hub: Hub, pbx: PbxCommands | None = None) -> None:
        self.hub = hub
        self.pbx = pbx
        self.region = hub.config.phone.default_region
        self.directory = AgentDirectory()
        self.cards = CardReader(hub.config.database.url, hub.sessions)
        self.tracker = CallTracker(
            TrackerConfig(
                internal_pattern=__import__("re").compile(
                    hub.config.ami.internal_extension_pattern
                ),
                agent_devices=lambda: self.directory.devices,
            )
        )
        # (linkedid) → user ids that got a pop: once per agent per call, and who gets call.ended.
        self._popped: dict[str, set[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: asyncio.Queue[CallRecord] = asyncio.Queue(self.WRITE_QUEUE)
        self._writer: asyncio.Task[None] | None = None
        self.link_up = False
        self.stats = {"events": 0, "pops": 0, "calls_written": 0, "write_errors": 0}
        # Supervisors' wallboard: a snapshot at most every LIVE_EVERY seconds while calls change.
        self._live_dirty = asyncio.Event()
        self._live_task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = lambda: None
        # Click-to-call asked on a process without the AMI link waits here for the holder's reply.
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    LIVE_EVERY = 0.5

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the agent directory and start the call-log writer."""
        async with self.hub.sessions() as session:
            await self.directory.refresh(session)
        self._writer = asyncio.create_task(self._write_loop(), name="call-log-writer")
        self._live_task = asyncio.create_task(self._live_loop(), name="calls-live")
        self._unsubscribe = self.hub.bus.subscribe(self._on_bus)

    async def stop(self) -> None:
        """Finish pending pops and writes, then stop."""
        self._unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._live_task is not None:
            self._live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live_task
        if self._writer is not None:
            await self._writes.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.cards.close()

    async def drain(self) -> None:
        """Wait until every pop is pushed and every finished call is written (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._writes.join()

    async def refresh_agents(self) -> None:
        """Call after users or devices change."""
        async with self.hub.sessions() as session:
            await self.directory.refresh(session)

    # -- PbxEventSink --------------------------------------------------------------------------

    async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
        """One AMI event."""
        self.stats["events"] += 1
        effects = self.tracker.handle(event, at)
        if effects:
            self._apply(effects)

    async def on_resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> None:
        """Live channels after a (re)connect: close calls that ended while we were away."""
        effects = self.tracker.resync(channels, at)
        log.info(
            "AMI resync: %d live channels, %d calls tracked, %d effects",
            len(channels),
            len(self.tracker.live_calls()),
            len(effects),
        )
        self._apply(effects)

    async def on_link(self, up: bool, reason: str) -> None:
        """Log link changes where an operator looks, and tell supervisors."""
        self.link_up = up
        if up:
            log.info("AMI link up: %s", reason)
        else:
            log.warning("AMI link down: %s", reason)
        self._spawn(
            self.hub.bus.publish(
                "role:supervisor", {"type": "ami.link", "up": up, "reason": reason}
            )
        )

    # -- effects -------------------------------------------------------------------------------

    def _apply(self, effects: Sequence[CallEffect]) -> None:
        if effects:
            self._live_dirty.set()
        for effect in effects:
            if isinstance(effect, CallRinging):
                agent = self.directory.agent_for(effect.device)
                if agent is None:
                    continue
                popped = self._popped.setdefault(effect.linkedid, set())
                if agent.user_id in popped:
                    continue
                popped.add(agent.user_id)
                self._spawn(self._pop(agent, effect))
            elif isinstance(effect, CallAnswered):
                agent = self.directory.agent_for(effect.device)
                if agent is not None:
                    self._spawn(
                        self.hub.bus.publish(
                            f"user:{agent.user_id}",
                            {
                                "type": "call.answered",
                                "call_id": effect.linkedid,
                                "caller": normalize_caller(effect.caller, self.region),
                                "extension": effect.extension or agent.extension,
                                "customer": None,
                                "at": effect.at.isoformat(),
                            },
                        )
                    )
            elif isinstance(effect, CallEnded):
                try:
                    self._writes.put_nowait(effect.record)
                except asyncio.QueueFull:
                    # Only reachable if the database is down for a long time: say so loudly.
                    log.error(
                        "call log writer is %d calls behind; dropping %s",
                        self.WRITE_QUEUE,
                        effect.record.linkedid,
                    )
                    self.stats["write_errors"] += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call event task failed", exc_info=task.exception())

    async def _pop(self, agent: Agent, ringing: CallRinging) -> None:
        caller = normalize_caller(ringing.caller, self.region)
        card = await self.cards.card(caller) if caller is not None else None
        self.stats["pops"] += 1
        await self.hub.bus.publish(
            f"user:{agent.user_id}",
            {
                "type": "call.ringing",
                "call_id": ringing.linkedid,
                "caller": caller,
                "caller_name": ringing.caller_name,
                "extension": ringing.extension or agent.extension,
                "direction": ringing.direction,
                "queue": ringing.queue,
                "customer": card,
                "at": ringing.at.isoformat(),
            },
        )

    async def _originate(self, request: OriginateRequest) -> str:
        """Here if this process holds the AMI link, else through the bus to the one that does."""
        if self.pbx is not None:
            return await self.pbx.originate(request)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = future
        try:
            await self.hub.bus.publish(
                "internal:originate", {"type": "originate", "request": _request_to_dict(request)}
            )
            try:
                async with asyncio.timeout(FORWARD_TIMEOUT):
                    reply = await future
            except TimeoutError:
                raise RetryableError(
                    "no commhub process holds the AMI link right now; the call was not placed"
                ) from None
        finally:
            self._pending.pop(request.request_id, None)
        if reply.get("error"):
            kind = PermanentError if reply.get("permanent") else RetryableError
            raise kind(reply["error"])
        return str(reply["action_id"])

    def _on_bus(self, topic: str, event: dict[str, Any]) -> None:
        if topic == "internal:originate" and self.pbx is not None:
            self._spawn(self._originate_for_peer(event["request"]))
        elif topic == "internal:originate.reply":
            future = self._pending.get(event.get("request_id", ""))
            if future is not None and not future.done():
                future.set_result(event)

    async def _originate_for_peer(self, fields: dict[str, Any]) -> None:
        request = OriginateRequest(**fields)
        reply: dict[str, Any] = {"type": "originate.reply", "request_id": request.request_id}
        try:
            assert self.pbx is not None
            reply["action_id"] = await self.pbx.originate(request)
        except (PermanentError, RetryableError, ValidationError) as err:
            reply.update(error=str(err), permanent=isinstance(err, PermanentError))
        await self.hub.bus.publish("internal:originate.reply", reply)

    # -- live view -----------------------------------------------------------------------------

    def live_snapshot(self) -> dict[str, Any]:
        """Calls in progress and each agent's state, for the supervisors' wallboard."""
        busy: dict[str, str] = {}
        calls = []
        for call in self.tracker.live_calls():
            names = []
            for device in call.devices:
                agent = self.directory.agent_for(device)
                if agent:
                    names.append(agent.username)
                    busy[agent.username] = call.state
            calls.append(
                {
                    "linkedid": call.linkedid,
                    "caller": normalize_caller(call.caller, self.region) or call.caller,
                    "callee": call.callee,
                    "direction": call.direction,
                    "state": call.state,
                    "queue": call.queue,
                    "agents": names,
                    "devices": list(call.devices),
                    "started_at": call.started_at.isoformat(),
                    "answered_at": call.answered_at.isoformat() if call.answered_at else None,
                }
            )
        agents = {a.username: a for a in self.directory.by_device.values()}
        return {
            "calls": calls,
            "agents": [
                {"username": name, "extension": a.extension, "state": busy.get(name, "idle")}
                for name, a in sorted(agents.items())
            ],
            "link": "up" if self.link_up else "down",
        }

    async def _live_loop(self) -> None:
        while True:
            await self._live_dirty.wait()
            self._live_dirty.clear()
            try:
                await self.hub.bus.publish(
                    "role:supervisor", {"type": "calls.live", **self.live_snapshot()}
                )
            except Exception:
                log.exception("publishing the live call view failed")
            await asyncio.sleep(self.LIVE_EVERY)

    # -- the call log --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            record = await self._writes.get()
            try:
                await self._write_with_retry(record)
            finally:
                self._writes.task_done()

    async def _write_with_retry(self, record: CallRecord) -> None:
        delay = 0.2
        for attempt in range(8):
            try:
                await self.write_call(record)
                return
            except Exception as err:
                self.stats["write_errors"] += 1
                log.warning(
                    "writing call %s failed (attempt %d): %s", record.linkedid, attempt + 1, err
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        log.error("giving up on call %s after 8 attempts", record.linkedid)

    def _agent_of(self, record: CallRecord) -> Agent | None:
        """Who the call belongs to: the placing agent (outbound), else whoever had it last."""
        if record.direction == "outbound" and record.caller_device:
            agent = self.directory.agent_for(record.caller_device)
            if agent:
                return agent
        # After a transfer the call belongs to the agent it was handed to.
        for transfer in reversed(record.transfers):
            agent = self.directory.agent_for(transfer.to_device)
            if agent:
                return agent
        for device in reversed(record.answered_by):
            agent = self.directory.agent_for(device)
            if agent:
                return agent
        return self.directory.agent_for(record.caller_device)

    def _rang_names(self, record: CallRecord) -> list[str]:
        """Agents (or raw devices) the call rang, in order, transfer targets included."""
        names: list[str] = []
        targets = [d for t in record.transfers for d in (t.to_devices or (t.to_device,)) if d]
        for device in (*record.rang, *targets):
            agent = self.directory.agent_for(device)
            name = agent.username if agent else device
            if name not in names:
                names.append(name)
        return names

    async def write_call(self, record: CallRecord) -> bool:
        """Write one finished call, idempotently by Linkedid; then publish. True if new."""
        party = record.callee if record.direction == "outbound" else record.caller
        number = None if record.direction == "internal" else normalize_caller(party, self.region)
        caller = normalize_caller(record.caller, self.region) or record.caller
        callee = normalize_caller(record.callee, self.region) or record.callee
        agent = self._agent_of(record)
        popped = self._popped.pop(record.linkedid, set())
        async with self.hub.sessions() as session, session.begin():
            customer_id = await customer_id_for_phone(session, number) if number else None
            values = {
                "linkedid": record.linkedid,
                "direction": record.direction,
                "caller": None if record.caller_withheld else caller,
                "caller_name": record.caller_name,
                "callee": callee,
                "agent_id": agent.user_id if agent else None,
                "agent": agent.username if agent else None,
                "rang": self._rang_names(record),
                "answered_by": list(record.answered_by),
                "queue": record.queue,
                "started_at": record.started_at,
                "answered_at": record.answered_at,
                "ended_at": record.ended_at,
                "wait_seconds": record.wait_seconds,
                "talk_seconds": record.talk_seconds,
                "disposition": record.disposition,
                "hangup_cause": record.hangup_cause,
                "recording": record.recording,
                "customer_id": customer_id,
                "transfers": [
                    {
                        "kind": t.kind,
                        "from": t.from_device,
                        "to": t.to_device,
                        "to_number": t.to_number,
                    }
                    for t in record.transfers
                ],
                "caller_withheld": record.caller_withheld,
            }
            new_id = await session.scalar(
                insert_for(session)(Call)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["linkedid"])
                .returning(Call.id)
            )
            if new_id is None:
                return False  # logged already (e.g. a resync after a reconnect closed it twice)
            await record_interaction(
                session,
                channel="call",
                external_id=record.linkedid,
                customer_id=customer_id,
                direction=record.direction,
                status=record.disposition,
                occurred_at=record.started_at,
                ended_at=record.ended_at,
                user_id=agent.user_id if agent else None,
                summary=_summary(record, agent),
                data={
                    "call_id": new_id,
                    "talk_seconds": round(record.talk_seconds, 1),
                    "queue": record.queue,
                },
            )
            reminder = None
            if record.direction == "inbound" and record.disposition in ("missed", "abandoned"):
                reminder, _ = await create_reminder(
                    session,
                    title=f"Call back {caller or 'unknown caller'}",
                    customer_id=customer_id,
                    assignee_id=self._missed_assignee(record),
                    queue=record.queue,
                    kind="callback",
                    phone=caller if not record.caller_withheld else None,
                    due_at=record.ended_at,
                    external_id=f"call:{record.linkedid}",
                )
        self.stats["calls_written"] += 1
        ended = {
            "type": "call.ended",
            "call_id": record.linkedid,
            "caller": values["caller"],
            "extension": None,
            "customer": None,
            "disposition": record.disposition,
            "id": new_id,
        }
        for user_id in popped:
            await self.hub.bus.publish(f"user:{user_id}", ended)
        await self.hub.bus.publish("role:supervisor", {**ended, "type": "calls.ended"})
        if record.disposition in ("missed", "abandoned") and record.direction == "inbound":
            await self.hub.bus.publish(
                "internal:call.missed",
                {
                    "type": "call.missed",
                    "linkedid": record.linkedid,
                    "caller": values["caller"],
                    "customer_id": customer_id,
                    "reminder_id": reminder.id if reminder else None,
                },
            )
        return True

    def _missed_assignee(self, record: CallRecord) -> int | None:
        """A missed call goes to the one agent it rang; a group or queue call to the queue."""
        agents = {a.user_id for d in record.rang if (a := self.directory.agent_for(d))}
        return agents.pop() if len(agents) == 1 else None

    # -- click-to-call -------------------------------------------------------------------------

    async def originate(self, user: User, number: str, customer: Customer | None = None) -> str:
        """Ring the agent's own phone, then dial `number`; returns the request id."""
        if self.pbx is None and not self.hub.config.redis.url:
            raise ValidationError("telephony is not configured ([ami] enabled = false)")
        devices = [d.device for d in user.devices]
        if not devices:
            raise ValidationError(f"user {user.username} has no phone (device) to ring")
        target = normalize_phone(number, self.region)
        ami = self.hub.config.ami
        request = OriginateRequest(
            channel=ami.originate_channel.format(device=devices[0], extension=user.extension or ""),
            exten=target,
            context=ami.originate_context,
            caller_id=f'"{_cid(customer.name) if customer else target}" <{target}>',
            timeout_s=ami.originate_timeout,
            variables={"COMMHUB_USER": user.username},
            request_id=f"c2c-{uuid.uuid4().hex[:16]}",
        )
        started = time.monotonic()
        action_id = await self._originate(request)
        log.info(
            "click-to-call by %s to %s queued in %.0f ms (%s)",
            user.username,
            target,
            (time.monotonic() - started) * 1000,
            action_id,
        )
        return action_id


FORWARD_TIMEOUT = 15.0


def _request_to_dict(r: OriginateRequest) -> dict[str, Any]:
    return {
        "channel": r.channel,
        "exten": r.exten,
        "context": r.context,
        "caller_id": r.caller_id,
        "timeout_s": r.timeout_s,
        "variables": dict(r.variables),
        "request_id": r.request_id,
    }


def _cid(name: str) -> str:
    """A caller-id name without characters that would break the AMI header."""
    return "".join(ch for ch in name if ch not in '"<>\r\n')[:40]


def _summary(record: CallRecord, agent: Agent | None) -> str:
    who = agent.username if agent else "nobody"
    if record.disposition in ("answered", "transferred"):
        return (
            f"{record.direction} call, {record.disposition} by {who}, {int(record.talk_seconds)} s"
        )
    return f"{record.direction} call, {record.disposition}"
