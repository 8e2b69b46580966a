"""Customers: create, change, find (by phone in one index probe), search, merge, the card."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import get_or_not_found
from hub.errors import ValidationError
from hub.models.base import utcnow
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.models.interactions import Interaction, Reminder
from hub.phone import normalize_email, parse_phone
from hub.reminders import open_reminders, reminder_to_dict
from hub.timeline import interaction_to_dict, timeline

TEXT_FIELDS = {"name": 200, "company": 200, "source": 100, "city": 100, "region": 100}
SORTS = {
    "name": Customer.name,
    "created_at": Customer.created_at,
    "updated_at": Customer.updated_at,
}
MAX_TAG = 64


@dataclass(frozen=True)
class Contact:
    """A normalised contact point ready to store."""

    kind: str
    value: str
    label: str = ""


def normalize_contacts(data: Mapping[str, Any], region: str) -> list[Contact]:
    """Phones and emails from API/import input, normalised; ValidationError names the bad one."""
    out: list[Contact] = []
    for item in _as_list(data.get("phones")):
        raw, label = (
            (item.get("value", ""), item.get("label", ""))
            if isinstance(item, dict)
            else (
                str(item),
                "",
            )
        )
        number = parse_phone(raw, region)
        out.append(Contact("phone", number.e164, label or ("mobile" if number.is_mobile else "")))
    for item in _as_list(data.get("emails")):
        raw, label = (
            (item.get("value", ""), item.get("label", ""))
            if isinstance(item, dict)
            else (
                str(item),
                "",
            )
        )
        out.append(Contact("email", normalize_email(raw), label))
    seen: set[tuple[str, str]] = set()
    unique = []
    for c in out:
        if (c.kind, c.value) not in seen:
            seen.add((c.kind, c.value))
            unique.append(c)
    return unique


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise ValidationError(f"expected a list, got {type(value).__name__}")


def clean_tags(value: Any) -> list[str]:
    """Tags trimmed, lower-cased, unique."""
    tags = []
    for tag in _as_list(value):
        if not isinstance(tag, str):
            raise ValidationError("tags must be strings", field="tags")
        tag = tag.strip().lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG:
            raise ValidationError(
                f"tag longer than {MAX_TAG} characters: {tag[:20]}…", field="tags"
            )
        if tag not in tags:
            tags.append(tag)
    return tags


def _apply_fields(customer: Customer, data: Mapping[str, Any]) -> None:
    for key, limit in TEXT_FIELDS.items():
        if key in data:
            value = data[key]
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValidationError(f"{key} must be text", field=key)
            value = value.strip()
            if len(value) > limit:
                raise ValidationError(f"{key} longer than {limit} characters", field=key)
            setattr(customer, key, value)
    if "notes" in data:
        notes = data["notes"] or ""
        if not isinstance(notes, str):
            raise ValidationError("notes must be text", field="notes")
        customer.notes = notes
    if "birthday" in data:
        customer.birthday = _parse_date(data["birthday"])
    if "owner_id" in data:
        owner = data["owner_id"]
        if owner is not None and not isinstance(owner, int):
            raise ValidationError("owner_id must be a user id", field="owner_id")
        customer.owner_id = owner
    if "custom" in data:
        custom = data["custom"] or {}
        if not isinstance(custom, dict) or not all(isinstance(k, str) for k in custom):
            raise ValidationError("custom must be an object", field="custom")
        customer.custom = {**(customer.custom or {}), **custom}
    if not customer.name:
        raise ValidationError("name is required", field="name")


def _parse_date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        for fmt in ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y"):
            try:
                return datetime.strptime(value.strip(), fmt).date()  # noqa: DTZ007 (a date)
            except ValueError:
                continue
    raise ValidationError(
        f"birthday must be a date like 1980-04-30, got {value!r}", field="birthday"
    )


async def _claim_contacts(
    session: AsyncSession, customer: Customer, contacts: Iterable[Contact]
) -> None:
    """Attach contact points; one that belongs to another customer is a conflict."""
    mine = {(c.kind, c.value) for c in customer.contacts}
    for contact in contacts:
        if (contact.kind, contact.value) in mine:
            continue
        owner = await session.scalar(
            select(ContactPoint.customer_id).where(
                ContactPoint.kind == contact.kind, ContactPoint.value == contact.value
            )
        )
        if owner is not None and owner != customer.id:
            raise ValidationError(
                f"{contact.value} already belongs to customer {owner}", field=contact.kind
            )
        customer.contacts.append(
            ContactPoint(kind=contact.kind, value=contact.value, label=contact.label)
        )
        mine.add((contact.kind, contact.value))


def _set_tags(customer: Customer, tags: list[str]) -> None:
    current = {t.tag: t for t in customer.tag_rows}
    customer.tag_rows[:] = [current.get(tag) or CustomerTag(tag=tag) for tag in tags]


async def create_customer(session: AsyncSession, data: Mapping[str, Any], region: str) -> Customer:
    """A new customer from API/import input (validated, contacts normalised)."""
    customer = Customer(name="", custom={}, contacts=[], tag_rows=[])
    _apply_fields(customer, {"name": "", **data} if "name" not in data else data)
    contacts = normalize_contacts(data, region)
    session.add(customer)
    await session.flush()
    await _claim_contacts(session, customer, contacts)
    if "tags" in data:
        _set_tags(customer, clean_tags(data["tags"]))
    await session.flush()
    return customer


async def update_customer(
    session: AsyncSession, customer_id: int, data: Mapping[str, Any], region: str
) -> Customer:
    """PATCH semantics: given fields change; phones/emails/tags given replace the old lists."""
    customer = await get_customer(session, customer_id)
    _apply_fields(customer, data)
    if "phones" in data or "emails" in data:
        contacts = normalize_contacts(data, region)
        kinds = {k for k in ("phone", "email") if f"{k}s" in data}
        keep = {(c.kind, c.value) for c in contacts}
        customer.contacts[:] = [
            c for c in customer.contacts if c.kind not in kinds or (c.kind, c.value) in keep
        ]
        await session.flush()
        await _claim_contacts(session, customer, contacts)
    if "tags" in data:
        _set_tags(customer, clean_tags(data["tags"]))
    customer.updated_at = utcnow()
    await session.flush()
    return customer


async def get_customer(session: AsyncSession, customer_id: int) -> Customer:
    """The customer or NotFound."""
    return await get_or_not_found(session, Customer, customer_id, "customer")


async def delete_customer(session: AsyncSession, customer_id: int) -> None:
    """Remove a customer; their timeline rows stay, unlinked (the call log must not shrink)."""
    customer = await get_customer(session, customer_id)
    await session.delete(customer)


async def find_by_phone(session: AsyncSession, e164: str) -> Customer | None:
    """Who owns this E.164 number: one probe of the unique (kind, value) index."""
    # One joined statement, not "contact point, then session.get": a round trip fewer on the
    # screen-pop path, which keeps this within a few percent of a primary-key get (bench/).
    return await session.scalar(
        select(Customer)
        .join(ContactPoint, ContactPoint.customer_id == Customer.id)
        .where(ContactPoint.kind == "phone", ContactPoint.value == e164)
    )


async def find_by_email(session: AsyncSession, email: str) -> Customer | None:
    """Who owns this email address."""
    return await session.scalar(
        select(Customer)
        .join(ContactPoint, ContactPoint.customer_id == Customer.id)
        .where(ContactPoint.kind == "email", ContactPoint.value == email.strip().lower())
    )


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as err:
        raise ValidationError("bad cursor", field="cursor") from err
    if not isinstance(values, list) or len(values) != 2:
        raise ValidationError("bad cursor", field="cursor")
    return values


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_customers(
    session: AsyncSession,
    *,
    region: str,
    q: str = "",
    phone: str = "",
    email: str = "",
    tag: str = "",
    source: str = "",
    sort: str = "name",
    descending: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Customer], str | None]:
    """Search with filters; keyset paging so page 10,000 costs what page 1 costs."""
    if sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}", field="sort")
    limit = max(1, min(limit, 200))
    column = SORTS[sort]
    stmt = select(Customer)
    if phone:
        stmt = stmt.where(
            Customer.id.in_(
                select(ContactPoint.customer_id).where(
                    ContactPoint.kind == "phone",
                    ContactPoint.value == parse_phone(phone, region).e164,
                )
            )
        )
    if email:
        stmt = stmt.where(
            Customer.id.in_(
                select(ContactPoint.customer_id).where(
                    ContactPoint.kind == "email", ContactPoint.value == email.strip().lower()
                )
            )
        )
    if tag:
        stmt = stmt.where(
            Customer.id.in_(
                select(CustomerTag.customer_id).where(CustomerTag.tag == tag.strip().lower())
            )
        )
    if source:
        stmt = stmt.where(Customer.source == source)
    if q:
        pattern = _like(q.strip())
        digits = "".join(ch for ch in q if ch.isdigit())
        conditions = [
            Customer.name.ilike(pattern, escape="\\"),
            Customer.company.ilike(pattern, escape="\\"),
            Customer.id.in_(
                select(ContactPoint.customer_id).where(
                    ContactPoint.kind == "email",
                    ContactPoint.value.like(_like(q.strip().lower()), escape="\\"),
                )
            ),
        ]
        if len(digits) >= 4:
            conditions.append(
                Customer.id.in_(
                    select(ContactPoint.customer_id).where(
                        ContactPoint.kind == "phone", ContactPoint.value.like(f"%{digits}%")
                    )
                )
            )
        stmt = stmt.where(or_(*conditions))
    if cursor:
        last_value, last_id = _decode_cursor(cursor)
        if sort != "name" and last_value is not None:
            last_value = datetime.fromisoformat(last_value)
        if descending:
            stmt = stmt.where(
                (column < last_value) | ((column == last_value) & (Customer.id < last_id))
            )
        else:
            stmt = stmt.where(
                (column > last_value) | ((column == last_value) & (Customer.id > last_id))
            )
    order = (column.desc(), Customer.id.desc()) if descending else (column, Customer.id)
    rows = list((await session.scalars(stmt.order_by(*order).limit(limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = _encode_cursor([getattr(last, sort), last.id])
    return rows, next_cursor


async def count_customers(session: AsyncSession) -> int:
    """How many customers there are."""
    return int(await session.scalar(select(func.count(Customer.id))) or 0)


def customer_to_dict(c: Customer) -> dict[str, Any]:
    """JSON shape of a customer (the API and the card)."""
    return customer_json(c, [(p.kind, p.value, p.label) for p in c.contacts], c.tags)


def customer_json(
    c: Any, contacts: Sequence[tuple[str, str, str]], tags: Sequence[str]
) -> dict[str, Any]:
    """JSON shape from a Customer or a Core row with the same column names."""
    return {
        "id": c.id,
        "name": c.name,
        "company": c.company,
        "source": c.source,
        "owner_id": c.owner_id,
        "birthday": c.birthday.isoformat() if c.birthday else None,
        "city": c.city,
        "region": c.region,
        "notes": c.notes,
        "custom": c.custom or {},
        "tags": list(tags),
        "phones": [{"value": v, "label": lbl} for k, v, lbl in contacts if k == "phone"],
        "emails": [{"value": v, "label": lbl} for k, v, lbl in contacts if k == "email"],
        "created_at": c.created_at.isoformat() if c.created_at else None,
        "updated_at": c.updated_at.isoformat() if c.updated_at else None,
        "last_contacted_at": c.last_contacted_at.isoformat() if c.last_contacted_at else None,
    }


async def customer_card(session: AsyncSession, customer: Customer) -> dict[str, Any]:
    """What pops on the agent's screen: the customer, last five interactions, open reminders."""
    card = customer_to_dict(customer)
    card["last_interactions"] = [
        interaction_to_dict(i) for i in await timeline(session, customer.id, limit=5)
    ]
    card["open_reminders"] = [
        reminder_to_dict(r) for r in await open_reminders(session, customer_id=customer.id)
    ]
    return card


