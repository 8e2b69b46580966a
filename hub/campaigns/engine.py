"""The campaign engine: scheduler tick, recipient streaming, claiming, sending, recording.

The database is the truth; memory holds at most a couple of claimed batches per channel.
- Tick (every [campaigns] tick_seconds): take over journals of dead workers and return expired
  leases (recovery.py), fire due schedules into runs (unique per campaign and slot), finish
  completed runs, scan for triggered messages, attribute replies.
- Materialiser: streams each new run's segment into delivery rows, in customer-id order, with a
  checkpoint, by INSERT ... SELECT ... ON CONFLICT DO NOTHING (unique run + customer).
- Per channel, a feeder claims batches (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one
  UPDATE ... RETURNING) with a lease, re-checks the suppression list, and queues jobs for
  `concurrency` senders that share a sliding-window rate limit; outcomes are recorded in group
  commits, with the timeline rows, while the journal covers the gap (recording.py, journal.py).
- A run of `max_consecutive_errors` failures pauses the campaign; a messenger the registry does
  not know cancels it with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Select,
    Table,
    Update,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import String as SqlString
from sqlalchemy.ext.asyncio import AsyncSession

from hub import consent as consent_list
from hub.campaigns import report, triggers
from hub.campaigns.consent import open_pixel_url, unsubscribe_url
from hub.campaigns.context import address_expr, load_customers, message_context
from hub.campaigns.jobs import TABLES, Job, Source, claimed_by
from hub.campaigns.journal import Journal
from hub.campaigns.messengers import (
    EmailMessenger,
    Envelope,
    Messenger,
    MessengerRegistry,
    SmsMessenger,
)
from hub.campaigns.recording import Recorder, unclaimed
from hub.campaigns.recovery import Recovery
from hub.campaigns.schedule import due_firing, zone
from hub.campaigns.segments import Clock, compile_filter
from hub.campaigns.service import (
    compile_template,
    preview,
    run_progress,
    set_campaign_state,
    start_run,
)
from hub.campaigns.templates import CompiledTemplate, Rendered, RenderError
from hub.db import insert_for
from hub.errors import (
    AuthError,
    DeliveryInDoubt,
    PermanentError,
    RetryableError,
    ValidationError,
)
from hub.eventloop import paced
from hub.messaging.ports import EmailRejected
from hub.models.base import utcnow
from hub.models.campaigns import (
    Campaign,
    CampaignRun,
    CampaignSchedule,
    MessageTemplate,
    Segment,
    TriggerRule,
)
from hub.models.consent import Suppression
from hub.models.customers import Customer
from hub.services import Hub

log = logging.getLogger(__name__)

TOPIC = "role:marketer"
PROGRESS_SECONDS = 0.5
REFRESH_SECONDS = 1.0
SCAN_SECONDS = 60.0
MESSENGER_GRACE_SECONDS = 5.0


class SlidingWindowLimiter:
    """At most `rate` sends in any window (1 s, or longer for rates below one per second)."""

    def __init__(self, rate_per_second: float) -> None:
        self.rate = rate_per_second
        self.window = max(1.0, 1.0 / rate_per_second) if rate_per_second > 0 else 1.0
        self.limit = max(1, round(rate_per_second * self.window))
        self._stamps: deque[float] = deque()

    async def acquire(self) -> None:
        """Wait for a free slot (returns at once when unlimited)."""
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            while self._stamps and self._stamps[0] <= now - self.window:
                self._stamps.popleft()
            if len(self._stamps) < self.limit:
                self._stamps.append(now)
                return
            await asyncio.sleep(self._stamps[0] + self.window - now)


@dataclass(slots=True, eq=False)
class Ready:
    """A job rendered and prepared by its messenger, waiting for a courier."""

    job: Job
    messenger: Messenger
    prepared: Any
    summary: str  # what the timeline shows: the subject, or the SMS text


@dataclass(eq=False)
class Lane:
    """One channel: claimed jobs, the renderer that prepares them, the couriers that hand them
    to the provider (one per provider connection), and their shared rate limit.

    The renderer keeps `ready` full, so a courier goes from one message's acceptance to the
    next message's first command without waiting for a template or a MIME composer."""

    channel: str
    concurrency: int
    batch: int
    limiter: SlidingWindowLimiter
    couriers: int = 1
    queue: asyncio.Queue[Job | None] = field(default_factory=asyncio.Queue)
    ready: asyncio.Queue[Ready | None] = field(default_factory=asyncio.Queue)
    low_water: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    renderer_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    courier_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cursor: int = 0  # round-robin position over runs

    @property
    def refill_at(self) -> int:
        """Claim the next batch once no more than this many jobs are queued: a whole batch, so
        that the claim (tens of milliseconds, more while another transaction holds SQLite's
        write lock) ends long before the queue runs dry. At half a batch, a slow claim now and
        then left the renderer with nothing to do and every connection idle."""
        return max(self.concurrency, self.batch)

    def set_couriers(self, couriers: int) -> None:
        """Messages handed to the provider at once (its connections); the rest of the
        concurrency is rendered and waiting in `ready`."""
        self.couriers = max(1, couriers)
        self.ready = asyncio.Queue(maxsize=max(1, self.concurrency - self.couriers))


