"""The timeline: one row per (channel, external id), however often and however concurrently."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from hub.customers import create_customer, get_customer
from hub.errors import ValidationError
from hub.models.base import utcnow
from hub.models.interactions import Interaction
from hub.timeline import interaction_to_dict, record_interaction, timeline, update_interaction


async def customer(sessions, name="Max"):
    async with sessions() as session, session.begin():
        return (await create_customer(session, {"name": name}, "DE")).id


async def count(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Interaction)) or 0)


async def test_the_same_external_id_twice_is_one_row(sessions):
    cid = await customer(sessions)
    when = utcnow() - timedelta(minutes=5)
    async with sessions() as session, session.begin():
        first, created = await record_interaction(
            session,
            channel="sms",
            external_id="gw-123",
            customer_id=cid,
            direction="inbound",
            status="received",
            occurred_at=when,
            summary="Hallo",
            data={"from": "+4915123456789"},
        )
    assert created is True
    async with sessions() as session, session.begin():
        again, created = await record_interaction(
            session, channel="sms", external_id="gw-123", customer_id=cid, summary="changed?"
        )
    assert created is False
    assert again.id == first.id
    assert again.summary == "Hallo"  # the first write wins; a replay changes nothing
    assert again.occurred_at == when
    assert await count(sessions) == 1
    # Same external id on another channel is another thing.
    async with sessions() as session, session.begin():
        _, created = await record_interaction(
            session, channel="email", external_id="gw-123", customer_id=cid
        )
    assert created is True
    assert await count(sessions) == 2


async def test_concurrent_writers_make_one_row(sessions):
    cid = await customer(sessions)

    async def write(n: int) -> bool:
        async with sessions() as session, session.begin():
            _, created = await record_interaction(
                session,
                channel="call",
                external_id="1700000000.42",
                customer_id=cid,
                summary=f"writer {n}",
            )
            await asyncio.sleep(0)  # hold the transaction open across a switch
            return created

    results = await asyncio.gather(*(write(n) for n in range(8)))
    assert results.count(True) == 1
    assert await count(sessions) == 1


async def test_refuses_unknown_channel_and_missing_id(sessions):
    async with sessions() as session, session.begin():
        with pytest.raises(ValidationError, match="unknown channel"):
            await record_interaction(session, channel="fax", external_id="x", customer_id=None)
        with pytest.raises(ValidationError, match="external_id is required"):
            await record_interaction(session, channel="note", external_id="", customer_id=None)


async def test_last_contacted_moves_forward_only(sessions):
    cid = await customer(sessions)
    now = utcnow()
    async with sessions() as session, session.begin():
        await record_interaction(
            session, channel="call", external_id="new", customer_id=cid, occurred_at=now
        )
        await record_interaction(
            session,
            channel="call",
            external_id="old",
            customer_id=cid,
            occurred_at=now - timedelta(days=3),
        )
    async with sessions() as session:
        assert (await get_customer(session, cid)).last_contacted_at == now
    # An unknown caller: no customer, still logged.
    async with sessions() as session, session.begin():
        row, created = await record_interaction(
            session, channel="call", external_id="anon", customer_id=None
        )
    assert created and row.customer_id is None


async def test_update_merges_data_and_ignores_unknown(sessions):
    async with sessions() as session, session.begin():
        await record_interaction(
            session,
            channel="sms",
            external_id="m-1",
            customer_id=None,
            status="sent",
            data={"segments": 2},
        )
    async with sessions() as session, session.begin():
        row = await update_interaction(
            session, "sms", "m-1", status="delivered", data={"dlr": "DELIVRD"}
        )
        assert row is not None
        assert await update_interaction(session, "sms", "nope", status="x") is None
    async with sessions() as session:
        stored = await session.scalar(select(Interaction).where(Interaction.external_id == "m-1"))
    assert stored.status == "delivered"
    assert stored.data == {"segments": 2, "dlr": "DELIVRD"}
    body = interaction_to_dict(stored)
    assert body["occurred_at"].endswith("+00:00") and body["channel"] == "sms"


async def test_timeline_pages_newest_first_and_filters(sessions):
    cid = await customer(sessions)
    other = await customer(sessions, "Other")
    start = utcnow() - timedelta(hours=1)
    async with sessions() as session, session.begin():
        for i in range(5):
            await record_interaction(
                session,
                channel="call" if i % 2 else "email",
                external_id=f"x-{i}",
                customer_id=cid,
                occurred_at=start + timedelta(minutes=i),
            )
        await record_interaction(session, channel="call", external_id="o", customer_id=other)
    async with sessions() as session:
        first = await timeline(session, cid, limit=3)
        assert [r.external_id for r in first] == ["x-4", "x-3", "x-2"]
        rest = await timeline(session, cid, limit=3, before=(first[-1].occurred_at, first[-1].id))
        assert [r.external_id for r in rest] == ["x-1", "x-0"]
        calls = await timeline(session, cid, channel="call")
        assert [r.external_id for r in calls] == ["x-3", "x-1"]
