"""Customers on SQLite and PostgreSQL: create, change, find, search and page, merge, the card."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from hub import customers as svc
from hub.errors import NotFound, ValidationError
from hub.models.base import utcnow
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.models.interactions import Interaction
from hub.reminders import create_reminder
from hub.timeline import record_interaction

REGION = "DE"


async def make(sessions, **data):
    async with sessions() as session, session.begin():
        customer = await svc.create_customer(session, data, REGION)
        return customer.id


async def test_create_normalises_contacts_and_tags(sessions):
    cid = await make(
        sessions,
        name="  Max Mustermann ",
        company="ACME GmbH",
        phones=["030 123456", {"value": "0151 23456789", "label": "private"}, "+49 30 123456"],
        emails=["Max@Example.COM"],
        tags=["VIP", " berlin ", "vip"],
        birthday="30.04.1980",
        custom={"kundennr": "K-1"},
    )
    async with sessions() as session:
        customer = await svc.get_customer(session, cid)
        body = svc.customer_to_dict(customer)
    assert body["name"] == "Max Mustermann"
    assert body["phones"] == [
        {"value": "+4930123456", "label": ""},
        {"value": "+4915123456789", "label": "private"},
    ]
    assert body["emails"] == [{"value": "max@example.com", "label": ""}]
    assert body["tags"] == ["berlin", "vip"]
    assert body["birthday"] == "1980-04-30"
    assert body["custom"] == {"kundennr": "K-1"}
    assert body["created_at"] and body["created_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "A", "phones": ["abc"]}, "phone"),
        ({"name": "A", "emails": ["not-an-email"]}, "email"),
        ({"name": "A", "birthday": "30 April"}, "birthday"),
        ({"name": "A", "tags": ["x" * 65]}, "tags"),
        ({"name": "A", "custom": ["not", "an", "object"]}, "custom"),
        ({"name": 42}, "name"),
    ],
)
async def test_create_refuses_bad_input(sessions, data, field):
    with pytest.raises(ValidationError) as caught:
        async with sessions() as session, session.begin():
            await svc.create_customer(session, data, REGION)
    assert caught.value.field == field
    async with sessions() as session:
        assert await svc.count_customers(session) == 0


async def test_a_contact_point_belongs_to_one_customer(sessions):
    first = await make(sessions, name="First", phones=["030 123456"], emails=["a@example.com"])
    with pytest.raises(ValidationError, match=f"already belongs to customer {first}") as caught:
        await make(sessions, name="Second", phones=["+49 30 12 34 56"])
    assert caught.value.field == "phone"
    with pytest.raises(ValidationError, match="already belongs"):
        await make(sessions, name="Third", emails=["A@EXAMPLE.com"])
    second = await make(sessions, name="Second", phones=["030 999999"])
    with pytest.raises(ValidationError, match="already belongs"):
        async with sessions() as session, session.begin():
            await svc.update_customer(session, second, {"phones": ["030123456"]}, REGION)
    # The database enforces it too, for writers that bypass the service.
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(ContactPoint(customer_id=second, kind="phone", value="+4930123456"))
    async with sessions() as session:
        owners = (await session.execute(select(ContactPoint.customer_id))).scalars().all()
    assert sorted(owners) == sorted([first, first, second])


async def test_update_has_patch_semantics(sessions):
    cid = await make(
        sessions, name="Max", company="ACME", phones=["030 123456"], emails=["m@x.de"], tags=["a"]
    )
    async with sessions() as session, session.begin():
        before = (await svc.get_customer(session, cid)).updated_at
        customer = await svc.update_customer(
            session, cid, {"company": "Other", "phones": ["0151 23456789"], "tags": ["b"]}, REGION
        )
        body = svc.customer_to_dict(customer)
    assert body["name"] == "Max"  # not given: unchanged
    assert body["company"] == "Other"
    assert [p["value"] for p in body["phones"]] == ["+4915123456789"]  # replaced
    assert [e["value"] for e in body["emails"]] == ["m@x.de"]  # not given: kept
    assert body["tags"] == ["b"]
    assert customer.updated_at >= before
    async with sessions() as session:
        # The old number is free again.
        assert await svc.find_by_phone(session, "+4930123456") is None
        assert (await svc.find_by_phone(session, "+4915123456789")).id == cid
    with pytest.raises(NotFound):
        async with sessions() as session, session.begin():
            await svc.update_customer(session, 999999, {"name": "x"}, REGION)


async def test_find_by_phone_and_email(sessions):
    cid = await make(sessions, name="Max", phones=["030 123456"], emails=["Max@Example.com"])
    await make(sessions, name="Other", phones=["040 123456"])
    async with sessions() as session:
        assert (await svc.find_by_phone(session, "+4930123456")).id == cid
        assert await svc.find_by_phone(session, "+4930123457") is None
        assert (await svc.find_by_email(session, " MAX@example.COM ")).id == cid
        assert await svc.find_by_email(session, "nobody@example.com") is None
        found = await svc.find_by_phone(session, "+4930123456")
        assert [c.value for c in found.contacts] == ["+4930123456", "max@example.com"]


async def test_delete_keeps_the_timeline_unlinked(sessions):
    cid = await make(sessions, name="Max", phones=["030 123456"], tags=["x"])
    async with sessions() as session, session.begin():
        await record_interaction(session, channel="note", external_id="n-1", customer_id=cid)
    async with sessions() as session, session.begin():
        await svc.delete_customer(session, cid)
    async with sessions() as session:
        assert await session.get(Customer, cid) is None
        assert await session.scalar(select(func.count()).select_from(ContactPoint)) == 0
        assert await session.scalar(select(func.count()).select_from(CustomerTag)) == 0
        row = await session.scalar(select(Interaction))
        assert row is not None and row.customer_id is None
    with pytest.raises(NotFound):
        async with sessions() as session, session.begin():
            await svc.delete_customer(session, cid)


async def search(sessions, **kwargs):
    async with sessions() as session:
        rows, cursor = await svc.search_customers(session, region=REGION, **kwargs)
        return [c.name for c in rows], cursor


async def test_search_by_name_company_phone_email_tag_source(sessions):
    await make(
        sessions, name="Anna Alt", company="Bäckerei Alt", phones=["030 111111"], tags=["vip"]
    )
    await make(
        sessions, name="Bernd Berg", company="Berg & Co", emails=["bernd@berg.de"], source="fair"
    )
    await make(sessions, name="Carla 100% Cotton", phones=["0151 23456789"], tags=["vip", "new"])
    assert (await search(sessions, q="anna"))[0] == ["Anna Alt"]  # case-insensitive
    assert (await search(sessions, q="bäckerei"))[0] == ["Anna Alt"]
    assert (await search(sessions, q="berg.de"))[0] == ["Bernd Berg"]  # email substring
    assert (await search(sessions, q="111111"))[0] == ["Anna Alt"]  # phone digits
    assert (await search(sessions, q="100%"))[0] == ["Carla 100% Cotton"]  # % is literal
    assert (await search(sessions, q="_"))[0] == []  # so is _
    assert (await search(sessions, phone="(030) 111-111"))[0] == ["Anna Alt"]
    assert (await search(sessions, email="BERND@berg.de"))[0] == ["Bernd Berg"]
    assert (await search(sessions, tag="VIP"))[0] == ["Anna Alt", "Carla 100% Cotton"]
    assert (await search(sessions, tag="vip", q="carla"))[0] == ["Carla 100% Cotton"]
    assert (await search(sessions, source="fair"))[0] == ["Bernd Berg"]
    with pytest.raises(ValidationError):
        await search(sessions, phone="junk")


async def test_sort_and_keyset_paging(sessions):
    names = ["Dora", "anton", "Bert", "Cem", "Emil", "Bert"]
    ids = [await make(sessions, name=n) for n in names]
    pages, cursor = [], None
    while True:
        rows, cursor = await search(sessions, limit=2, cursor=cursor)
        pages.append(rows)
        if cursor is None:
            break
    flat = [n for page in pages for n in page]
    assert sorted(flat) == sorted(names) and len(flat) == len(names)  # each exactly once
    assert all(len(p) == 2 for p in pages)
    async with sessions() as session:
        everything, _ = await svc.search_customers(session, region=REGION, limit=200)
    assert [c.name for c in everything] == flat  # pages join up to the one-shot order
    # Newest first, paged: ties on created_at are broken by id.
    seen, cursor = [], None
    while True:
        async with sessions() as session:
            rows, cursor = await svc.search_customers(
                session, region=REGION, sort="created_at", descending=True, limit=4, cursor=cursor
            )
        seen += [c.id for c in rows]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
    async with sessions() as session:
        newest, _ = await svc.search_customers(
            session, region=REGION, sort="created_at", descending=True, limit=1
        )
    assert newest[0].id == ids[-1]
    with pytest.raises(ValidationError, match="sort must be one of"):
        await search(sessions, sort="phone")
    with pytest.raises(ValidationError, match="bad cursor"):
        await search(sessions, cursor="not-a-cursor")


async def test_merge_folds_the_duplicate_in(sessions):
    keep = await make(sessions, name="Max Mustermann", phones=["030 123456"], tags=["a"])
    other = await make(
        sessions,
        name="M. Mustermann",
        company="ACME",
        phones=["0151 23456789"],
        emails=["max@acme.de"],
        tags=["b"],
        birthday="1980-04-30",
        custom={"k": "v"},
    )
    async with sessions() as session, session.begin():
        await record_interaction(session, channel="call", external_id="c-1", customer_id=other)
        await create_reminder(session, title="Call back", customer_id=other)
    async with sessions() as session, session.begin():
        merged = await svc.merge_customers(session, keep, other)
        body = svc.customer_to_dict(merged)
    assert body["name"] == "Max Mustermann"  # kept
    assert body["company"] == "ACME"  # filled
    assert body["birthday"] == "1980-04-30"
    assert body["custom"] == {"k": "v"}
    assert sorted(p["value"] for p in body["phones"]) == ["+4915123456789", "+4930123456"]
    assert body["emails"] == [{"value": "max@acme.de", "label": ""}]
    assert body["tags"] == ["a", "b"]
    async with sessions() as session:
        assert await session.get(Customer, other) is None
        assert (await svc.find_by_email(session, "max@acme.de")).id == keep
        interaction = await session.scalar(select(Interaction))
        assert interaction.customer_id == keep
        card = await svc.customer_card(session, await svc.get_customer(session, keep))
    assert [i["external_id"] for i in card["last_interactions"]] == ["c-1"]
    assert [r["title"] for r in card["open_reminders"]] == ["Call back"]
    with pytest.raises(ValidationError, match="itself"):
        async with sessions() as session, session.begin():
            await svc.merge_customers(session, keep, keep)
    with pytest.raises(NotFound):
        async with sessions() as session, session.begin():
            await svc.merge_customers(session, keep, other)


async def test_card_shows_the_last_five_interactions_newest_first(sessions):
    cid = await make(sessions, name="Max")
    start = utcnow() - timedelta(days=1)
    async with sessions() as session, session.begin():
        for i in range(7):
            await record_interaction(
                session,
                channel="note",
                external_id=f"n-{i}",
                customer_id=cid,
                occurred_at=start + timedelta(minutes=i),
                summary=f"note {i}",
            )
    async with sessions() as session:
        customer = await svc.get_customer(session, cid)
        card = await svc.customer_card(session, customer)
    assert [i["summary"] for i in card["last_interactions"]] == [
        f"note {i}" for i in (6, 5, 4, 3, 2)
    ]
    assert card["last_contacted_at"] is not None
    assert card["birthday"] is None and card["open_reminders"] == []


def test_birthday_parsing_accepts_dates():
    customer = Customer(name="", custom={}, contacts=[], tag_rows=[])
    svc._apply_fields(customer, {"name": "x", "birthday": date(1990, 1, 2)})
    assert customer.birthday == date(1990, 1, 2)
