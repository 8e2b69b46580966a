"""The engine on SQLite and PostgreSQL with a real SMTP server: each recipient exactly once,
consent, pause/resume/cancel, automatic pause, unknown messengers, retries, scheduling, recovery."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

from sqlalchemy import func, select, update

from connectors.smtp import SmtpSender
from hub.campaigns import service
from hub.campaigns.engine import CampaignEngine, SlidingWindowLimiter
from hub.campaigns.journal import Journal
from hub.campaigns.messengers import EmailMessenger, MessengerRegistry
from hub.campaigns.report import campaign_report
from hub.config import SmtpConfig
from hub.consent import is_suppressed, suppress
from hub.models.campaigns import Campaign, CampaignDelivery, CampaignRun, CampaignSchedule
from hub.models.interactions import Interaction
from tests.hub.campaigns.helpers import bulk_customers, wait_for

TEMPLATE = {
    "name": "news",
    "channel": "email",
    "subject": "Hello {{ customer.first_name }}",
    "html": "<html><body><p>Hi {{ customer.name }}</p>"
    "<a href='{{ unsubscribe_url }}'>unsubscribe</a></body></html>",
    "text": "Hi {{ customer.name }}\nUnsubscribe: {{ unsubscribe_url }}",
}


async def make_campaign(hub, *, filter_=None, messenger=None, name="Spring", tz="UTC"):
    async with hub.sessions() as session, session.begin():
        template = await service.create_template(session, {**TEMPLATE, "name": f"t-{name}"}, None)
        segment = await service.create_segment(
            session, {"name": f"s-{name}", "filter": filter_ or {}}, None
        )
        campaign = await service.create_campaign(
            session,
            {
                "name": name,
                "channel": "email",
                "template_id": template.id,
                "segment_id": segment.id,
                "timezone": tz,
                **({"messenger": messenger} if messenger else {}),
            },
            None,
        )
    return campaign.id


async def send_now(hub, campaign_id, engine=None):
    async with hub.sessions() as session, session.begin():
        run_id = (await service.schedule_campaign(session, campaign_id, {"now": True}))["run_id"]
    if engine is not None:
        engine.wake()
    return run_id


async def states(hub, run_id):
    async with hub.sessions() as session:
        rows = await session.execute(
            select(CampaignDelivery.state, func.count())
            .where(CampaignDelivery.run_id == run_id)
            .group_by(CampaignDelivery.state)
        )
        return dict(rows.all())


async def campaign_row(hub, campaign_id):
    async with hub.sessions() as session:
        return await session.get(Campaign, campaign_id, populate_existing=True)


async def run_row(hub, run_id):
    async with hub.sessions() as session:
        return await session.get(CampaignRun, run_id, populate_existing=True)


async def test_every_recipient_gets_exactly_one_message(chub, sink, running_engine):
    record, _port = sink
    await bulk_customers(chub, 300)
    await bulk_customers(chub, 5, first=300, email=False)  # no address: skipped
    campaign_id = await make_campaign(chub)
    async with chub.sessions() as session, session.begin():
        await suppress(session, "email", "c7@example.test", "unsubscribed")
    events = []
    chub.bus.subscribe(lambda topic, event: events.append((topic, event)))
    async with running_engine(chub) as engine:
        run_id = await send_now(chub, campaign_id, engine)

        async def done():
            run = await run_row(chub, run_id)
            return run.status == "finished"

        await wait_for(done)
        await engine.publish_progress()
    assert await states(chub, run_id) == {"sent": 299, "suppressed": 1, "skipped": 5}
    counts = record.by_rcpt()
    assert len(counts) == 299 and set(counts.values()) == {1}
    assert "c7@example.test" not in counts
    assert (await campaign_row(chub, campaign_id)).status == "finished"

    message = message_from_bytes(record.received[0].data, policy=policy.default)
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith("<http://127.0.0.1:8080/u/email.")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].startswith("<cd") and message["Message-ID"].endswith("@localhost>")
    html = message.get_body(("html",)).get_content()
    assert "/open.gif" in html and unsubscribe.strip("<>") in html

    async with chub.sessions() as session:
        rows = (
            await session.scalars(select(Interaction).where(Interaction.channel == "email"))
        ).all()
    assert len(rows) == 299
    assert {r.data["campaign_id"] for r in rows} == {campaign_id}
    assert {r.data["run_id"] for r in rows} == {run_id}
    assert all(r.direction == "outbound" and r.status == "sent" for r in rows)
    assert {r.external_id for r in rows} == {r.message_id for r in record.received}

    progress = [e for t, e in events if t == "role:marketer" and e["type"] == "campaign.progress"]
    assert progress and progress[-1]["sent"] == 299 and progress[-1]["status"] == "finished"
    assert progress[-1]["queued"] == 0 and progress[-1]["suppressed"] == 1


async def test_a_run_is_finished_when_its_last_message_is_recorded(hub_with, sink, running_engine):
    """The scheduler pass that marks runs finished comes when the engine runs out of work,
    not at its next tick (an hour away here): progress shows "finished" right away."""
    record, _port = sink
    async with hub_with(tick_seconds=3600.0) as hub:
        await bulk_customers(hub, 300)  # outlasts the scheduler pass that "send now" wakes
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _finished(hub, run_id), timeout=20.0)
        assert await states(hub, run_id) == {"sent": 300}
        assert len(record.by_rcpt()) == 300


async def test_the_next_batch_is_claimed_while_a_whole_batch_is_still_queued(
    hub_with, sink, running_engine
):
    """A claim takes tens of milliseconds (more behind another writer's lock): it starts
    while a full batch is still queued, so the renderer never runs out meanwhile."""
    record, _port = sink
    async with hub_with(batch_size=20) as hub:
        await bulk_customers(hub, 120)
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            queued_at_claim: list[int] = []
            claim = engine.claim

            async def watched(lane):
                before = lane.queue.qsize()
                jobs = await claim(lane)
                if jobs:
                    queued_at_claim.append(before)
                return jobs

            engine.claim = watched  # type: ignore[method-assign]
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _finished(hub, run_id), timeout=20.0)
        assert await states(hub, run_id) == {"sent": 120}
        assert len(record.by_rcpt()) == 120
    # The first claim finds the queue empty; each later one more than half a batch still there
    # (a refill at half a batch let a slow claim drain the queue).
    assert len(queued_at_claim) == 6 and queued_at_claim[0] == 0
    assert min(queued_at_claim[1:]) > 10, queued_at_claim


async def test_a_run_with_nobody_to_send_to_is_finished_at_once(hub_with, sink, running_engine):
    record, _port = sink
    # One customer per streamed chunk: streaming outlasts the pass that "send now" wakes.
    async with hub_with(tick_seconds=3600.0, batch_size=1) as hub:
        await bulk_customers(hub, 40, email=False)
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _finished(hub, run_id), timeout=20.0)
        assert await states(hub, run_id) == {"skipped": 40}
        assert record.by_rcpt() == {}


async def test_materialising_streams_in_chunks_and_is_idempotent(hub_with):
    async with hub_with(batch_size=10) as hub:
        await bulk_customers(hub, 95)
        campaign_id = await make_campaign(
            hub, filter_={"field": "custom.n", "op": "in", "value": list(range(0, 95, 2))}
        )
        run_id = await send_now(hub, campaign_id)
        engine = CampaignEngine(hub)
        steps = 0
        while await engine.materialise_step():
            steps += 1
        assert steps == 2  # 48 recipients in chunks of 40 (4 x batch size)
        run = await run_row(hub, run_id)
        assert run.materialised_at is not None
        # Replaying a chunk (a crash before the checkpoint) adds nothing.
        async with hub.sessions() as session, session.begin():
            await session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id)
                .values(materialise_cursor=0, materialised_at=None)
            )
        while await engine.materialise_step():
            pass
        assert await states(hub, run_id) == {"pending": 48}


async def test_two_workers_share_a_run_without_sending_twice(hub_with, sink, running_engine):
    record, _port = sink
    # Small claims at a bounded pace: otherwise a fast worker can send all 600 before the other
    # has finished its first tick (it did on uvloop), and the test proves nothing about sharing.
    async with hub_with(batch_size=20, email_rate_per_second=300.0) as chub:
        await bulk_customers(chub, 600)
        campaign_id = await make_campaign(chub)
        async with (
            running_engine(chub, worker_id="worker-a") as first,
            running_engine(chub, worker_id="worker-b") as second,
        ):
            run_id = await send_now(chub, campaign_id, first)
            second.wake()
            await wait_for(lambda: _finished(chub, run_id))
    counts = record.by_rcpt()
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert first.stats["sent"] + second.stats["sent"] == 600
    assert first.stats["sent"] > 0 and second.stats["sent"] > 0


async def _finished(hub, run_id):
    return (await run_row(hub, run_id)).status == "finished"


async def test_pause_stops_sending_and_resume_finishes(hub_with, sink, running_engine):
    record, _port = sink
    async with hub_with(email_rate_per_second=100.0) as hub:
        await bulk_customers(hub, 250)
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _sent_at_least(record, 20))
            async with hub.sessions() as session, session.begin():
                await service.set_campaign_state(session, campaign_id, "pause")
            await wait_for(lambda: _no_sending(hub, run_id))
            await asyncio.sleep(0.3)
            paused_count = len(record.received)
            await asyncio.sleep(0.5)
            assert len(record.received) == paused_count  # nothing leaves while paused
            assert paused_count < 250
            assert (await run_row(hub, run_id)).status == "paused"
            async with hub.sessions() as session, session.begin():
                await service.set_campaign_state(session, campaign_id, "resume")
            engine.wake()
            await wait_for(lambda: _finished(hub, run_id))
    assert len(record.by_rcpt()) == 250 and set(record.by_rcpt().values()) == {1}


async def _sent_at_least(record, n):
    return len(record.received) >= n


async def _no_sending(hub, run_id):
    return "sending" not in await states(hub, run_id)


async def test_cancel_skips_what_was_not_sent(hub_with, sink, running_engine):
    record, _port = sink
    async with hub_with(email_rate_per_second=100.0) as hub:
        await bulk_customers(hub, 250)
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _sent_at_least(record, 10))
            async with hub.sessions() as session, session.begin():
                await service.set_campaign_state(session, campaign_id, "cancel", "wrong list")
            await wait_for(lambda: _no_sending(hub, run_id))
            await asyncio.sleep(0.3)
        counts = await states(hub, run_id)
        assert counts.get("pending", 0) == 0
        assert counts["sent"] == len(record.received) < 250
        assert counts["sent"] + counts["skipped"] == 250
        campaign = await campaign_row(hub, campaign_id)
        assert (campaign.status, campaign.status_reason) == ("cancelled", "wrong list")


async def test_a_run_of_errors_pauses_the_campaign(hub_with, sink, running_engine):
    record, _port = sink
    record.fail_all_data = "554 5.7.1 content refused"
    async with hub_with(max_consecutive_errors=5, email_concurrency=2) as hub:
        await bulk_customers(hub, 50)
        campaign_id = await make_campaign(hub)
        async with running_engine(hub) as engine:
            run_id = await send_now(hub, campaign_id, engine)
            await wait_for(lambda: _paused(hub, campaign_id))
            await wait_for(lambda: _no_sending(hub, run_id))
        campaign = await campaign_row(hub, campaign_id)
        assert "5 errors in a row" in campaign.status_reason
        assert "content refused" in campaign.status_reason
        counts = await states(hub, run_id)
        assert 5 <= counts["failed"] <= 6  # the one in flight on the other connection may fail too
        assert counts["pending"] == 50 - counts["failed"]


async def _paused(hub, campaign_id):
    return (await campaign_row(hub, campaign_id)).status == "paused"


async def test_unknown_messenger_cancels_with_a_reason(chub, sink, running_engine):
    await bulk_customers(chub, 3)
    campaign_id = await make_campaign(chub, messenger="fax")
    async with running_engine(chub, messenger_grace=0.0) as engine:
        await send_now(chub, campaign_id, engine)
        await wait_for(lambda: _cancelled(chub, campaign_id))
    campaign = await campaign_row(chub, campaign_id)
    assert "unknown messenger 'fax'" in campaign.status_reason
    assert "email" in campaign.status_reason


async def _cancelled(hub, campaign_id):
    return (await campaign_row(hub, campaign_id)).status == "cancelled"


async def test_refused_recipient_is_failed_and_suppressed(chub, sink, running_engine):
    record, _port = sink
    record.refuse_rcpt["c2@example.test"] = "550 5.1.1 no such user"
    await bulk_customers(chub, 5)
    campaign_id = await make_campaign(chub)
    async with running_engine(chub) as engine:
        run_id = await send_now(chub, campaign_id, engine)
        await wait_for(lambda: _finished(chub, run_id))
    assert await states(chub, run_id) == {"sent": 4, "failed": 1}
    async with chub.sessions() as session:
        assert await is_suppressed(session, "email", "c2@example.test")


async def the_delivery(hub, run_id):
    """The delivery row of a one-recipient run."""
    async with hub.sessions() as session:
        return await session.scalar(
            select(CampaignDelivery).where(CampaignDelivery.run_id == run_id)
        )


async def test_deferred_message_is_retried_later_with_the_same_message_id(
    chub, sink, running_engine
):
    record, _port = sink
    record.fail_all_data = "451 4.3.0 try again later"
    await bulk_customers(chub, 1)
    campaign_id = await make_campaign(chub)
    now = [datetime.now(UTC)]
    async with running_engine(chub, clock=lambda: now[0]) as engine:
        run_id = await send_now(chub, campaign_id, engine)

        async def retried():
            row = await the_delivery(chub, run_id)
            return row is not None and row.state == "pending" and row.attempts == 1

        await wait_for(retried)
        record.fail_all_data = None
        now[0] += timedelta(minutes=5)  # past the back-off
        engine.wake()
        await wait_for(lambda: _finished(chub, run_id))
    row = await the_delivery(chub, run_id)
    assert (row.state, row.attempts) == ("sent", 2)
    assert [r.message_id for r in record.received] == [row.message_id]


async def test_a_lost_reply_is_resent_with_the_same_message_id_and_counted(
    chub, sink, running_engine
):
    # The server took the message and the connection broke before its 250: it may have arrived,
    # so it is sent again (same Message-ID, which lets the receiving side drop the copy) and
    # counted in doubt on the delivery row and in the report, never silently.
    record, _port = sink
    record.lose_replies = 1
    await bulk_customers(chub, 1)
    campaign_id = await make_campaign(chub)
    now = [datetime.now(UTC)]
    async with running_engine(chub, clock=lambda: now[0]) as engine:
        run_id = await send_now(chub, campaign_id, engine)

        async def waiting_to_resend():
            row = await the_delivery(chub, run_id)
            return row is not None and row.state == "pending" and row.in_doubt == 1

        await wait_for(waiting_to_resend)
        now[0] += timedelta(minutes=5)  # past the back-off
        engine.wake()
        await wait_for(lambda: _finished(chub, run_id))
        assert engine.stats["in_doubt_resends"] == 1
    row = await the_delivery(chub, run_id)
    async with chub.sessions() as session:
        report = await campaign_report(session, campaign_id)
    assert (row.state, row.attempts, row.in_doubt) == ("sent", 2, 1)
    assert [r.message_id for r in record.received] == [row.message_id, row.message_id]
    assert [r["in_doubt_resends"] for r in report["runs"]] == [1]


async def test_schedules_fire_once_per_slot_and_late_slots_collapse(chub):
    await bulk_customers(chub, 2)
    campaign_id = await make_campaign(chub, tz="Europe/Berlin")
    start = datetime(2025, 3, 27, 12, tzinfo=UTC)
    async with chub.sessions() as session, session.begin():
        result = await service.schedule_campaign(
            session, campaign_id, {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}, now=start
        )
    assert result["schedule"]["next_fire_at"] == "2025-03-28T08:00:00+00:00"
    clock = [start]
    first = CampaignEngine(chub, clock=lambda: clock[0], worker_id="a")
    second = CampaignEngine(chub, clock=lambda: clock[0], worker_id="b")
    assert await first.fire_due_schedules() == 0
    # Down from before the 28th until 31 March 10:00 local: one late run, for the 31st.
    clock[0] = datetime(2025, 3, 31, 8, 0, tzinfo=UTC)
    fired = await asyncio.gather(first.fire_due_schedules(), second.fire_due_schedules())
    assert sorted(fired) == [0, 1]
    assert await first.fire_due_schedules() == 0
    async with chub.sessions() as session:
        runs = (await session.scalars(select(CampaignRun))).all()
        schedule = await session.scalar(select(CampaignSchedule))
    assert len(runs) == 1
    assert runs[0].scheduled_for == datetime(2025, 3, 31, 7, tzinfo=UTC)  # 09:00 CEST
    assert runs[0].missed_since == datetime(2025, 3, 28, 8, tzinfo=UTC)  # 09:00 CET
    assert schedule.next_fire_at == datetime(2025, 4, 1, 7, tzinfo=UTC)
    # While paused nothing fires; after resuming the missed slot fires once, late.
    async with chub.sessions() as session, session.begin():
        await service.set_campaign_state(session, campaign_id, "pause")
    clock[0] = datetime(2025, 4, 3, 12, tzinfo=UTC)
    assert await first.fire_due_schedules() == 0
    async with chub.sessions() as session, session.begin():
        await service.set_campaign_state(session, campaign_id, "resume")
    assert await first.fire_due_schedules() == 1
    async with chub.sessions() as session:
        latest = await session.scalar(select(CampaignRun).order_by(CampaignRun.id.desc()))
    assert latest.scheduled_for == datetime(2025, 4, 3, 7, tzinfo=UTC)


async def test_one_off_schedule_at_a_local_time(chub):
    campaign_id = await make_campaign(chub, tz="Europe/Berlin")
    async with chub.sessions() as session, session.begin():
        result = await service.schedule_campaign(session, campaign_id, {"at": "2030-07-01T09:00"})
    assert result["schedule"]["next_fire_at"] == "2030-07-01T07:00:00+00:00"
    clock = [datetime(2030, 7, 1, 7, 0, 1, tzinfo=UTC)]
    engine = CampaignEngine(chub, clock=lambda: clock[0])
    assert await engine.fire_due_schedules() == 1
    clock[0] += timedelta(days=1)
    assert await engine.fire_due_schedules() == 0


async def test_recovery_of_a_dead_workers_journal(chub, tmp_path):
    """What a worker killed mid-batch leaves: accepted -> sent (and logged), handed over but not
    confirmed -> in doubt, sent again; claimed but never tried -> pending, attempt not counted."""
    await bulk_customers(chub, 3)
    campaign_id = await make_campaign(chub)
    run_id = await send_now(chub, campaign_id)
    registry = MessengerRegistry()
    # Never called: claims only need the campaign's messenger to exist.
    registry.register(EmailMessenger(SmtpSender(SmtpConfig(host="127.0.0.1", port=9))))
    engine = CampaignEngine(chub, registry, journal_dir=str(tmp_path / "j"), worker_id="alive")
    while await engine.materialise_step():
        pass
    await engine.refresh_sources()
    source = next(iter(engine._sources.values()))
    jobs = await engine._claim_run(source, 10)
    assert len(jobs) == 3
    # Hand the claim to a "dead" worker and write its journal.
    async with chub.sessions() as session, session.begin():
        await session.execute(
            update(CampaignDelivery)
            .where(CampaignDelivery.run_id == run_id)
            .values(claimed_by="dead-worker")
        )
    engine._claimed.clear()
    dead = Journal(tmp_path / "j", "dead-worker")
    accepted, doubtful, untouched = jobs
    gen = dead.started("c", accepted.delivery_id, accepted.attempt)
    dead.accepted(
        gen, "c", accepted.delivery_id, accepted.attempt, accepted.message_id, time.time()
    )
    dead.started("c", doubtful.delivery_id, doubtful.attempt)
    for entry in list(dead._files.values()):
        os.close(entry.fd)  # the process dies: its locks go, its files stay
    assert await engine.recover() == 1
    async with chub.sessions() as session:
        rows = {
            r.id: r
            for r in (
                await session.scalars(
                    select(CampaignDelivery).where(CampaignDelivery.run_id == run_id)
                )
            ).all()
        }
        logged = (await session.scalars(select(Interaction))).all()
    assert (rows[accepted.delivery_id].state, rows[accepted.delivery_id].provider_id) == (
        "sent",
        accepted.message_id,
    )
    assert (rows[doubtful.delivery_id].state, rows[doubtful.delivery_id].in_doubt) == ("pending", 1)
    assert (rows[untouched.delivery_id].state, rows[untouched.delivery_id].attempts) == (
        "pending",
        0,
    )
    assert [i.external_id for i in logged] == [accepted.message_id]
    assert logged[0].data["campaign_id"] == campaign_id
    assert logged[0].summary == "Campaign message: Spring"
    assert not list((tmp_path / "j").glob("dead-worker.*"))
    # The resend keeps the Message-ID fixed at the first claim.
    again = await engine._claim_run(source, 10)
    assert {j.message_id for j in again} == {doubtful.message_id, untouched.message_id}


async def test_expired_leases_return_to_pending_as_in_doubt(chub):
    await bulk_customers(chub, 2)
    campaign_id = await make_campaign(chub)
    run_id = await send_now(chub, campaign_id)
    engine = CampaignEngine(chub, lease_seconds=30)
    while await engine.materialise_step():
        pass
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with chub.sessions() as session, session.begin():
        await session.execute(
            update(CampaignDelivery)
            .where(CampaignDelivery.run_id == run_id)
            .values(state="sending", claimed_by="gone-elsewhere", lease_until=past)
        )
    assert await engine.return_expired_leases() == 2
    assert await states(chub, run_id) == {"pending": 2}


async def test_sliding_window_limiter_allows_rate_per_window(monkeypatch):
    clock = [100.0]
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr("hub.campaigns.engine.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("hub.campaigns.engine.asyncio.sleep", fake_sleep)
    limiter = SlidingWindowLimiter(5)
    for _ in range(5):
        await limiter.acquire()
    assert slept == []
    await limiter.acquire()  # the sixth waits for the first to leave the window
    assert slept == [1.0]
    assert json.dumps(SlidingWindowLimiter(0).limit)  # unlimited keeps a sane shape
