"""Recording outcomes: what became of each claimed delivery, committed in groups.

Senders never wait for the database. Each outcome (sent, failed, to retry, released unsent, and
the hard bounces that suppress an address) is appended to one in-memory buffer, and a flush
commits everything buffered in one transaction: the delivery rows' new states together with the
timeline rows of the messages sent. Committing in groups is what lets the engine keep pace with
its providers, and it costs no safety: the journal (journal.py) has every provider acceptance
the moment it happens, so outcomes lost with the process are rebuilt from it by recovery.py.
Journal entries are settled only after their outcome has committed, so the journal always
covers the gap between the provider's "accepted" and our "sent".

Every write is guarded by "claimed by this worker and still sending": a row this worker no
longer holds (its lease expired and it went back to pending) is left alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, exists, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from hub import consent as consent_list
from hub.campaigns.jobs import TABLES, Job, chunks
from hub.campaigns.journal import Journal
from hub.db import dialect_insert
from hub.driver_sql import DriverStatement
from hub.models.base import utcnow
from hub.models.campaigns import CampaignRun
from hub.models.interactions import Interaction
from hub.services import Hub

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_BACKOFF = timedelta(seconds=60)
# Outcomes are committed in groups: the journal already holds every acceptance the moment it
# happens, so a longer interval costs no safety, only a little progress latency.
FLUSH_SECONDS = 0.25
# ...but one group's bookkeeping runs in the event loop without a break, holding back the
# providers' replies: keep groups moderate so that stall stays a few milliseconds.
FLUSH_ITEMS = 500
# Rows per statement: each is one uninterrupted loop step, and while it runs every SMTP
# connection that gets its reply sits idle. With 100 rows a step took ~1.2 ms; at 20 (and short
# job-building steps in engine.py) steps stay near 0.25 ms and the same 10k-message run went ~6-11%
# faster (medians of 6 alternating runs each), for a little more per-statement overhead.
CHUNK = 20


@dataclass
class Outcomes:
    """Outcomes not yet committed, in the order they happened."""

    sent: list[tuple[Job, str, datetime, str]] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    retry: list[tuple[Job, str]] = field(default_factory=list)
    released: list[Job] = field(default_factory=list)
    bounced: list[tuple[str, str, str]] = field(default_factory=list)  # channel, address, why

    def __len__(self) -> int:
        return len(self.sent) + len(self.failed) + len(self.retry) + len(self.released)

    def take(self) -> Outcomes:
        """Everything buffered, leaving this buffer empty. The buffer stays the same object: the
        engine's senders hold it directly, so appending costs them no extra lookup."""
        taken = Outcomes(
            sent=self.sent,
            failed=self.failed,
            retry=self.retry,
            released=self.released,
            bounced=self.bounced,
        )
        self.sent, self.failed, self.retry, self.released, self.bounced = [], [], [], [], []
        return taken

    def merge(self, other: Outcomes) -> None:
        """Put back outcomes that could not be committed, ahead of the newer ones."""
        self.bounced[:0] = other.bounced
        self.sent[:0] = other.sent
        self.failed[:0] = other.failed
        self.retry[:0] = other.retry
        self.released[:0] = other.released


