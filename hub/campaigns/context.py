"""What a message template sees: customers loaded a batch at a time, and the context around them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.campaigns.templates import OpenFields
from hub.db import among
from hub.driver_sql import DriverQuery
from hub.eventloop import paced
from hub.models.customers import ContactPoint, Customer, CustomerTag

EMPTY_CUSTOMER: dict[str, Any] = {
    "id": None,
    "name": "",
    "first_name": "",
    "last_name": "",
    "company": "",
    "source": "",
    "city": "",
    "region": "",
    "birthday": None,
    "email": "",
    "phone": "",
    "tags": [],
    "custom": OpenFields(),
    "created_at": None,
}


def address_expr(channel: str) -> ColumnElement[Any]:
    """A customer's address on a channel as a correlated subquery: the first email, or the first
    mobile number (any number if none is marked mobile)."""
    if channel == "email":
        stmt = (
            select(ContactPoint.value)
            .where(ContactPoint.customer_id == Customer.id, ContactPoint.kind == "email")
            .order_by(ContactPoint.id)
            .limit(1)
        )
    else:
        stmt = (
            select(ContactPoint.value)
            .where(ContactPoint.customer_id == Customer.id, ContactPoint.kind == "phone")
            .order_by(case((ContactPoint.label == "mobile", 0), else_=1), ContactPoint.id)
            .limit(1)
        )
    return stmt.correlate(Customer).scalar_subquery()


def _split_name(name: str) -> tuple[str, str]:
    first, _, last = name.strip().partition(" ")
    return first, last.strip()


_COLUMNS = {
    "company": Customer.company,
    "source": Customer.source,
    "city": Customer.city,
    "region": Customer.region,
    "birthday": Customer.birthday,
    "custom": Customer.custom,
    "created_at": Customer.created_at,
}


_CUSTOMER_QUERIES: dict[tuple[str, ...], DriverQuery] = {}


def _customers_query(keys: tuple[str, ...]) -> DriverQuery:
    """The customers' id, name and these columns, for a list of ids ("ids"): one query per set
    of columns a template uses, compiled once (a claim runs it for every batch)."""
    query = _CUSTOMER_QUERIES.get(keys)
    if query is None:
        columns = [_COLUMNS[key] for key in keys]
        query = _CUSTOMER_QUERIES[keys] = DriverQuery(
            lambda dialect: select(Customer.id, Customer.name, *columns).where(
                among(Customer.id, dialect, key="ids")
            )
        )
    return query


async def load_customers(
    session: AsyncSession, ids: Iterable[int], fields: frozenset[str] | None = None
) -> dict[int, dict[str, Any]]:
    """Template-ready customer dicts for a batch of ids (at most three queries whatever the batch
    size). With `fields`, only those are loaded (the others keep their empty values): a campaign
    mailing 100,000 people reads what its template uses, not every column."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    columns = [column for name, column in _COLUMNS.items() if fields is None or name in fields]
    out: dict[int, dict[str, Any]] = {}
    dialect = session.get_bind().dialect
    keys = tuple(column.key for column in columns)
    rows = await _customers_query(keys).rows(session, {"ids": wanted})
    async for customer_id, name, *values in paced(rows):
        first, last = _split_name(name)
        customer = dict(EMPTY_CUSTOMER)
        customer.update(id=customer_id, name=name, first_name=first, last_name=last)
        customer.update(zip(keys, values, strict=True))
        customer["custom"] = OpenFields(customer.get("custom") or {})
        out[customer_id] = customer
    if fields is not None and not fields & {"tags", "email", "phone"}:
        return out
    tags: dict[int, list[str]] = defaultdict(list)
    for customer_id, tag in await session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag)
        .where(among(CustomerTag.customer_id, dialect, wanted))
        .order_by(CustomerTag.customer_id, CustomerTag.tag)
    ):
        tags[customer_id].append(tag)
    emails: dict[int, str] = {}
    phones: dict[int, tuple[bool, str]] = {}
    for customer_id, kind, value, label in await session.execute(
        select(ContactPoint.customer_id, ContactPoint.kind, ContactPoint.value, ContactPoint.label)
        .where(among(ContactPoint.customer_id, dialect, wanted))
        .order_by(ContactPoint.id)
    ):
        if kind == "email":
            emails.setdefault(customer_id, value)
            continue
        # The first mobile number, else the first number (same choice as address_expr).
        mobile = label == "mobile"
        current = phones.get(customer_id)
        if current is None or (mobile and not current[0]):
            phones[customer_id] = (mobile, value)
    for customer_id, customer in out.items():
        customer["tags"] = tags.get(customer_id, [])
        customer["email"] = emails.get(customer_id, "")
        customer["phone"] = phones.get(customer_id, (False, ""))[1]
    return out


def message_context(
    customer: Mapping[str, Any] | None,
    *,
    campaign: Mapping[str, Any] | None,
    event: Mapping[str, Any] | None,
    unsubscribe_url: str,
    tz: ZoneInfo,
    now: datetime,
) -> dict[str, Any]:
    """The names a template may use (see templates.CONTEXT_NAMES)."""
    local = now.astimezone(tz)
    return {
        # The caller's dict is used as it is (the engine builds one per message; templates
        # cannot change it: the sandbox is immutable).
        "customer": customer if customer is not None else dict(EMPTY_CUSTOMER),
        "campaign": dict(campaign) if campaign is not None else {"id": None, "name": ""},
        "event": OpenFields(event or {}),
        "unsubscribe_url": unsubscribe_url,
        "today": local.date(),
        "now": local,
    }
