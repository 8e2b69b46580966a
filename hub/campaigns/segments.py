"""Segments: a JSON filter structure compiled to SQL through a whitelist (never raw SQL).

A filter is one of
  {"all": [filter, ...]}   every one matches        {"any": [filter, ...]}  at least one matches
  {"not": filter}          negation                  {}                      every customer
  {"field": F, "op": O, "value": V}                  one condition
with F and O from FIELDS below. Every value is a bound parameter; field names pick columns from a
fixed table, so a user can never reach SQL text."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    extract,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import ValidationError
from hub.models.campaigns import CampaignDelivery, CampaignRun
from hub.models.customers import ContactPoint, Customer, CustomerTag

MAX_DEPTH = 6
MAX_CONDITIONS = 100
MAX_LIST = 1000
_CUSTOM_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$")

TEXT_COLUMNS = {
    "name": Customer.name,
    "company": Customer.company,
    "source": Customer.source,
    "city": Customer.city,
    "region": Customer.region,
}
TEXT_OPS = ("eq", "ne", "in", "not_in", "contains", "starts_with", "empty", "not_empty")
DATE_COLUMNS = {"created_at": Customer.created_at, "last_contacted_at": Customer.last_contacted_at}
DATE_OPS = ("before", "after", "within_days", "older_than_days", "empty", "not_empty")
TAG_OPS = ("has", "has_not", "has_any", "has_all", "has_none")
BIRTHDAY_OPS = ("today", "month", "empty", "not_empty")
CONTACT_FIELDS = ("has_email", "has_phone", "has_mobile")
CUSTOM_OPS = ("eq", "ne", "in", "contains", "exists", "not_exists")
CAMPAIGN_OPS = (
    "received",
    "not_received",
    "opened",
    "not_opened",
    "replied",
    "not_replied",
    "bounced",
    "unsubscribed",
)
ID_OPS = ("in", "not_in")

FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(TEXT_COLUMNS, TEXT_OPS),
    **dict.fromkeys(DATE_COLUMNS, DATE_OPS),
    "tag": TAG_OPS,
    "birthday": BIRTHDAY_OPS,
    **dict.fromkeys(CONTACT_FIELDS, ("is",)),
    "campaign": CAMPAIGN_OPS,
    "id": ID_OPS,
    "custom.<key>": CUSTOM_OPS,
}


@dataclass(frozen=True)
class Clock:
    """The instant and zone relative conditions ("birthday today", "within 30 days") use."""

    now: datetime
    tz: ZoneInfo

    @property
    def today(self) -> date:
        """Today's local date."""
        return self.now.astimezone(self.tz).date()


def _fail(path: str, message: str) -> ValidationError:
    return ValidationError(f"{path}: {message}", field=path)