class Recorder:
    """The engine's outcome buffer and the group commits that empty it (one per engine).

    What it shares with the engine is passed in: the journal (a getter, as the engine opens and
    closes it), the claimed jobs it forgets once settled, the runs whose progress changed, and
    the counters."""

    def __init__(
        self,
        hub: Hub,
        worker_id: str,
        journal: Callable[[], Journal | None],
        clock: Callable[[], datetime],
        claimed: dict[tuple[str, int], Job],
        dirty_runs: set[int],
        stats: dict[str, int],
        on_drained: Callable[[], None] = lambda: None,
    ) -> None:
        self.hub = hub
        self.worker_id = worker_id
        self.clock = clock
        self.outcomes = Outcomes()
        self.wake = asyncio.Event()
        self._journal = journal
        self._claimed = claimed
        self._dirty_runs = dirty_runs
        self._stats = stats
        self._on_drained = on_drained
        self._lock = asyncio.Lock()

    def flush_soon(self) -> None:
        """Commit now rather than at the next interval once a group is full, or once nothing
        claimed is still waiting for its outcome (no group to wait for)."""
        waiting = len(self.outcomes)
        if waiting >= FLUSH_ITEMS or waiting >= len(self._claimed):
            self.wake.set()

    async def run(self) -> None:
        """Flush every FLUSH_SECONDS, or sooner when woken, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), FLUSH_SECONDS)
            self.wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("recording outcomes failed; the journal holds them; retrying")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Commit outcomes in one transaction: delivery states and timeline rows together."""
        async with self._lock:
            batch = self.outcomes.take()
            if not len(batch):
                return
            try:
                async with self.hub.sessions() as session, session.begin():
                    await self._write_outcomes(session, batch)
            except BaseException:
                self.outcomes.merge(batch)
                raise
        settled: list[int] = []
        for job, *_ in batch.sent:
            self._settle(job, settled)
        for job, _ in batch.failed:
            self._settle(job, settled)
        for job, _ in batch.retry:
            self._settle(job, settled)
        for job in batch.released:
            self._settle(job, settled)
        journal = self._journal()
        if journal is not None and settled:
            journal.settled(settled)
        if self.outcomes:
            self.flush_soon()  # outcomes that came in while this group was being written
        elif not self._claimed and any(job.kind == "c" for job, *_ in batch.sent):
            self._on_drained()
        self._stats["sent"] += len(batch.sent)
        self._stats["failed"] += len(batch.failed)
        self._stats["retried"] += len(batch.retry)
        self._stats["in_doubt_resends"] += sum(
            1 for job, _ in batch.retry if job.in_doubt and job.attempt < MAX_ATTEMPTS
        )

    def _settle(self, job: Job, settled: list[int]) -> None:
        self._claimed.pop((job.kind, job.delivery_id), None)
        if job.gen is not None:
            settled.append(job.gen)
        if job.kind == "c" and job.source.run_id is not None:
            self._dirty_runs.add(job.source.run_id)

    async def _write_outcomes(self, session: AsyncSession, batch: Outcomes) -> None:
        mine = self.worker_id
        for channel, address, why in batch.bounced:
            await consent_list.suppress(session, channel, address, "bounced", why[:500])
        for kind, table in TABLES.items():
            sent = [item for item in batch.sent if item[0].kind == kind]
            guard = and_(
                table.c.id == bindparam("b_id"),
                table.c.claimed_by == mine,
                table.c.state == "sending",
            )
            if sent:
                # Email's provider id is our Message-ID: one UPDATE per chunk, no per-row
                # parameters (the delivery's sent_at is the chunk's last; the timeline row
                # below keeps each message's own time).
                plain = [(j, at) for j, pid, at, _ in sent if pid == j.message_id]
                for start in range(0, len(plain), CHUNK):
                    part = plain[start : start + CHUNK]
                    ids = [j.delivery_id for j, _ in part]
                    ids += ids[-1:] * (CHUNK - len(ids))  # one statement for every chunk
                    marks: dict[str, Any] = {f"id{i}": d for i, d in enumerate(ids)}
                    marks.update(mine=mine, at=max(at for _, at in part))
                    await _MARK_SENT[kind].run(session, [marks])
                other = [item for item in sent if item[1] != item[0].message_id]
                if other:
                    await session.execute(
                        update(table).where(guard).values(**sent_with_provider_id()),
                        [{"b_id": j.delivery_id, "b_pid": p, "b_at": at} for j, p, at, _ in other],
                    )
                for start in range(0, len(sent), CHUNK):
                    await insert_timeline(
                        session,
                        [
                            timeline_for_job(j, pid, at, summary)
                            for j, pid, at, summary in sent[start : start + CHUNK]
                        ],
                    )
            failed = [item for item in batch.failed if item[0].kind == kind]
            if failed:
                await session.execute(
                    update(table)
                    .where(guard)
                    .values(
                        state="failed", error=bindparam("b_err"), claimed_by=None, lease_until=None
                    ),
                    [{"b_id": j.delivery_id, "b_err": err} for j, err in failed],
                )
            retry = [item for item in batch.retry if item[0].kind == kind]
            if retry:
                now = self.clock()
                give_up = [(j, e) for j, e in retry if j.attempt >= MAX_ATTEMPTS]
                again = [(j, e) for j, e in retry if j.attempt < MAX_ATTEMPTS]
                if give_up:
                    await session.execute(
                        update(table)
                        .where(guard)
                        .values(
                            state="failed",
                            error=bindparam("b_err"),
                            claimed_by=None,
                            lease_until=None,
                            in_doubt=table.c.in_doubt + bindparam("b_doubt"),
                        ),
                        [
                            {
                                "b_id": j.delivery_id,
                                "b_err": f"gave up after {j.attempt} attempts; {e}"[:500],
                                "b_doubt": int(j.in_doubt),
                            }
                            for j, e in give_up
                        ],
                    )
                if again:
                    await session.execute(
                        update(table)
                        .where(guard)
                        .values(
                            state=pending_state(kind, table),
                            error=pending_error(kind, table, bindparam("b_err")),
                            due_at=bindparam("b_due"),
                            claimed_by=None,
                            lease_until=None,
                            # A message that may have arrived is sent again (same Message-ID):
                            # counted, as recovery counts the ones a crash left in doubt.
                            in_doubt=table.c.in_doubt + bindparam("b_doubt"),
                        ),
                        [
                            {
                                "b_id": j.delivery_id,
                                "b_err": e,
                                "b_due": now + RETRY_BACKOFF * j.attempt,
                                "b_doubt": int(j.in_doubt),
                            }
                            for j, e in again
                        ],
                    )
            released = [j.delivery_id for j in batch.released if j.kind == kind]
            for chunk in chunks(released, 500):
                await session.execute(
                    update(table)
                    .where(
                        table.c.id.in_(chunk),
                        table.c.claimed_by == mine,
                        table.c.state == "sending",
                    )
                    .values(**unclaimed(kind, table))
                )


