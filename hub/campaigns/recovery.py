"""Crash recovery: the claims of a worker that died are folded back into the database.

A worker's claims outlive it in two ways, and each has its way back:
- Its journal (journal.py), whose files are flock'ed while it lives. Any worker that can take
  the lock (at start and on every tick) reads what the dead one started and what its providers
  accepted. An acceptance is recorded as sent, with its timeline row, just as recording.py would
  have done; the personal subject died with the worker, so the campaign's or rule's name stands
  in. A message handed over without an acceptance is in doubt: the provider may or may not have
  it, so it goes back to pending with `in_doubt` counted and is sent again with the same
  Message-ID (fixed at the first claim), which lets the receiving side drop the copy. A row
  claimed but never handed over was not an attempt: back to pending, attempt not counted. One
  journal is one transaction; its files are deleted only once that has committed, and released
  for another try if it fails.
- Its leases. A claim whose lease ran out and whose worker left no journal we can read goes
  back to pending, in doubt (it may have been sent; we cannot know). So that only the dead lose
  their claims, a living worker renews the leases of everything it holds (the engine does so
  every quarter lease)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.campaigns.jobs import TABLES, Job, chunks, claimed_by
from hub.campaigns.journal import DeadJournal, dead_journals
from hub.campaigns.recording import insert_timeline, sent_with_provider_id, timeline_row
from hub.models.campaigns import Campaign, CampaignRun, TriggerRule
from hub.services import Hub

log = logging.getLogger(__name__)


class Recovery:
    """Takes over dead workers' journals and expired leases, and renews this worker's leases.

    It shares with the engine only what it is given: the claimed jobs (whose leases it renews)
    and the counters (it counts in-doubt resends)."""

    def __init__(
        self,
        hub: Hub,
        worker_id: str,
        journal_dir: str,
        clock: Callable[[], datetime],
        lease: timedelta,
        claimed: dict[tuple[str, int], Job],
        stats: dict[str, int],
    ) -> None:
        self.hub = hub
        self.worker_id = worker_id
        self.journal_dir = journal_dir
        self.clock = clock
        self.lease = lease
        self._claimed = claimed
        self._stats = stats

    def _pg(self) -> bool:
        return self.hub.engine.dialect.name == "postgresql"

    async def recover(self) -> int:
        """Fold in the journals of dead workers; returns how many messages were in doubt."""
        in_doubt = 0
        for dead in dead_journals(self.journal_dir, self.worker_id):
            try:
                in_doubt += await self._recover_one(dead)
            except Exception:
                dead.release()
                log.exception("could not recover journal of %s; will retry", dead.worker_id)
                continue
            dead.discard()
        return in_doubt

    async def _recover_one(self, dead: DeadJournal) -> int:
        now = self.clock()
        doubtful = dead.in_doubt
        async with self.hub.sessions() as session, session.begin():
            for kind, table in TABLES.items():
                accepted = {k: v for k, v in dead.accepted.items() if k[0] == kind}
                if accepted:
                    rows = await session.execute(
                        select(
                            table.c.id,
                            table.c.attempts,
                            table.c.customer_id,
                            table.c.channel,
                            table.c.address,
                            table.c.message_id,
                            *(
                                [table.c.run_id]
                                if kind == "c"
                                else [table.c.rule_id, table.c.subject_key]
                            ),
                        ).where(
                            table.c.id.in_([k[1] for k in accepted]),
                            table.c.claimed_by == dead.worker_id,
                            table.c.state == "sending",
                        )
                    )
                    sent = []
                    for row in rows:
                        acc = accepted.get((kind, row.id, row.attempts))
                        if acc is not None:
                            sent.append((row, acc))
                    await self._record_recovered(session, kind, sent)
                doubt_ids = [k[1] for k in doubtful if k[0] == kind]
                for chunk in chunks(doubt_ids, 500):
                    await session.execute(
                        update(table)
                        .where(
                            table.c.id.in_(chunk),
                            table.c.claimed_by == dead.worker_id,
                            table.c.state == "sending",
                        )
                        .values(
                            state="pending",
                            claimed_by=None,
                            lease_until=None,
                            in_doubt=table.c.in_doubt + 1,
                        )
                    )
                # Claimed, never handed over: the claim was not an attempt.
                await session.execute(
                    update(table)
                    .where(*claimed_by(kind, table, dead.worker_id))
                    .values(
                        state="pending",
                        claimed_by=None,
                        lease_until=None,
                        attempts=func.max(table.c.attempts - 1, 0)
                        if not self._pg()
                        else func.greatest(table.c.attempts - 1, 0),
                    )
                )
        self._stats["in_doubt_resends"] += len(doubtful)
        if dead.accepted or doubtful:
            log.warning(
                "recovered journal of %s at %s: %d accepted, %d in doubt (sent again, same id)",
                dead.worker_id,
                now.isoformat(),
                len(dead.accepted),
                len(doubtful),
            )
        return len(doubtful)

    async def _record_recovered(
        self, session: AsyncSession, kind: str, sent: list[tuple[Any, Any]]
    ) -> None:
        table = TABLES[kind]
        if not sent:
            return
        names = await self._source_names(session, kind, [row for row, _ in sent])
        params = []
        timeline = []
        for row, acc in sent:
            sent_at = datetime.fromtimestamp(acc.at, UTC)
            params.append({"b_id": row.id, "b_pid": acc.provider_id, "b_at": sent_at})
            # The personal subject died with the worker; the campaign's name stands in.
            owner = names.get(row.run_id if kind == "c" else row.rule_id, (None, ""))[1]
            summary = f"{'Campaign' if kind == 'c' else 'Triggered'} message: {owner}"
            timeline.append(timeline_row(kind, row, names, sent_at, summary))
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.state == "sending")
            .values(**sent_with_provider_id()),
            params,
        )
        await insert_timeline(session, timeline)

    async def _source_names(
        self, session: AsyncSession, kind: str, rows: Iterable[Any]
    ) -> dict[int, tuple[int, str]]:
        """(campaign id, name) by run id, or (rule id, name) by rule id."""
        if kind == "c":
            ids = {row.run_id for row in rows}
            result = await session.execute(
                select(CampaignRun.id, Campaign.id, Campaign.name)
                .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                .where(CampaignRun.id.in_(ids))
            )
        else:
            ids = {row.rule_id for row in rows}
            result = await session.execute(
                select(TriggerRule.id, TriggerRule.id, TriggerRule.name).where(
                    TriggerRule.id.in_(ids)
                )
            )
        return {key: (owner, name) for key, owner, name in result}

    async def return_expired_leases(self) -> int:
        """Claims whose worker vanished without a journal we can read go back to pending.

        They may have been sent (we cannot know), so they count as in doubt."""
        now = self.clock()
        total = 0
        async with self.hub.sessions() as session, session.begin():
            active_runs = select(CampaignRun.id).where(
                CampaignRun.status.in_(("sending", "paused"))
            )
            for kind, table in TABLES.items():
                where = [table.c.state == "sending", table.c.lease_until < now]
                if kind == "c":
                    where.append(table.c.run_id.in_(active_runs))
                result = await session.execute(
                    update(table)
                    .where(*where)
                    .values(
                        state="pending",
                        claimed_by=None,
                        lease_until=None,
                        in_doubt=table.c.in_doubt + 1,
                    )
                )
                total += int(getattr(result, "rowcount", 0) or 0)
        if total:
            log.warning("returned %d expired claims to pending (in doubt: sent again)", total)
            self._stats["in_doubt_resends"] += total
        return total

    async def renew_leases(self) -> None:
        """Extend the lease of everything this worker holds."""
        if not self._claimed:
            return
        until = self.clock() + self.lease
        by_kind: dict[str, list[int]] = {"c": [], "t": []}
        for kind, delivery_id in list(self._claimed):
            by_kind[kind].append(delivery_id)
        async with self.hub.sessions() as session, session.begin():
            for kind, ids in by_kind.items():
                table = TABLES[kind]
                for chunk in chunks(ids, 500):
                    await session.execute(
                        update(table)
                        .where(
                            table.c.id.in_(chunk),
                            table.c.claimed_by == self.worker_id,
                            table.c.state == "sending",
                        )
                        .values(lease_until=until)
                    )
