"""The campaign report: per run and per customer source, with bounces, unsubscribes, replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from hub.campaigns.consent import apply_unsubscribe, read_token
from hub.campaigns.engine import CampaignEngine
from hub.campaigns.report import campaign_report, parse_message_id, record_outcome
from hub.consent import is_suppressed, suppress
from hub.models.campaigns import CampaignDelivery, CampaignRun
from hub.timeline import record_interaction
from tests.hub.campaigns.helpers import bulk_customers, wait_for
from tests.hub.campaigns.test_engine import make_campaign, send_now


async def sent_run(hub, running_engine):
    """A finished run: 4 'web' and 3 'fair' customers, one of them suppressed."""
    web_ids = await bulk_customers(hub, 4, source="web")
    fair_ids = await bulk_customers(hub, 3, first=4, source="fair")
    async with hub.sessions() as session, session.begin():
        await suppress(session, "email", "c6@example.test", "unsubscribed")
    campaign_id = await make_campaign(hub)
    async with running_engine(hub) as engine:
        run_id = await send_now(hub, campaign_id, engine)

        async def finished():
            async with hub.sessions() as session:
                run = await session.get(CampaignRun, run_id, populate_existing=True)
                return run is not None and run.status == "finished"

        await wait_for(finished)
    return campaign_id, run_id, web_ids, fair_ids


async def deliveries(hub, run_id):
    async with hub.sessions() as session:
        rows = (
            await session.scalars(
                select(CampaignDelivery)
                .where(CampaignDelivery.run_id == run_id)
                .order_by(CampaignDelivery.customer_id)
            )
        ).all()
    return {row.customer_id: row for row in rows}


async def test_report_per_run_and_per_source(chub, sink, running_engine):
    campaign_id, run_id, web_ids, fair_ids = await sent_run(chub, running_engine)
    rows = await deliveries(chub, run_id)
    # A bounce reported by message id, one reported only as a suppression, an unsubscribe,
    # and two replies (one in time, one too late to count).
    async with chub.sessions() as session, session.begin():
        assert await record_outcome(session, rows[web_ids[0]].message_id, "bounced")
        assert not await record_outcome(session, rows[web_ids[0]].message_id, "bounced")
        assert not await record_outcome(session, "<someone-else@example.org>", "bounced")
        await suppress(session, "email", rows[web_ids[1]].address, "bounced")
        secret = chub.config.web.secret_key
        from hub.campaigns.consent import make_token

        link = read_token(
            secret,
            make_token(secret, channel="email", customer_id=fair_ids[0], source=f"c{campaign_id}"),
        )
        assert link is not None
        await apply_unsubscribe(session, link, "one-click")
        sent_at = rows[fair_ids[1]].sent_at
        await record_interaction(
            session,
            channel="email",
            external_id="<reply-1@customer.test>",
            customer_id=fair_ids[1],
            direction="inbound",
            occurred_at=sent_at + timedelta(hours=3),
            summary="Re: Hello",
        )
        await record_interaction(
            session,
            channel="email",
            external_id="<reply-2@customer.test>",
            customer_id=web_ids[2],
            direction="inbound",
            occurred_at=rows[web_ids[2]].sent_at + timedelta(days=9),
            summary="Re: Hello, much later",
        )
    async with chub.sessions() as session:
        assert await is_suppressed(session, "email", rows[web_ids[0]].address)
    engine = CampaignEngine(chub)
    await engine.attribute_replies()
    async with chub.sessions() as session:
        found = await campaign_report(session, campaign_id)
    totals = found["totals"]
    assert {k: totals[k] for k in ("total", "sent", "suppressed", "bounced", "delivered")} == {
        "total": 7,
        "sent": 6,
        "suppressed": 1,
        "bounced": 2,
        "delivered": 4,
    }
    assert (totals["unsubscribed"], totals["replied"], totals["in_doubt_resends"]) == (1, 1, 0)
    assert [r["run_id"] for r in found["runs"]] == [run_id]
    by_source = {row["source"]: row for row in found["by_source"]}
    assert (by_source["web"]["sent"], by_source["web"]["bounced"], by_source["web"]["replied"]) == (
        4,
        2,
        0,
    )
    assert (by_source["fair"]["sent"], by_source["fair"]["replied"]) == (2, 1)
    assert by_source["fair"]["reply_rate"] == 0.5
    assert by_source["fair"]["unsubscribed"] == 1


async def test_segment_on_campaign_history(chub, sink, running_engine):
    campaign_id, _run_id, web_ids, fair_ids = await sent_run(chub, running_engine)
    async with chub.sessions() as session, session.begin():
        await session.execute(
            update(CampaignDelivery)
            .where(CampaignDelivery.customer_id == web_ids[0])
            .values(opened_at=datetime.now(UTC), replied_at=datetime.now(UTC))
        )
    from hub.campaigns.schedule import zone
    from hub.campaigns.segments import Clock, matching_ids

    clock = Clock(datetime.now(UTC), zone("UTC"))

    async def ids(op):
        async with chub.sessions() as session:
            return set(
                await matching_ids(
                    session, {"field": "campaign", "op": op, "value": campaign_id}, clock
                )
            )

    received = set(web_ids) | set(fair_ids[:2])
    assert await ids("received") == received
    assert await ids("not_received") == {fair_ids[2]}  # the suppressed one
    assert await ids("opened") == {web_ids[0]}
    assert await ids("not_opened") == received - {web_ids[0]}
    assert await ids("replied") == {web_ids[0]}
    assert await ids("not_replied") == received - {web_ids[0]}


def test_message_ids_we_made_are_recognised():
    assert parse_message_id("<cd12.0123abcd@shop.test>") == ("c", 12)
    assert parse_message_id("td7-0123abcd") == ("t", 7)
    assert parse_message_id("<cd12.0123abcd@shop.test") is None
    assert parse_message_id("<x@y>") is None