# --- the hot path's two statements (hub/driver_sql.py: compiled once, no per-row ORM work) ---


def _mark_sent(table: Table) -> DriverStatement:
    """CHUNK claimed rows ("id0".."id<CHUNK-1>", held by "mine") marked sent at "at", their
    provider's id being our Message-ID (email: no per-row values)."""
    return DriverStatement(
        lambda _dialect: (
            update(table)
            .where(
                table.c.id.in_([bindparam(f"id{i}") for i in range(CHUNK)]),
                table.c.claimed_by == bindparam("mine"),
                table.c.state == "sending",
            )
            .values(
                state="sent", sent_at=bindparam("at"), claimed_by=None, lease_until=None, error=""
            )
        )
    )


_MARK_SENT = {kind: _mark_sent(table) for kind, table in TABLES.items()}


def _timeline_insert(dialect: Dialect) -> Any:
    """Timeline rows (every column but the id), a message already logged left alone."""
    table: Table = Interaction.__table__  # type: ignore[assignment]
    return (
        dialect_insert(dialect)(table)
        .values({c.name: bindparam(c.name) for c in table.c if c.name != "id"})
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )


_TIMELINE_INSERT = DriverStatement(_timeline_insert)


# --- going back to pending ----------------------------------------------------------------


def sent_with_provider_id() -> dict[str, Any]:
    """Values marking a claimed row sent, with the provider's id ("b_pid") and the time of the
    acceptance ("b_at") as per-row parameters."""
    return {
        "state": "sent",
        "provider_id": bindparam("b_pid"),
        "sent_at": bindparam("b_at"),
        "claimed_by": None,
        "lease_until": None,
        "error": "",
    }