def make_worker_id() -> str:
    """host-pid-random: names this process in claims and its journal files."""
    host = "".join(ch if ch.isalnum() else "-" for ch in socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class CampaignEngine:
    """Scheduler and sender for campaigns and triggered messages (one per process)."""

    def __init__(
        self,
        hub: Hub,
        messengers: MessengerRegistry | None = None,
        *,
        worker_id: str | None = None,
        journal_dir: str | None = None,
        tick_seconds: float | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        messenger_grace: float = MESSENGER_GRACE_SECONDS,
    ) -> None:
        self.hub = hub
        cfg = hub.config.campaigns
        self.config = cfg
        self.messengers = messengers or MessengerRegistry()
        self.worker_id = worker_id or make_worker_id()
        self.journal_dir = journal_dir or cfg.journal_dir
        self.tick_seconds = tick_seconds if tick_seconds is not None else cfg.tick_seconds
        self.lease = timedelta(seconds=lease_seconds or cfg.lease_seconds)
        self.clock = clock
        # Wiring order is not ours: give the email and SMS parts time to appear before a
        # campaign naming them is cancelled for an unknown messenger.
        self.messenger_grace = messenger_grace
        self.journal: Journal | None = None
        self.lanes = {
            "email": Lane(
                "email",
                max(1, cfg.email_concurrency),
                self._claim_size(cfg.email_rate_per_second, cfg.email_concurrency),
                SlidingWindowLimiter(cfg.email_rate_per_second),
            ),
            "sms": Lane(
                "sms",
                max(1, cfg.sms_concurrency),
                self._claim_size(cfg.sms_rate_per_second, cfg.sms_concurrency),
                SlidingWindowLimiter(cfg.sms_rate_per_second),
            ),
        }
        email_lane = self.lanes["email"]
        email_lane.set_couriers(min(email_lane.concurrency, hub.config.smtp.pool_size))
        self.lanes["sms"].set_couriers(self.lanes["sms"].concurrency)
        self._sources: dict[str, Source] = {}
        self._claimed: dict[tuple[str, int], Job] = {}
        self._dirty_runs: set[int] = set()
        self.stats = {"sent": 0, "failed": 0, "retried": 0, "in_doubt_resends": 0}
        self._recorder = Recorder(
            hub,
            self.worker_id,
            lambda: self.journal,
            clock,
            self._claimed,
            self._dirty_runs,
            self.stats,
            # Nothing left in flight after a campaign's messages: its run may be complete, so
            # the scheduler pass that marks runs finished comes now, not at the next tick.
            on_drained=self.wake_tick,
        )
        # The senders append to the recorder's buffer directly (it is one object for the
        # engine's lifetime) and nudge it through the bound method: per message, no more
        # lookups than when recording lived in this class.
        self._outcomes = self._recorder.outcomes
        self._flush_soon = self._recorder.flush_soon
        self._recovery = Recovery(
            hub,
            self.worker_id,
            self.journal_dir,
            clock,
            self.lease,
            self._claimed,
            self.stats,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._wake_tick = asyncio.Event()
        self._publishing = asyncio.Lock()
        self._wake_materialiser = asyncio.Event()
        self._started_at = time.monotonic()
        self._last_scan = 0.0
        self._reply_cursor: int | None = None
        self._stopping = False
        secret = hub.config.web.secret_key
        self._site = hashlib.sha256(f"commhub-site:{secret}".encode()).hexdigest()[:8]
        domain = hub.config.smtp.from_address.rpartition("@")[2].strip(" >") or "commhub.invalid"
        self._domain = domain

    def _claim_size(self, rate: float, concurrency: int) -> int:
        size = max(1, self.config.batch_size)
        if rate > 0:
            # A claimed row holds a lease: claim what can go out in a few seconds, not more.
            size = min(size, max(concurrency * 2, int(rate * 5)))
        return size

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take over dead workers' journals, then run the scheduler, materialiser and senders."""
        self._started_at = time.monotonic()
        self.journal = Journal(self.journal_dir, self.worker_id)
        self.sync_messengers()
        await self.recover()
        self._unsubscribe = self.hub.bus.subscribe(self._on_bus_event)
        self._spawn(self._tick_loop, "campaigns-tick")
        self._spawn(self._materialise_loop, "campaigns-materialise")
        self._spawn(self._recorder.run, "campaigns-flush")
        self._spawn(self._progress_loop, "campaigns-progress")
        self._spawn(self._refresh_loop, "campaigns-refresh")
        for lane in self.lanes.values():
            self._spawn(functools.partial(self._feed, lane), f"campaigns-feed-{lane.channel}")
            lane.renderer_tasks.append(
                asyncio.create_task(self._renderer(lane), name=f"campaigns-{lane.channel}-render")
            )
            for i in range(lane.couriers):
                lane.courier_tasks.append(
                    asyncio.create_task(self._courier(lane), name=f"campaigns-{lane.channel}-{i}")
                )

    def _spawn(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        # The coroutine is created inside the task: a task cancelled before its first step
        # then leaves no never-awaited coroutine behind.
        self._tasks.append(asyncio.create_task(self._guard(loop, name), name=name))

    async def _guard(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a background loop must never die silently
            log.exception("campaign engine task %s crashed", name)
            raise

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop claiming, let in-flight sends finish, return queued jobs, record everything."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for task in list(self._event_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        deadline = time.monotonic() + grace_seconds
        for lane in self.lanes.values():
            while not lane.queue.empty():
                job = lane.queue.get_nowait()
                if job is not None:
                    self._outcomes.released.append(job)
            for _ in lane.renderer_tasks:
                lane.queue.put_nowait(None)  # the renderer ends after its current message
        # Couriers release what they take from now on (self._stopping), so a renderer waiting
        # for room in `ready` gets it; then couriers finish the message they are handing over.
        await self._await_tasks(
            [t for lane in self.lanes.values() for t in lane.renderer_tasks], deadline
        )
        for lane in self.lanes.values():
            while not lane.ready.empty():
                item = lane.ready.get_nowait()
                if item is not None:
                    self._outcomes.released.append(item.job)
            lane.ready.put_nowait(None)  # passed on from courier to courier
        await self._await_tasks(
            [t for lane in self.lanes.values() for t in lane.courier_tasks], deadline
        )
        for lane in self.lanes.values():
            lane.renderer_tasks.clear()
            lane.courier_tasks.clear()
            while not lane.ready.empty():  # the pill, so that a later start() begins clean
                lane.ready.get_nowait()
        try:
            await self.flush()
            if self.journal is not None and self.journal.outstanding <= 0:
                # Whatever is still claimed by us was never handed over: give it back now
                # rather than after the lease (a feeder stopped between claim and queue).
                await self._release_own_claims()
        except Exception:
            log.exception("final flush failed; the journal keeps the outcomes for the next start")
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    @staticmethod
    async def _await_tasks(tasks: list[asyncio.Task[None]], deadline: float) -> None:
        """Wait for the tasks until the deadline, then cancel what is left."""
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _release_own_claims(self) -> None:
        async with self.hub.sessions() as session, session.begin():
            for kind, table in TABLES.items():
                await session.execute(
                    update(table)
                    .where(*claimed_by(kind, table, self.worker_id))
                    .values(**unclaimed(kind, table))
                )
        self._claimed.clear()

    def sync_messengers(self) -> None:
        """Register messengers for channel parts that appeared (wiring order does not matter)."""
        email = self.hub.part("email")
        if email is not None and "email" not in self.messengers:
            self.messengers.register(EmailMessenger(email))
        sms = self.hub.part("sms")
        if sms is not None and "sms" not in self.messengers:
            self.messengers.register(
                SmsMessenger(sms, self.hub.config.sms.sender or None, via=self._sms_via(sms))
            )

    def _sms_via(self, gateway: Any) -> Callable[[Envelope, Rendered], Awaitable[str]]:
        """Send campaign SMS through the SMS service: delivery reports then find them."""
        from hub.sms.service import send_sms

        async def via(envelope: Envelope, rendered: Rendered) -> str:
            result = await send_sms(
                self.hub,
                text=rendered.text,
                to=envelope.to,
                customer_id=envelope.customer_id,
                marketing=True,
                reference=envelope.message_id,
                gateway=gateway,
                source=envelope.tag,
            )
            return str(result.get("gateway_id") or result.get("reference") or envelope.message_id)

        return via

    def wake_tick(self) -> None:
        """Run the scheduler pass now rather than at the next tick."""
        self._wake_tick.set()

    def wake(self) -> None:
        """Look for work now rather than at the next tick (after an API change)."""
        self.wake_tick()
        self._wake_materialiser.set()
        for lane in self.lanes.values():
            lane.wake.set()

    # --- loops ----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("campaign tick failed; retrying next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_tick.wait(), self.tick_seconds)
            self._wake_tick.clear()

    async def tick(self) -> None:
        """One scheduler pass (also callable directly, e.g. by tests)."""
        self.sync_messengers()
        await self.recover()
        await self.return_expired_leases()
        fired = await self.fire_due_schedules()
        await self.finish_done_runs()
        now_mono = time.monotonic()
        if now_mono - self._last_scan >= SCAN_SECONDS or fired:
            self._last_scan = now_mono
            await self.scan_triggers()
            await self.attribute_replies()
        await self.refresh_sources()
        if fired:
            self._wake_materialiser.set()
        for lane in self.lanes.values():
            if any(s.channel == lane.channel for s in self._sources.values()):
                lane.wake.set()

    async def _materialise_loop(self) -> None:
        while True:
            try:
                progressed = await self.materialise_step()
            except Exception:
                log.exception("materialising recipients failed; retrying")
                progressed = False
                await asyncio.sleep(1.0)
            if progressed:
                for lane in self.lanes.values():
                    lane.wake.set()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_materialiser.wait(), self.tick_seconds)
            self._wake_materialiser.clear()

    async def _refresh_loop(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh_sources()
                if time.monotonic() - renewed >= self.lease.total_seconds() / 4:
                    renewed = time.monotonic()
                    await self.renew_leases()
            except Exception:
                log.exception("refreshing campaign state failed")

    # --- database helpers -----------------------------------------------------------------

    def _pg(self) -> bool:
        return self.hub.engine.dialect.name == "postgresql"

    def message_id_expr(self, kind: str, table: Table, channel: str) -> Any:
        """Message-ID (email) or reference (SMS), from the delivery id: fixed at the first claim."""
        ident = cast(table.c.id, SqlString)
        if channel == "email":
            return literal(f"<{kind}d") + ident + literal(f".{self._site}@{self._domain}>")
        return literal(f"{kind}d") + ident + literal(f"-{self._site}")

    # --- recovery -------------------------------------------------------------------------

    async def recover(self) -> int:
        """Fold in the journals of dead workers; returns how many messages were in doubt."""
        return await self._recovery.recover()

    async def return_expired_leases(self) -> int:
        """Claims whose worker vanished without a journal we can read go back to pending.

        They may have been sent (we cannot know), so they count as in doubt."""
        return await self._recovery.return_expired_leases()

    async def renew_leases(self) -> None:
        """Extend the lease of everything this worker holds."""
        await self._recovery.renew_leases()

    # --- scheduling -----------------------------------------------------------------------

    async def fire_due_schedules(self) -> int:
        """Turn due schedules into runs: once per slot, late slots collapsed into one run."""
        now = self.clock()
        fired = 0
        async with self.hub.sessions() as session:
            due = (
                await session.execute(
                    select(CampaignSchedule, Campaign)
                    .join(Campaign, Campaign.id == CampaignSchedule.campaign_id)
                    .where(
                        CampaignSchedule.active.is_(True),
                        CampaignSchedule.next_fire_at <= now,
                        Campaign.status.in_(("scheduled", "running", "finished")),
                    )
                )
            ).all()
        for schedule, campaign in due:
            due_at = schedule.next_fire_at
            assert due_at is not None
            try:
                firing = due_firing(
                    kind=schedule.kind,
                    cron_text=schedule.cron,
                    tz_name=schedule.timezone,
                    due_at=due_at,
                    now=now,
                )
            except ValidationError as err:
                await self._deactivate_schedule(schedule.id, f"schedule is invalid: {err}")
                continue
            async with self.hub.sessions() as session, session.begin():
                moved = await session.execute(
                    update(CampaignSchedule)
                    .where(
                        CampaignSchedule.id == schedule.id,
                        CampaignSchedule.next_fire_at == due_at,
                    )
                    .values(
                        next_fire_at=firing.next_at,
                        last_fired_at=firing.slot,
                        active=firing.next_at is not None,
                        updated_at=now,
                    )
                )
                if not getattr(moved, "rowcount", 0):
                    continue  # another process fired it
                run_id = await self._start_run(
                    session, campaign, firing.slot, schedule.kind, firing.missed_since
                )
            if run_id is not None:
                fired += 1
                self._dirty_runs.add(run_id)
                log.info(
                    "campaign %s: run %s for %s%s",
                    campaign.id,
                    run_id,
                    firing.slot.isoformat(),
                    f" (late; missed since {firing.missed_since.isoformat()})"
                    if firing.missed_since
                    else "",
                )
        return fired

    async def _start_run(
        self,
        session: AsyncSession,
        campaign: Campaign,
        slot: datetime,
        origin: str,
        missed_since: datetime | None,
    ) -> int | None:
        return await start_run(session, campaign, slot, origin=origin, missed_since=missed_since)

    async def _deactivate_schedule(self, schedule_id: int, reason: str) -> None:
        async with self.hub.sessions() as session, session.begin():
            await session.execute(
                update(CampaignSchedule)
                .where(CampaignSchedule.id == schedule_id)
                .values(active=False)
            )
            campaign_id = await session.scalar(
                select(CampaignSchedule.campaign_id).where(CampaignSchedule.id == schedule_id)
            )
            await session.execute(
                update(Campaign).where(Campaign.id == campaign_id).values(status_reason=reason)
            )

    # --- materialising --------------------------------------------------------------------

    async def materialise_step(self) -> bool:
        """Stream one chunk of one unmaterialised run's segment into deliveries (checkpointed)."""
        async with self.hub.sessions() as session:
            found = (
                await session.execute(
                    select(CampaignRun, Campaign, Segment)
                    .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                    .outerjoin(Segment, Segment.id == Campaign.segment_id)
                    .where(CampaignRun.status == "sending", CampaignRun.materialised_at.is_(None))
                    .order_by(CampaignRun.id)
                    .limit(1)
                )
            ).first()
        if found is None:
            return False
        run, campaign, segment = found
        chunk = max(1, self.config.batch_size) * 4
        try:
            tz = zone(campaign.timezone)
            # Relative conditions ("birthday today") are judged at the run's slot, so a resumed
            # or late run streams the same recipients it would have on time.
            where = compile_filter(
                segment.filter if segment else None,
                Clock(run.scheduled_for, tz),
                self.hub.engine.dialect.name,
            )
        except ValidationError as err:
            await self.cancel_campaign(campaign.id, f"segment cannot be used: {err}")
            return True
        cursor = run.materialise_cursor
        async with self.hub.sessions() as session, session.begin():
            upper = await session.scalar(
                select(Customer.id)
                .where(where, Customer.id > cursor)
                .order_by(Customer.id)
                .offset(chunk - 1)
                .limit(1)
            )
            bounds = [Customer.id > cursor]
            if upper is not None:
                bounds.append(Customer.id <= upper)
            address = address_expr(campaign.channel)
            picked = (
                select(Customer.id.label("cid"), address.label("addr"))
                .where(where, *bounds)
                .subquery()
            )
            suppressed = exists().where(
                Suppression.channel == campaign.channel, Suppression.value == picked.c.addr
            )
            no_address = "no email address" if campaign.channel == "email" else "no phone number"
            rows = select(
                literal(run.id),
                picked.c.cid,
                literal(campaign.channel),
                func.coalesce(picked.c.addr, ""),
                case(
                    (picked.c.addr.is_(None), "skipped"),
                    (suppressed, "suppressed"),
                    else_="pending",
                ),
                case((picked.c.addr.is_(None), no_address), else_=""),
                literal(0),
                literal(0),
            ).where(picked.c.cid.is_not(None))
            table = TABLES["c"]
            await session.execute(
                insert_for(session)(table)
                .from_select(
                    [
                        "run_id",
                        "customer_id",
                        "channel",
                        "address",
                        "state",
                        "error",
                        "attempts",
                        "in_doubt",
                    ],
                    rows,
                )
                .on_conflict_do_nothing(index_elements=["run_id", "customer_id"])
            )
            values: dict[str, Any] = {"materialise_cursor": upper if upper is not None else cursor}
            if upper is None:
                values["materialised_at"] = self.clock()
            moved = await session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run.id, CampaignRun.materialise_cursor == cursor)
                .values(**values)
            )
            if not getattr(moved, "rowcount", 0):
                await session.rollback()  # another worker streamed this chunk first
                return True
        self._dirty_runs.add(run.id)
        if upper is None:
            self.wake_tick()  # a run with nobody left to send to is finished now, not next tick
        return True

    # --- sources --------------------------------------------------------------------------

    async def refresh_sources(self) -> None:
        """Align in-memory sources with the database: new runs and rules, paused or cancelled."""
        async with self.hub.sessions() as session:
            runs = (
                await session.execute(
                    select(CampaignRun, Campaign, MessageTemplate)
                    .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                    .join(MessageTemplate, MessageTemplate.id == Campaign.template_id)
                    .where(CampaignRun.status == "sending")
                )
            ).all()
            rules = (
                await session.execute(
                    select(TriggerRule, MessageTemplate)
                    .join(MessageTemplate, MessageTemplate.id == TriggerRule.template_id)
                    .where(TriggerRule.active.is_(True))
                )
            ).all()
        live: set[str] = set()
        for run, campaign, template in runs:
            key = f"run:{run.id}"
            stop = functools.partial(self.cancel_campaign, campaign.id)
            ready = await self._prepare_source(key, campaign, template, stop, live)
            if ready is not None:
                self._sources[key] = Source(
                    key=key,
                    kind="c",
                    channel=campaign.channel,
                    messenger=campaign.messenger,
                    template=ready[0],
                    template_stamp=(template.id, template.updated_at),
                    from_address=campaign.from_address,
                    tz=ready[1],
                    link_source=f"c{campaign.id}",
                    name=campaign.name,
                    campaign_id=campaign.id,
                    run_id=run.id,
                )
        for rule, template in rules:
            key = f"rule:{rule.id}"
            stop = functools.partial(self._deactivate_rule, rule.id)
            ready = await self._prepare_source(key, rule, template, stop, live)
            if ready is not None:
                self._sources[key] = Source(
                    key=key,
                    kind="t",
                    channel=rule.channel,
                    messenger=rule.messenger,
                    template=ready[0],
                    template_stamp=(template.id, template.updated_at),
                    from_address=None,
                    tz=ready[1],
                    link_source=f"t{rule.id}",
                    name=rule.name,
                    rule_id=rule.id,
                )
        for key in list(self._sources):
            if key not in live:
                self._sources.pop(key).stopped = True

    async def _prepare_source(
        self,
        key: str,
        owner: Campaign | TriggerRule,
        template: MessageTemplate,
        stop: Callable[[str], Awaitable[None]],
        live: set[str],
    ) -> tuple[CompiledTemplate, ZoneInfo] | None:
        """For a campaign run or trigger rule that should be sending: its compiled template and
        time zone when its source must be (re)built, None when the current one stands or it
        cannot be sent (then `stop` cancels the campaign or deactivates the rule, with why)."""
        if owner.messenger not in self.messengers:
            # Messengers register while the hub starts: they get a grace period first.
            if time.monotonic() - self._started_at >= self.messenger_grace:
                known = ", ".join(self.messengers) or "none"
                await stop(f"unknown messenger {owner.messenger!r} (registered: {known})")
            return None
        live.add(key)
        current = self._sources.get(key)
        if current is not None and current.template_stamp == (template.id, template.updated_at):
            return None
        try:
            return compile_template(template), zone(owner.timezone)
        except ValidationError as err:
            live.discard(key)
            await stop(f"template cannot be used: {err}")
            return None

    async def _deactivate_rule(self, rule_id: int, reason: str) -> None:
        log.warning("trigger rule %s deactivated: %s", rule_id, reason)
        async with self.hub.sessions() as session, session.begin():
            await session.execute(
                update(TriggerRule)
                .where(TriggerRule.id == rule_id)
                .values(active=False, status_reason=reason[:500])
            )

    # --- state changes --------------------------------------------------------------------

    async def cancel_campaign(self, campaign_id: int, reason: str) -> None:
        """Cancel with a reason (unknown messenger, broken segment): never leave it hanging."""
        log.warning("campaign %s cancelled: %s", campaign_id, reason)
        await self._stop_campaign(campaign_id, "cancel", reason)

    async def pause_campaign(self, campaign_id: int, reason: str) -> None:
        """Pause (automatic pause after too many errors uses this)."""
        log.warning("campaign %s paused: %s", campaign_id, reason)
        await self._stop_campaign(campaign_id, "pause", reason)

    async def _stop_campaign(self, campaign_id: int, action: str, reason: str) -> None:
        async with self.hub.sessions() as session, session.begin():
            await set_campaign_state(session, campaign_id, action, reason[:500])
            run_ids = (
                await session.scalars(
                    select(CampaignRun.id).where(CampaignRun.campaign_id == campaign_id)
                )
            ).all()
        self._stop_sources(campaign_id)
        self._dirty_runs.update(run_ids)

    def _stop_sources(self, campaign_id: int) -> None:
        for key, source in list(self._sources.items()):
            if source.campaign_id == campaign_id:
                source.stopped = True
                del self._sources[key]

    async def finish_done_runs(self) -> list[int]:
        """Mark runs finished once streamed and nothing is left to send."""
        now = self.clock()
        d = TABLES["c"]
        async with self.hub.sessions() as session, session.begin():
            # Rows that went back to pending after their run was cancelled (a recovery, a lease
            # expiry) are skipped here; recently cancelled runs only, so this stays cheap.
            await session.execute(
                update(d)
                .where(
                    d.c.state == "pending",
                    d.c.run_id.in_(
                        select(CampaignRun.id).where(
                            CampaignRun.status == "cancelled",
                            CampaignRun.finished_at > now - timedelta(days=2),
                        )
                    ),
                )
                .values(state="skipped", error="campaign cancelled")
            )
            finished = (
                await session.execute(
                    update(CampaignRun)
                    .where(
                        CampaignRun.status == "sending",
                        CampaignRun.materialised_at.is_not(None),
                        ~exists().where(
                            d.c.run_id == CampaignRun.id, d.c.state.in_(("pending", "sending"))
                        ),
                    )
                    .values(status="finished", finished_at=now)
                    .returning(CampaignRun.id, CampaignRun.campaign_id)
                )
            ).all()
            for _run_id, campaign_id in finished:
                busy = await session.scalar(
                    select(CampaignRun.id).where(
                        CampaignRun.campaign_id == campaign_id,
                        CampaignRun.status.in_(("sending", "paused")),
                    )
                )
                if busy is not None:
                    continue
                scheduled = await session.scalar(
                    select(CampaignSchedule.id).where(
                        CampaignSchedule.campaign_id == campaign_id,
                        CampaignSchedule.active.is_(True),
                    )
                )
                await session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign_id, Campaign.status == "running")
                    .values(status="scheduled" if scheduled else "finished", updated_at=now)
                )
        for run_id, _campaign_id in finished:
            self._dirty_runs.add(run_id)
            self._sources.pop(f"run:{run_id}", None)
        return [run_id for run_id, _ in finished]

    # --- triggers and replies -------------------------------------------------------------

    def _on_bus_event(self, topic: str, event: dict[str, Any]) -> None:
        if topic not in triggers.TOPICS or self._stopping:
            return
        task = asyncio.create_task(self._handle_event(event))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _handle_event(self, event: dict[str, Any]) -> None:
        try:
            async with self.hub.sessions() as session, session.begin():
                created = await triggers.enqueue_event(
                    session, event, region=self.hub.region, now=self.clock()
                )
        except Exception:
            log.exception("trigger for event %s failed", event.get("type"))
            return
        if created:
            for lane in self.lanes.values():
                lane.wake.set()

    async def scan_triggers(self) -> int:
        """Catch-up scans: new customers the bus did not report, long silences."""
        async with self.hub.sessions() as session, session.begin():
            created = await triggers.scan(session, now=self.clock())
        if created:
            for lane in self.lanes.values():
                lane.wake.set()
        return created

    async def attribute_replies(self) -> None:
        """Link inbound messages to the campaign message they answer (for reports, segments)."""
        async with self.hub.sessions() as session, session.begin():
            self._reply_cursor = await report.attribute_replies(
                session, after_id=self._reply_cursor, now=self.clock()
            )

    # --- claiming -------------------------------------------------------------------------

    async def _feed(self, lane: Lane) -> None:
        low = lane.refill_at
        while True:
            while lane.queue.qsize() > low:
                lane.low_water.clear()
                await lane.low_water.wait()
            try:
                jobs = await self.claim(lane)
            except Exception:
                log.exception("claiming %s deliveries failed; retrying", lane.channel)
                jobs = []
                await asyncio.sleep(1.0)
            if not jobs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), 1.0)
                lane.wake.clear()
                continue
            for job in jobs:
                lane.queue.put_nowait(job)

    async def claim(self, lane: Lane) -> list[Job]:
        """Claim the next batch for a channel: due triggered messages first, then runs in turn."""
        sources = [s for s in self._sources.values() if s.channel == lane.channel and not s.stopped]
        if not sources:
            return []
        rules = {s.rule_id: s for s in sources if s.kind == "t"}
        if rules:
            jobs = await self._claim_triggers(lane, rules)
            if jobs:
                return jobs
        runs = sorted((s for s in sources if s.kind == "c"), key=lambda s: s.run_id or 0)
        for offset in range(len(runs)):
            source = runs[(lane.cursor + offset) % len(runs)]
            jobs = await self._claim_run(source, lane.batch)
            if jobs:
                lane.cursor = (lane.cursor + offset + 1) % len(runs)
                return jobs
        return []

    def _claim_values(self, kind: str, table: Table, channel: str, now: datetime) -> dict[str, Any]:
        return {
            "state": "sending",
            "claimed_by": self.worker_id,
            "lease_until": now + self.lease,
            "attempts": table.c.attempts + 1,
            "message_id": func.coalesce(
                table.c.message_id, self.message_id_expr(kind, table, channel)
            ),
        }

    async def _claim_run(self, source: Source, limit: int) -> list[Job]:
        now = self.clock()
        table = TABLES["c"]
        pick = select(table.c.id).where(
            table.c.run_id == source.run_id,
            table.c.state == "pending",
            or_(table.c.due_at.is_(None), table.c.due_at <= now),
        )
        running = exists().where(CampaignRun.id == source.run_id, CampaignRun.status == "sending")
        stmt = self._claim_stmt("c", pick.order_by(table.c.id).limit(limit), source.channel, now)
        return await self._claim_jobs(
            "c", stmt.where(running), lambda _row: source, source.channel, now
        )

    async def _claim_triggers(self, lane: Lane, rules: dict[int | None, Source]) -> list[Job]:
        now = self.clock()
        table = TABLES["t"]
        pick = (
            select(table.c.id)
            .where(
                table.c.state == "pending",
                table.c.due_at <= now,
                table.c.channel == lane.channel,
                table.c.rule_id.in_([r for r in rules if r is not None]),
            )
            .order_by(table.c.due_at, table.c.id)
            .limit(lane.batch)
        )
        stmt = self._claim_stmt("t", pick, lane.channel, now, table.c.rule_id, table.c.context)
        return await self._claim_jobs(
            "t", stmt, lambda row: rules.get(row.rule_id), lane.channel, now
        )

    def _claim_stmt(
        self, kind: str, pick: Select[Any], channel: str, now: datetime, *extra: Any
    ) -> Update:
        """UPDATE … RETURNING that leases the rows `pick` selects (skipping rows other workers
        hold on PostgreSQL; SQLite has one writer at a time)."""
        table = TABLES[kind]
        if self._pg():
            pick = pick.with_for_update(skip_locked=True)
        return (
            update(table)
            .where(table.c.id.in_(pick.scalar_subquery()))
            .values(**self._claim_values(kind, table, channel, now))
            .returning(
                table.c.id,
                table.c.customer_id,
                table.c.address,
                table.c.message_id,
                table.c.attempts,
                *extra,
            )
        )

    async def _claim_jobs(
        self,
        kind: str,
        stmt: Update,
        source_of: Callable[[Any], Source | None],
        channel: str,
        now: datetime,
    ) -> list[Job]:
        """Run a claim statement; consent and customers are checked in its transaction."""
        async with self.hub.sessions() as session, session.begin():
            result = await session.execute(stmt)
            rows = sorted([row async for row in paced(result)], key=lambda r: r.id)
            if not rows:
                return []
            ready = await self._prepare(session, kind, rows, source_of, channel, now)
        return await self._build_jobs(kind, ready, now)

    async def _prepare(
        self,
        session: AsyncSession,
        kind: str,
        rows: list[Any],
        source_of: Callable[[Any], Source | None],
        channel: str,
        now: datetime,
    ) -> list[tuple[Any, Source, Any]]:
        """Check consent again at send time and load customers (inside the claim's transaction);
        returns what `_build_jobs` turns into jobs once the transaction has committed."""
        table = TABLES[kind]
        touched_runs: set[int] = set()
        suppressed = await consent_list.suppressed_among(
            session, channel, (r.address for r in rows)
        )
        fields: set[str] | None = set()
        for row in rows:
            source = source_of(row)
            used = source.template.customer_fields if source is not None else frozenset()
            if used is None or fields is None:
                fields = None
            else:
                fields |= used
        customers = await load_customers(
            session,
            (r.customer_id for r in rows if r.customer_id),
            None if fields is None else frozenset(fields),
        )
        ready: list[tuple[Any, Source, Any]] = []
        dropped: dict[str, list[int]] = {}
        for row in rows:
            source = source_of(row)
            if source is not None and source.run_id is not None:
                touched_runs.add(source.run_id)
            if row.address in suppressed:
                dropped.setdefault("suppressed|on the suppression list", []).append(row.id)
                continue
            if source is None:
                dropped.setdefault("pending|", []).append(row.id)
                continue
            customer = customers.get(row.customer_id) if row.customer_id else None
            if kind == "c" and customer is None:
                dropped.setdefault("skipped|customer deleted", []).append(row.id)
                continue
            ready.append((row, source, customer))
        for label, ids in dropped.items():
            state, _, error = label.partition("|")
            values: dict[str, Any] = {
                "state": state,
                "claimed_by": None,
                "lease_until": None,
                "attempts": table.c.attempts - 1,
            }
            if error:
                values["error"] = error
            await session.execute(update(table).where(table.c.id.in_(ids)).values(**values))
        if dropped:
            self._dirty_runs.update(touched_runs)
        return ready

    async def _build_jobs(
        self, kind: str, ready: list[tuple[Any, Source, Any]], now: datetime
    ) -> list[Job]:
        """One job per claimed row. What the template sees is put together when the message is
        rendered (`_context`), not here: a claim is a burst of work in the event loop while
        the SMTP replies wait, rendering is spread out message by message."""
        jobs: list[Job] = []
        async for row, source, customer in paced(ready):
            job = Job(
                kind=kind,
                delivery_id=row.id,
                attempt=row.attempts,
                to=row.address,
                message_id=row.message_id,
                customer_id=row.customer_id,
                customer=customer,
                event=getattr(row, "context", None) if kind == "t" else None,
                claimed_at=now,
                source=source,
            )
            jobs.append(job)
            self._claimed[(kind, job.delivery_id)] = job
        return jobs

    def _context(self, job: Job, unsubscribe: str) -> dict[str, Any]:
        """The names the job's template sees (templates.CONTEXT_NAMES)."""
        source = job.source
        customer = job.customer
        if customer is not None:
            channel = source.channel
            customer = {**customer, channel if channel == "email" else "phone": job.to}
        return message_context(
            customer,
            campaign={"id": source.campaign_id, "name": source.name} if job.kind == "c" else None,
            event=job.event,
            unsubscribe_url=unsubscribe,
            tz=source.tz,
            now=job.claimed_at,
        )

    # --- sending --------------------------------------------------------------------------

    async def _renderer(self, lane: Lane) -> None:
        """Render and prepare claimed jobs into `ready`, ahead of the couriers."""
        low = lane.refill_at
        while True:
            job = await lane.queue.get()
            if job is None:
                return
            if lane.queue.qsize() <= low:
                lane.low_water.set()
            try:
                item = await self._render(lane, job)
            except Exception:
                log.exception(
                    "preparing delivery %s%s failed unexpectedly", job.kind, job.delivery_id
                )
                self._outcome_retry(job, "internal error")
                continue
            if item is not None:
                await lane.ready.put(item)

    def _release(self, job: Job) -> None:
        self._outcomes.released.append(job)
        self._flush_soon()

    async def _render(self, lane: Lane, job: Job) -> Ready | None:
        """The job's message, ready to hand over; None when it was released or failed."""
        source = job.source
        if source.stopped or self._stopping:
            self._release(job)
            return None
        messenger = self.messengers.get(source.messenger)
        if messenger is None:
            self._release(job)
            return None
        link = ""
        if job.customer_id:
            link = unsubscribe_url(
                self.hub.config.web.base_url,
                self.hub.config.web.secret_key,
                channel=source.channel,
                customer_id=job.customer_id,
                source=source.link_source,
            )
        try:
            rendered = source.template.render(self._context(job, link))
        except RenderError as err:
            self._outcome_failed(job, str(err))
            await self._note_error(source, str(err))
            return None
        envelope = self._envelope(job, rendered, link)
        if source.kind == "c" and rendered.html and job.customer_id and source.campaign_id:
            rendered = _with_open_pixel(
                rendered,
                open_pixel_url(
                    self.hub.config.web.base_url,
                    self.hub.config.web.secret_key,
                    customer_id=job.customer_id,
                    campaign_id=source.campaign_id,
                ),
            )
        try:
            prepared = messenger.prepare(envelope, rendered)
        except ValidationError as err:
            self._outcome_failed(job, f"refused: {err}")
            await self._note_error(source, str(err))
            return None
        summary = rendered.subject if lane.channel == "email" else rendered.text
        return Ready(job, messenger, prepared, summary)

    async def _courier(self, lane: Lane) -> None:
        """Hand prepared messages to the provider, one at a time, until told to stop."""
        while True:
            item = await lane.ready.get()
            if item is None:
                lane.ready.put_nowait(None)  # for the next courier
                return
            try:
                await self._deliver(lane, item)
            except Exception:
                job = item.job
                log.exception(
                    "sending delivery %s%s failed unexpectedly", job.kind, job.delivery_id
                )
                self._outcome_retry(job, "internal error")

    async def _deliver(self, lane: Lane, item: Ready) -> None:
        job = item.job
        source = job.source
        await lane.limiter.acquire()
        if source.stopped or self._stopping:  # paused while it waited
            self._release(job)
            return
        assert self.journal is not None
        job.gen = self.journal.started(job.kind, job.delivery_id, job.attempt)
        try:
            provider_id = await item.messenger.deliver(item.prepared)
        except DeliveryInDoubt as err:
            job.in_doubt = True  # the journal's "S" without "A" says the same, should we die now
            failure: tuple[str, str, str | None] | None = ("retry", str(err), None)
        except RetryableError as err:
            failure = ("retry", str(err), None)
        except EmailRejected as err:
            failure = ("failed", str(err), err.recipient)
        except (PermanentError, AuthError, ValidationError) as err:
            failure = ("failed", str(err), None)
        else:
            failure = None
            # First thing after the provider's answer: nothing may run in between.
            self.journal.accepted(
                job.gen, job.kind, job.delivery_id, job.attempt, provider_id, time.time()
            )
            sent_at = self.clock()
        if failure is not None:
            kind, error, refused = failure
            if refused:
                # The server refused the address itself: a hard bounce, never mail it again.
                self._outcomes.bounced.append((source.channel, job.to, error))
            if kind == "retry":
                self._outcome_retry(job, f"retryable: {error}")
            else:
                self._outcome_failed(job, f"refused: {error}")
            await self._note_error(source, error)
            return
        self._outcomes.sent.append((job, provider_id, sent_at, item.summary))
        source.consecutive_errors = 0
        self._flush_soon()

    def _envelope(self, job: Job, rendered: Rendered, link: str) -> Envelope:
        headers: dict[str, str] = {}
        if job.source.channel == "email":
            if link:
                # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the URL.
                headers["List-Unsubscribe"] = f"<{link}>"
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            if job.source.kind == "c":
                headers["Precedence"] = "bulk"
                headers["X-Commhub-Campaign"] = str(job.source.campaign_id)
        source = job.source
        return Envelope(
            to=job.to,
            message_id=job.message_id,
            customer_id=job.customer_id,
            from_address=source.from_address,
            headers=headers,
            tag=f"campaign:{source.campaign_id}"
            if source.kind == "c"
            else f"trigger:{source.rule_id}",
        )

    def _outcome_failed(self, job: Job, error: str) -> None:
        self._outcomes.failed.append((job, error[:500]))
        self._flush_soon()

    def _outcome_retry(self, job: Job, error: str) -> None:
        self._outcomes.retry.append((job, error[:500]))
        self._flush_soon()

    async def _note_error(self, source: Source, error: str) -> None:
        source.consecutive_errors += 1
        source.last_error = error
        limit = self.config.max_consecutive_errors
        if limit > 0 and source.consecutive_errors >= limit and not source.stopped:
            source.stopped = True
            reason = f"paused after {source.consecutive_errors} errors in a row; last: {error}"
            if source.campaign_id is not None:
                await self.pause_campaign(source.campaign_id, reason[:500])
            elif source.rule_id is not None:
                await self._deactivate_rule(source.rule_id, reason)
                self._sources.pop(source.key, None)

    # --- recording ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Commit the outcomes recorded so far (see recording.py)."""
        await self._recorder.flush()

    # --- progress -------------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        pause = PROGRESS_SECONDS
        while True:
            await asyncio.sleep(pause)
            started = time.perf_counter()
            try:
                await self.publish_progress()
            except Exception:
                log.exception("publishing campaign progress failed")
            # Counting a huge run is not free: never spend more than ~2% of the time on it.
            pause = max(PROGRESS_SECONDS, 50 * (time.perf_counter() - started))

    async def publish_progress(self) -> None:
        """Publish counts of runs that changed (after their changes committed).

        One publisher at a time: two overlapping calls could otherwise publish a count read
        before a run finished after the one read since, and the screen would keep the stale one."""
        async with self._publishing:
            if not self._dirty_runs:
                return
            # Emptied in place: the recorder shares this set.
            run_ids = set(self._dirty_runs)
            self._dirty_runs.clear()
            events = []
            async with self.hub.sessions() as session:
                for run_id in sorted(run_ids):
                    run = await session.get(CampaignRun, run_id, populate_existing=True)
                    if run is not None:
                        events.append(await run_progress(session, run))
            for event in events:
                await self.hub.bus.publish(TOPIC, event)

    # --- one-off sends --------------------------------------------------------------------

    async def send_test(
        self,
        template: MessageTemplate,
        to: str,
        *,
        customer_id: int | None = None,
        campaign: Campaign | None = None,
    ) -> str:
        """Send one message to one address/number now ("send test"), bypassing runs."""
        self.sync_messengers()
        name = campaign.messenger if campaign else template.channel
        messenger = self.messengers.get(name)
        if messenger is None:
            raise ValidationError(f"no messenger {name!r} is configured", field="messenger")
        async with self.hub.sessions() as session:
            if await consent_list.is_suppressed(session, template.channel, to):
                raise ValidationError(f"{to} is on the suppression list", field="to")
            rendered = await preview(
                session,
                template,
                customer_id=customer_id,
                campaign=campaign,
                base_url=self.hub.config.web.base_url,
            )
        token = secrets.token_hex(8)
        if template.channel == "email":
            message_id = f"<test.{token}.{self._site}@{self._domain}>"
            rendered = Rendered(
                subject=f"[TEST] {rendered.subject}", html=rendered.html, text=rendered.text
            )
        else:
            message_id = f"test{token}-{self._site}"
        envelope = Envelope(
            to=to,
            message_id=message_id,
            customer_id=customer_id,
            from_address=campaign.from_address if campaign else None,
        )
        return await messenger.push(envelope, rendered)

    # --- test helper ----------------------------------------------------------------------

    def idle(self) -> bool:
        """True when nothing is queued, in flight or waiting to be recorded in this process."""
        return (
            not self._claimed
            and not len(self._outcomes)
            and all(lane.queue.empty() and lane.ready.empty() for lane in self.lanes.values())
        )


def _with_open_pixel(rendered: Rendered, url: str) -> Rendered:
    tag = f'<img src="{url}" width="1" height="1" alt="" style="display:none">'
    html = rendered.html
    index = html.lower().rfind("</body>")
    html = html[:index] + tag + html[index:] if index >= 0 else html + tag
    return Rendered(subject=rendered.subject, html=html, text=rendered.text)