async def merge_customers(session: AsyncSession, keep_id: int, other_id: int) -> Customer:
    """Fold `other` into `keep`: contacts, tags, timeline, reminders move; empty fields fill."""
    if keep_id == other_id:
        raise ValidationError("cannot merge a customer with itself")
    keep = await get_customer(session, keep_id)
    other = await get_customer(session, other_id)
    for key in (*TEXT_FIELDS, "notes"):
        if not getattr(keep, key) and getattr(other, key):
            setattr(keep, key, getattr(other, key))
    if keep.birthday is None:
        keep.birthday = other.birthday
    keep.custom = {**(other.custom or {}), **(keep.custom or {})}
    await session.execute(
        update(ContactPoint).where(ContactPoint.customer_id == other.id).values(customer_id=keep.id)
    )
    tags = sorted(set(keep.tags) | set(other.tags))
    await session.execute(delete(CustomerTag).where(CustomerTag.customer_id == other.id))
    await session.execute(
        update(Interaction).where(Interaction.customer_id == other.id).values(customer_id=keep.id)
    )
    await session.execute(
        update(Reminder).where(Reminder.customer_id == other.id).values(customer_id=keep.id)
    )
    await session.flush()
    session.expunge(other)
    await session.execute(delete(Customer).where(Customer.id == other_id))
    await session.refresh(keep, ["contacts", "tag_rows"])
    _set_tags(keep, tags)
    keep.updated_at = utcnow()
    await session.flush()
    return keep
