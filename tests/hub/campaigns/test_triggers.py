"""Triggered messages: a missed call gets one SMS (real Kannel), a new customer one welcome email,
a long silence one follow-up; consent and delays as for campaigns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from hub.campaigns import service
from hub.campaigns.defaults import install_defaults
from hub.campaigns.engine import CampaignEngine
from hub.consent import suppress
from hub.customers import create_customer
from hub.models.campaigns import MessageTemplate, TriggerDelivery
from hub.models.customers import Customer
from hub.models.interactions import Interaction
from tests.connectors.sms.conftest import eventually, kannel_rig  # noqa: F401 (fixture)
from tests.hub.campaigns.helpers import wait_for


async def template_id(hub, name):
    async with hub.sessions() as session, session.begin():
        await install_defaults(session)
        return await session.scalar(select(MessageTemplate.id).where(MessageTemplate.name == name))


async def rule(hub, **data):
    async with hub.sessions() as session, session.begin():
        created = await service.create_rule(session, {"name": data.pop("name", "r"), **data}, None)
    return created.id


async def deliveries(hub, rule_id):
    async with hub.sessions() as session:
        return (
            await session.scalars(
                select(TriggerDelivery)
                .where(TriggerDelivery.rule_id == rule_id)
                .order_by(TriggerDelivery.id)
                .execution_options(populate_existing=True)
            )
        ).all()


async def customer(hub, **data):
    async with hub.sessions() as session, session.begin():
        return (await create_customer(session, data, "DE")).id


async def test_missed_call_sends_one_sms_through_kannel(kannel_rig, tmp_path):  # noqa: F811
    hub = kannel_rig.hub
    max_id = await customer(hub, name="Max Muster", phones=["+49 151 12345678"])
    rule_id = await rule(
        hub,
        name="call back",
        event="call.missed",
        channel="sms",
        template_id=await template_id(hub, "Missed call (SMS)"),
    )
    engine = CampaignEngine(hub, journal_dir=str(tmp_path / "j"), tick_seconds=0.2)
    await engine.start()
    try:
        event = {"type": "call.missed", "caller": "0151 12345678", "linkedid": "1700000000.1"}
        await hub.bus.publish("internal:call.missed", event)
        await hub.bus.publish("internal:call.missed", dict(event))  # redelivered: still once
        landline = {"type": "call.missed", "caller": "+49 30 1234567", "linkedid": "1700000000.2"}
        await hub.bus.publish("internal:call.missed", landline)
        got = await kannel_rig.smsc.next_message(receiver="+4915112345678")
        assert "Hello Max, sorry we missed your call" in got.text(False)

        async def settled():
            rows = await deliveries(hub, rule_id)
            return len(rows) == 2 and {r.state for r in rows} == {"sent", "skipped"} and rows

        rows = sorted(await eventually(settled), key=lambda r: r.subject_key)
        assert rows[0].customer_id == max_id and rows[0].subject_key == "call:1700000000.1"
        assert (rows[1].subject_key, rows[1].state) == ("call:1700000000.2", "skipped")
        assert rows[1].error == "the caller has no mobile number"
        assert await kannel_rig.smsc.drain() == 0  # nothing else went out

        async def delivered():
            async with hub.sessions() as session:
                row = await session.scalar(
                    select(Interaction)
                    .where(
                        Interaction.channel == "sms", Interaction.external_id == rows[0].message_id
                    )
                    .execution_options(populate_existing=True)
                )
                return row if row is not None and row.status == "delivered" else None

        logged = await eventually(delivered)
        assert logged.customer_id == max_id
        assert logged.data.get("trigger_rule_id") == rule_id, logged.data
    finally:
        await engine.stop()


async def test_sms_campaign_report_counts_delivery_reports(kannel_rig, tmp_path):  # noqa: F811
    hub = kannel_rig.hub
    for n in range(3):
        await customer(hub, name=f"Person {n}", phones=[f"+49 151 2000000{n}"], source="fair")
    async with hub.sessions() as session, session.begin():
        campaign = await service.create_campaign(
            session,
            {
                "name": "sms spring",
                "channel": "sms",
                "template_id": await template_id(hub, "Birthday (SMS)"),
            },
            None,
        )
        await service.schedule_campaign(session, campaign.id, {"now": True})
    engine = CampaignEngine(hub, journal_dir=str(tmp_path / "j"), tick_seconds=0.2)
    await engine.start()
    try:
        for _ in range(3):
            await kannel_rig.smsc.next_message()
        from hub.campaigns.report import campaign_report

        async def all_delivered():
            async with hub.sessions() as session:
                found = await campaign_report(session, campaign.id)
            done = found["totals"]["delivered"] == 3 and found["runs"][0]["status"] == "finished"
            return found if done else None

        found = await eventually(all_delivered)
        assert found["totals"]["sent"] == 3
        assert found["by_source"][0]["source"] == "fair"
        assert found["runs"][0]["status"] == "finished"
    finally:
        await engine.stop()


async def test_new_customer_gets_one_welcome_email(chub, sink, running_engine):
    record, _port = sink
    rule_id = await rule(
        chub,
        name="welcome",
        event="customer.created",
        channel="email",
        template_id=await template_id(chub, "Welcome (email)"),
        condition={"field": "tag", "op": "has", "value": "vip"},
    )
    async with running_engine(chub) as engine:
        vip = await customer(chub, name="Vera Vip", emails=["vera@x.test"], tags=["vip"])
        plain = await customer(chub, name="Paul Plain", emails=["paul@x.test"])
        for customer_id in (vip, plain, vip):
            await chub.bus.publish(
                "internal:customer.created",
                {"type": "customer.created", "customer_id": customer_id},
            )
        # No event for this one (the bus was down, say): the catch-up scan finds it.
        quiet = await customer(chub, name="Quinn Quiet", emails=["quinn@x.test"], tags=["vip"])
        await engine.scan_triggers()
        await wait_for(lambda: _received(record, 2))
        await asyncio.sleep(0.2)
    assert record.by_rcpt() == {"vera@x.test": 1, "quinn@x.test": 1}
    rows = await deliveries(chub, rule_id)
    assert {r.customer_id for r in rows} == {vip, quiet}
    assert record.received[0].data.count(b"List-Unsubscribe-Post") == 1


async def _received(record, n):
    return len(record.received) >= n


async def test_existing_customers_get_no_welcome(chub):
    await customer(chub, name="Old Olga", emails=["olga@x.test"])
    rule_id = await rule(
        chub,
        name="welcome",
        event="customer.created",
        channel="email",
        template_id=await template_id(chub, "Welcome (email)"),
    )
    engine = CampaignEngine(chub)
    assert await engine.scan_triggers() == 0
    assert await deliveries(chub, rule_id) == []


async def test_no_contact_follow_up_once_per_silence(chub):
    rule_id = await rule(
        chub,
        name="follow up",
        event="no_contact",
        days=30,
        channel="email",
        template_id=await template_id(chub, "Welcome (email)"),
    )
    now = datetime(2025, 6, 1, 9, tzinfo=UTC)
    silent = await customer(chub, name="Sam Silent", emails=["sam@x.test"])
    recent = await customer(chub, name="Rita Recent", emails=["rita@x.test"])
    never = await customer(chub, name="Nia New", emails=["nia@x.test"])
    async with chub.sessions() as session, session.begin():
        for customer_id, contacted, created in (
            (silent, now - timedelta(days=40), now - timedelta(days=400)),
            (recent, now - timedelta(days=5), now - timedelta(days=400)),
            (never, None, now - timedelta(days=3)),
        ):
            await session.execute(
                update(Customer)
                .where(Customer.id == customer_id)
                .values(last_contacted_at=contacted, created_at=created)
            )
    engine = CampaignEngine(chub, clock=lambda: now)
    assert await engine.scan_triggers() == 1
    assert await engine.scan_triggers() == 0  # the same silence is followed up once
    # Contacted again 35 days ago, silent since: a new silence, a new follow-up.
    async with chub.sessions() as session, session.begin():
        await session.execute(
            update(Customer)
            .where(Customer.id == silent)
            .values(last_contacted_at=now - timedelta(days=35))
        )
    assert await engine.scan_triggers() == 1
    rows = await deliveries(chub, rule_id)
    assert [r.customer_id for r in rows] == [silent, silent]
    assert rows[0].subject_key != rows[1].subject_key


async def test_triggered_messages_honour_consent_and_delay(chub, sink, running_engine):
    record, _port = sink
    rule_id = await rule(
        chub,
        name="welcome later",
        event="customer.created",
        channel="email",
        delay_seconds=3600,
        template_id=await template_id(chub, "Welcome (email)"),
    )
    now = [datetime.now(UTC)]
    async with running_engine(chub, clock=lambda: now[0]) as engine:
        ok = await customer(chub, name="Olli Ok", emails=["olli@x.test"])
        blocked = await customer(chub, name="Bea Blocked", emails=["bea@x.test"])
        async with chub.sessions() as session, session.begin():
            await suppress(session, "email", "bea@x.test", "unsubscribed")
        await engine.scan_triggers()
        rows = await deliveries(chub, rule_id)
        assert {(r.customer_id, r.state) for r in rows} == {
            (ok, "pending"),
            (blocked, "suppressed"),
        }
        await asyncio.sleep(0.5)
        assert record.received == []  # not due for an hour
        now[0] += timedelta(hours=1, seconds=1)
        engine.wake()
        await wait_for(lambda: _received(record, 1))
    assert record.by_rcpt() == {"olli@x.test": 1}