def unclaimed(kind: str, table: Table) -> dict[str, Any]:
    """Values returning a claimed row that was never handed over to pending: the claim was not
    an attempt, so it is not counted."""
    return {
        "state": pending_state(kind, table),
        "error": pending_error(kind, table, table.c.error),
        "claimed_by": None,
        "lease_until": None,
        "attempts": table.c.attempts - 1,
    }


def _cancelled(table: Table) -> Any:
    return exists().where(CampaignRun.id == table.c.run_id, CampaignRun.status == "cancelled")


def pending_state(kind: str, table: Table) -> Any:
    """Back to pending, unless its campaign was cancelled meanwhile (then it never goes)."""
    if kind != "c":
        return "pending"
    return case((_cancelled(table), "skipped"), else_="pending")


def pending_error(kind: str, table: Table, otherwise: Any) -> Any:
    """The error to keep with `pending_state`: why it was skipped, else `otherwise`."""
    if kind != "c":
        return otherwise
    return case((_cancelled(table), "campaign cancelled"), else_=otherwise)


# --- the customer's timeline --------------------------------------------------------------


def timeline_for_job(job: Job, provider_id: str, sent_at: datetime, summary: str) -> dict[str, Any]:
    """The timeline row of a message this process sent."""
    source = job.source
    data: dict[str, Any] = {"delivery_id": job.delivery_id, "to": job.to}
    if provider_id != job.message_id:
        data["provider_id"] = provider_id
    if source.kind == "c":
        data.update(campaign_id=source.campaign_id, campaign=source.name, run_id=source.run_id)
    else:
        data.update(trigger_rule_id=source.rule_id, trigger=source.name)
    return _sent_interaction(
        source.channel, job.message_id, job.customer_id, sent_at, summary, data
    )


def timeline_row(
    kind: str,
    row: Any,
    names: dict[int, tuple[int, str]],
    sent_at: datetime,
    summary: str,
) -> dict[str, Any]:
    """The timeline row of a delivery known only from the database (a recovered acceptance);
    `names` maps run id to (campaign id, name), or rule id to (rule id, name)."""
    if kind == "c":
        campaign_id, name = names.get(row.run_id, (None, ""))
        data = {
            "campaign_id": campaign_id,
            "campaign": name,
            "run_id": row.run_id,
            "delivery_id": row.id,
            "to": row.address,
        }
    else:
        rule_id, name = names.get(row.rule_id, (None, ""))
        data = {
            "trigger_rule_id": rule_id,
            "trigger": name,
            "delivery_id": row.id,
            "to": row.address,
        }
    return _sent_interaction(row.channel, row.message_id, row.customer_id, sent_at, summary, data)


def _sent_interaction(
    channel: str,
    message_id: str,
    customer_id: int | None,
    sent_at: datetime,
    summary: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    """An `interactions` row (the timeline) for one outbound message, keyed by its id."""
    return {
        "channel": channel,
        "external_id": message_id,
        "customer_id": customer_id,
        "direction": "outbound",
        "status": "sent",
        "occurred_at": sent_at,
        "ended_at": None,
        "user_id": None,
        "summary": summary[:200],
        "data": data,
        "created_at": utcnow(),
    }


async def insert_timeline(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Every sent message on the customer's timeline, linked to its campaign or rule."""
    rows = [r for r in rows if r["external_id"]]
    if not rows:
        return
    await _TIMELINE_INSERT.run(session, rows)
    sms = {r["external_id"]: r["data"] for r in rows if r["channel"] == "sms"}
    if sms:
        # The SMS service logged these itself (it tracks their delivery reports): add the
        # link to the campaign or rule to its row instead of writing a second one.
        existing = await session.execute(
            select(Interaction.id, Interaction.external_id, Interaction.data).where(
                Interaction.channel == "sms", Interaction.external_id.in_(list(sms))
            )
        )
        changes = [
            {"b_id": row.id, "b_data": {**(row.data or {}), **sms[row.external_id]}}
            for row in existing
            if "delivery_id" not in (row.data or {})
        ]
        if changes:
            table: Table = Interaction.__table__  # type: ignore[assignment]
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(data=bindparam("b_data")),
                changes,
            )