class _Compiler:
    def __init__(self, clock: Clock, dialect: str) -> None:
        self.clock = clock
        self.dialect = dialect
        self.conditions = 0

    def node(self, spec: Any, path: str, depth: int) -> ColumnElement[bool]:
        if not isinstance(spec, Mapping):
            raise _fail(path, "each filter must be an object")
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
        if not spec:
            return true()
        keys = set(spec)
        if keys == {"all"} or keys == {"any"}:
            key = "all" if "all" in keys else "any"
            items = spec[key]
            if not isinstance(items, list):
                raise _fail(f"{path}.{key}", "must be a list of filters")
            parts = [
                self.node(item, f"{path}.{key}[{i}]", depth + 1) for i, item in enumerate(items)
            ]
            if not parts:
                return true() if key == "all" else false()
            return and_(*parts) if key == "all" else or_(*parts)
        if keys == {"not"}:
            return not_(self.node(spec["not"], f"{path}.not", depth + 1))
        if "field" in keys and keys <= {"field", "op", "value"}:
            self.conditions += 1
            if self.conditions > MAX_CONDITIONS:
                raise _fail(path, f"more than {MAX_CONDITIONS} conditions")
            return self.condition(spec, path)
        raise _fail(path, 'expected {"all": [...]}, {"any": [...]}, {"not": ...} or a condition')

    def condition(self, spec: Mapping[str, Any], path: str) -> ColumnElement[bool]:
        field, op, value = spec.get("field"), spec.get("op"), spec.get("value")
        if not isinstance(field, str):
            raise _fail(f"{path}.field", "must be a field name")
        if not isinstance(op, str):
            raise _fail(f"{path}.op", "must be an operator name")
        if field.startswith("custom."):
            return self.custom(field[7:], op, value, path)
        ops = FIELDS.get(field)
        if ops is None:
            known = ", ".join(sorted(FIELDS))
            raise _fail(f"{path}.field", f"unknown field {field!r}; known: {known}")
        if op not in ops:
            raise _fail(f"{path}.op", f"{field} supports {', '.join(ops)}, not {op!r}")
        handler: Callable[[str, str, Any, str], ColumnElement[bool]]
        if field in TEXT_COLUMNS:
            handler = self.text
        elif field in DATE_COLUMNS:
            handler = self.when
        elif field in CONTACT_FIELDS:
            handler = self.contact
        else:
            handler = getattr(self, field)
        return handler(field, op, value, path)

    def text(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        column = TEXT_COLUMNS[field]
        if op == "empty":
            return column == ""
        if op == "not_empty":
            return column != ""
        if op in ("in", "not_in"):
            values = _strings(value, f"{path}.value")
            return column.in_(values) if op == "in" else column.not_in(values)
        text = _string(value, f"{path}.value")
        if op == "eq":
            return column == text
        if op == "ne":
            return column != text
        if op == "contains":
            return column.ilike(f"%{_escape_like(text)}%", escape="\\")
        return column.ilike(f"{_escape_like(text)}%", escape="\\")

    def when(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        column = DATE_COLUMNS[field]
        if op == "empty":
            return column.is_(None)
        if op == "not_empty":
            return column.is_not(None)
        if op in ("within_days", "older_than_days"):
            days = _count(value, f"{path}.value", 0, 36500)
            edge = self.clock.now - timedelta(days=days)
            return column >= edge if op == "within_days" else column < edge
        moment = _instant(value, f"{path}.value", self.clock.tz)
        return column < moment if op == "before" else column > moment

    def tag(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        def has(tags: list[str]) -> ColumnElement[bool]:
            return exists().where(CustomerTag.customer_id == Customer.id, CustomerTag.tag.in_(tags))

        if op in ("has", "has_not"):
            tag = _string(value, f"{path}.value").strip().lower()
            return has([tag]) if op == "has" else not_(has([tag]))
        tags = [t.strip().lower() for t in _strings(value, f"{path}.value")]
        if op == "has_any":
            return has(tags)
        if op == "has_none":
            return not_(has(tags))
        return and_(*(has([t]) for t in tags)) if tags else true()

    def birthday(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        column = Customer.birthday
        if op == "empty":
            return column.is_(None)
        if op == "not_empty":
            return column.is_not(None)
        month = extract("month", column)
        if op == "month":
            return month == _count(value, f"{path}.value", 1, 12)
        today = self.clock.today
        day = extract("day", column)
        same_day = and_(month == today.month, day == today.day)
        # People born on 29 February celebrate on the 28th when the year has no 29th.
        if today.month == 2 and today.day == 28 and not _leap(today.year):
            return or_(same_day, and_(month == 2, day == 29))
        return same_day

    def contact(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        if not isinstance(value, bool):
            raise _fail(f"{path}.value", "must be true or false")
        kind = "email" if field == "has_email" else "phone"
        cond = exists().where(ContactPoint.customer_id == Customer.id, ContactPoint.kind == kind)
        if field == "has_mobile":
            cond = exists().where(
                ContactPoint.customer_id == Customer.id,
                ContactPoint.kind == "phone",
                ContactPoint.label == "mobile",
            )
        return cond if value else not_(cond)

    def campaign(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        campaign_id = _count(value, f"{path}.value", 1, 2**31 - 1)
        d = CampaignDelivery

        def sent(*extra: ColumnElement[bool]) -> ColumnElement[bool]:
            return exists(
                select(d.id)
                .join(CampaignRun, CampaignRun.id == d.run_id)
                .where(
                    d.customer_id == Customer.id,
                    CampaignRun.campaign_id == campaign_id,
                    d.state == "sent",
                    *extra,
                )
            )

        if op == "received":
            return sent()
        if op == "not_received":
            return not_(sent())
        column = {
            "opened": d.opened_at,
            "not_opened": d.opened_at,
            "replied": d.replied_at,
            "not_replied": d.replied_at,
            "bounced": d.bounced_at,
            "unsubscribed": d.unsubscribed_at,
        }[op]
        if op.startswith("not_"):
            # "Did not open": received it, and no run's message to them was opened.
            return and_(sent(), not_(sent(column.is_not(None))))
        return sent(column.is_not(None))

    def id(self, field: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise _fail(f"{path}.value", f"must be a list of at most {MAX_LIST} ids")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise _fail(f"{path}.value", "ids must be whole numbers")
        return Customer.id.in_(value) if op == "in" else Customer.id.not_in(value)

    def custom(self, key: str, op: str, value: Any, path: str) -> ColumnElement[bool]:
        if not _CUSTOM_KEY.match(key):
            raise _fail(f"{path}.field", f"custom field name {key!r} is not allowed")
        if op not in CUSTOM_OPS:
            raise _fail(f"{path}.op", f"custom fields support {', '.join(CUSTOM_OPS)}, not {op!r}")
        as_text: ColumnElement[Any] = Customer.custom[key].as_string()
        if op == "exists":
            return as_text.is_not(None)
        if op == "not_exists":
            return as_text.is_(None)
        if op == "in":
            values = value if isinstance(value, list) else None
            if values is None or len(values) > MAX_LIST:
                raise _fail(f"{path}.value", f"must be a list of at most {MAX_LIST} values")
            return or_(*(self._custom_eq(key, v, path) for v in values)) if values else false()
        if op == "contains":
            text = _string(value, f"{path}.value")
            return as_text.ilike(f"%{_escape_like(text)}%", escape="\\")
        cond = self._custom_eq(key, value, path)
        return cond if op == "eq" else or_(not_(cond), as_text.is_(None))

    def _custom_eq(self, key: str, value: Any, path: str) -> ColumnElement[bool]:
        element: Any = Customer.custom[key]
        typed: ColumnElement[Any]
        if isinstance(value, str):
            typed = element.as_string()
            return typed == value
        if isinstance(value, bool):
            typed, kind = element.as_boolean(), "boolean"
        elif isinstance(value, (int, float)):
            typed, kind = element.as_float(), "number"
        else:
            raise _fail(f"{path}.value", "must be text, a number or true/false")
        if self.dialect == "postgresql":
            # A cast of another row's text value would abort the whole query: cast only numbers.
            typed = case((func.jsonb_typeof(element) == kind, typed), else_=None)
        result: ColumnElement[bool] = typed == value
        return result


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise _fail(path, "must be text (at most 500 characters)")
    return value


def _strings(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise _fail(path, f"must be a list of at most {MAX_LIST} texts")
    return [_string(v, path) for v in value]


def _count(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(path, f"must be a whole number from {low} to {high}")
    return value


def _instant(value: Any, path: str, tz: ZoneInfo) -> datetime:
    if not isinstance(value, str):
        raise _fail(
            path, "must be a date or date-time like 2025-01-31 or 2025-01-31T09:00:00+01:00"
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise _fail(path, f"not a date: {value!r}") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)  # a bare date is midnight in the campaign's zone
    return moment.astimezone(UTC)


def compile_filter(spec: Any, clock: Clock, dialect: str = "sqlite") -> ColumnElement[bool]:
    """A WHERE clause over `customers` for a filter; ValidationError names the bad part."""
    if spec is None:
        return true()
    return _Compiler(clock, dialect).node(spec, "filter", 0)


def validate_filter(spec: Any) -> None:
    """Refuse a filter that would not compile."""
    compile_filter(spec, Clock(datetime.now(UTC), ZoneInfo("UTC")))


def dialect_of(session: AsyncSession) -> str:
    """The dialect name (postgresql or sqlite): a few conditions compile differently."""
    return session.get_bind().dialect.name


async def count_matching(session: AsyncSession, spec: Any, clock: Clock) -> int:
    """How many customers the filter matches right now (the live count before sending)."""
    where = compile_filter(spec, clock, dialect_of(session))
    stmt = select(func.count()).select_from(Customer).where(where)
    return int(await session.scalar(stmt) or 0)


async def matching_ids(
    session: AsyncSession, spec: Any, clock: Clock, *, after_id: int = 0, limit: int = 500
) -> list[int]:
    """One page of matching customer ids in id order (for previews and tests)."""
    stmt = (
        select(Customer.id)
        .where(compile_filter(spec, clock, dialect_of(session)), Customer.id > after_id)
        .order_by(Customer.id)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())
