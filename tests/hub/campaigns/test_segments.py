"""Segment filters on SQLite and PostgreSQL: every field, the live count, and refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update

from hub.campaigns.schedule import zone
from hub.campaigns.segments import Clock, count_matching, matching_ids, validate_filter
from hub.customers import create_customer
from hub.errors import ValidationError
from hub.models.customers import Customer

NOW = datetime(2025, 6, 15, 10, 0, tzinfo=UTC)
CLOCK = Clock(NOW, zone("Europe/Berlin"))


@pytest.fixture
async def people(chub):
    """Six customers with different attributes; returns name -> id."""
    specs = [
        {
            "name": "Anna",
            "source": "web",
            "city": "Berlin",
            "tags": ["vip"],
            "emails": ["anna@x.test"],
            "phones": ["+49 151 11111111"],
            "birthday": "1990-06-15",
            "custom": {"level": "gold", "visits": 12},
        },
        {
            "name": "Bert",
            "source": "fair",
            "city": "Hamburg",
            "tags": ["vip", "b2b"],
            "emails": ["bert@x.test"],
            "birthday": "1985-06-16",
            "custom": {"level": "silver", "visits": 3},
        },
        {
            "name": "Cara",
            "source": "web",
            "city": "München",
            "phones": ["030 1234567"],
            "custom": {"newsletter": True},
        },
        {
            "name": "Dan O'Hara",
            "source": "referral",
            "city": "Berlin",
            "emails": ["dan@x.test"],
            "birthday": "2000-02-29",
        },
        {"name": "Eve 100%", "source": "", "region": "Bavaria", "tags": ["b2b"]},
        {"name": "Finn", "source": "web", "city": "berlin", "emails": ["finn@x.test"]},
    ]
    ids = {}
    async with chub.sessions() as session, session.begin():
        for spec in specs:
            customer = await create_customer(session, spec, "DE")
            ids[spec["name"].split()[0]] = customer.id
        await session.execute(
            update(Customer)
            .where(Customer.id == ids["Anna"])
            .values(last_contacted_at=NOW - timedelta(days=2), created_at=NOW - timedelta(days=400))
        )
        await session.execute(
            update(Customer)
            .where(Customer.id == ids["Bert"])
            .values(last_contacted_at=NOW - timedelta(days=90), created_at=NOW - timedelta(days=10))
        )
    return ids


async def names(hub, people, spec, clock=CLOCK):
    async with hub.sessions() as session:
        found = set(await matching_ids(session, spec, clock))
        assert await count_matching(session, spec, clock) == len(found)
    return {name for name, cid in people.items() if cid in found}


async def test_empty_filter_matches_everyone(chub, people):
    assert await names(chub, people, {}) == set(people)


CASES = [
    ({"field": "source", "op": "eq", "value": "web"}, {"Anna", "Cara", "Finn"}),
    ({"field": "source", "op": "in", "value": ["fair", "referral"]}, {"Bert", "Dan"}),
    ({"field": "source", "op": "empty"}, {"Eve"}),
    ({"field": "city", "op": "contains", "value": "BERL"}, {"Anna", "Dan", "Finn"}),
    ({"field": "name", "op": "contains", "value": "100%"}, {"Eve"}),
    ({"field": "name", "op": "starts_with", "value": "Dan O'"}, {"Dan"}),
    ({"field": "region", "op": "eq", "value": "Bavaria"}, {"Eve"}),
    ({"field": "tag", "op": "has", "value": "VIP"}, {"Anna", "Bert"}),
    ({"field": "tag", "op": "has_all", "value": ["vip", "b2b"]}, {"Bert"}),
    ({"field": "tag", "op": "has_none", "value": ["vip", "b2b"]}, {"Cara", "Dan", "Finn"}),
    ({"field": "has_email", "op": "is", "value": False}, {"Cara", "Eve"}),
    ({"field": "has_mobile", "op": "is", "value": True}, {"Anna"}),
    ({"field": "has_phone", "op": "is", "value": True}, {"Anna", "Cara"}),
    ({"field": "custom.level", "op": "eq", "value": "gold"}, {"Anna"}),
    ({"field": "custom.visits", "op": "eq", "value": 3}, {"Bert"}),
    ({"field": "custom.newsletter", "op": "eq", "value": True}, {"Cara"}),
    ({"field": "custom.level", "op": "exists"}, {"Anna", "Bert"}),
    (
        {"field": "custom.level", "op": "ne", "value": "gold"},
        {"Bert", "Cara", "Dan", "Eve", "Finn"},
    ),
    ({"field": "custom.level", "op": "in", "value": ["gold", "silver"]}, {"Anna", "Bert"}),
    ({"field": "birthday", "op": "today"}, {"Anna"}),
    ({"field": "birthday", "op": "month", "value": 2}, {"Dan"}),
    ({"field": "birthday", "op": "empty"}, {"Cara", "Eve", "Finn"}),
    ({"field": "last_contacted_at", "op": "within_days", "value": 30}, {"Anna"}),
    ({"field": "last_contacted_at", "op": "older_than_days", "value": 30}, {"Bert"}),
    ({"field": "last_contacted_at", "op": "empty"}, {"Cara", "Dan", "Eve", "Finn"}),
    ({"field": "created_at", "op": "before", "value": "2025-01-01"}, {"Anna"}),
    ({"not": {"field": "source", "op": "eq", "value": "web"}}, {"Bert", "Dan", "Eve"}),
    (
        {
            "any": [
                {"field": "tag", "op": "has", "value": "b2b"},
                {
                    "all": [
                        {"field": "source", "op": "eq", "value": "web"},
                        {"field": "has_email", "op": "is", "value": True},
                    ]
                },
            ]
        },
        {"Anna", "Bert", "Eve", "Finn"},
    ),
    ({"field": "source", "op": "eq", "value": "web' OR '1'='1"}, set()),
]


async def test_fields_and_operators(chub, people):
    # One database for all cases: creating one per case would make this test slow.
    for spec, expected in CASES:
        assert await names(chub, people, spec) == expected, spec


async def test_birthday_today_uses_the_local_date(chub, people):
    # 23:30 UTC on 15 June is already 16 June in Berlin: Bert's birthday.
    late = Clock(datetime(2025, 6, 15, 22, 30, tzinfo=UTC), zone("Europe/Berlin"))
    assert await names(chub, people, {"field": "birthday", "op": "today"}, late) == {"Bert"}


async def test_leap_day_birthdays_are_celebrated_on_the_28th(chub, people):
    feb28 = Clock(datetime(2025, 2, 28, 9, tzinfo=UTC), zone("UTC"))
    assert await names(chub, people, {"field": "birthday", "op": "today"}, feb28) == {"Dan"}
    leap = Clock(datetime(2028, 2, 28, 9, tzinfo=UTC), zone("UTC"))
    assert await names(chub, people, {"field": "birthday", "op": "today"}, leap) == set()


@pytest.mark.parametrize(
    "spec",
    [
        [],
        {"field": "password_hash", "op": "eq", "value": "x"},
        {"field": "source", "op": "drop", "value": "x"},
        {"field": "source", "op": "eq", "value": 5},
        {"field": "tag", "op": "has_any", "value": "vip"},
        {"field": "custom.a'b", "op": "eq", "value": "x"},
        {"field": "birthday", "op": "month", "value": 13},
        {"field": "created_at", "op": "before", "value": "yesterday"},
        {"all": {"field": "source", "op": "eq", "value": "web"}},
        {"sql": "1=1"},
        {"field": "campaign", "op": "received", "value": "1; DROP TABLE customers"},
        {"not": {"not": {"not": {"not": {"not": {"not": {"not": {}}}}}}}},
    ],
)
def test_bad_filters_are_refused_with_the_place(spec):
    with pytest.raises(ValidationError) as caught:
        validate_filter(spec)
    assert str(caught.value).startswith("filter")


def test_date_without_zone_is_read_in_the_campaign_zone():
    validate_filter({"field": "created_at", "op": "after", "value": "2025-01-31T09:00:00"})
    validate_filter({"field": "created_at", "op": "after", "value": str(date(2025, 1, 31))})
