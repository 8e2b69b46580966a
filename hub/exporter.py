"""Export customers and calls as CSV or JSON, streamed so a million rows need little memory."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import Config
from hub.csvcells import defuse
from hub.errors import ValidationError
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.models.users import User

CHUNK = 1000
JOIN = "; "  # phones, emails, tags and lists in one CSV cell; the importer splits on ";"
CUSTOMER_COLUMNS = (
    "id",
    "name",
    "company",
    "phones",
    "emails",
    "tags",
    "source",
    "owner",
    "birthday",
    "city",
    "region",
    "notes",
    "created_at",
    "updated_at",
    "last_contacted_at",
)
_CUSTOMERS = cast(Table, Customer.__table__)
_CONTACTS = cast(Table, ContactPoint.__table__)
_TAGS = cast(Table, CustomerTag.__table__)


class _JsonArray:
    """Writes a JSON array one item at a time."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0
        out.write("[")

    def add(self, item: dict[str, Any]) -> None:
        self.out.write(",\n" if self.count else "\n")
        self.out.write(json.dumps(item, ensure_ascii=False, default=str))
        self.count += 1

    def close(self) -> None:
        self.out.write("\n]\n" if self.count else "]\n")


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _cell(value: Any) -> Any:
    """A value as a CSV cell: lists joined, objects as JSON, None empty, booleans lower-case."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return defuse(JOIN.join(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return defuse(value) if isinstance(value, str) else value


async def _custom_keys(session: AsyncSession) -> list[str]:
    """Every custom field name in use (a first streamed pass: CSV needs its header up front)."""
    keys: set[str] = set()
    result = await session.stream(
        select(_CUSTOMERS.c.custom).execution_options(yield_per=CHUNK * 5)
    )
    async for (custom,) in result:
        if custom:
            keys.update(custom)
    return sorted(keys)


async def _customer_chunks(session: AsyncSession) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield lists of customer dicts (the API shape plus "owner"), CHUNK at a time, by id."""
    owners: dict[int, str] = {
        uid: name for uid, name in await session.execute(select(User.id, User.username))
    }
    result = await session.stream(
        select(_CUSTOMERS).order_by(_CUSTOMERS.c.id).execution_options(yield_per=CHUNK)
    )
    async for partition in result.partitions():
        rows = [row._mapping for row in partition]
        ids = [row["id"] for row in rows]
        contacts: dict[int, list[tuple[str, str, str]]] = {i: [] for i in ids}
        tags: dict[int, list[str]] = {i: [] for i in ids}
        for customer_id, kind, value, label in await session.execute(
            select(_CONTACTS.c.customer_id, _CONTACTS.c.kind, _CONTACTS.c.value, _CONTACTS.c.label)
            .where(_CONTACTS.c.customer_id.in_(ids))
            .order_by(_CONTACTS.c.id)
        ):
            contacts[customer_id].append((kind, value, label))
        for customer_id, tag in await session.execute(
            select(_TAGS.c.customer_id, _TAGS.c.tag)
            .where(_TAGS.c.customer_id.in_(ids))
            .order_by(_TAGS.c.customer_id, _TAGS.c.tag)
        ):
            tags[customer_id].append(tag)
        yield [
            {
                "id": row["id"],
                "name": row["name"],
                "company": row["company"],
                "source": row["source"],
                "owner_id": row["owner_id"],
                "owner": owners.get(row["owner_id"]),
                "birthday": _iso(row["birthday"]),
                "city": row["city"],
                "region": row["region"],
                "notes": row["notes"],
                "custom": row["custom"] or {},
                "tags": tags[row["id"]],
                "phones": [
                    {"value": v, "label": lb} for k, v, lb in contacts[row["id"]] if k == "phone"
                ],
                "emails": [
                    {"value": v, "label": lb} for k, v, lb in contacts[row["id"]] if k == "email"
                ],
                "created_at": _iso(row["created_at"]),
                "updated_at": _iso(row["updated_at"]),
                "last_contacted_at": _iso(row["last_contacted_at"]),
            }
            for row in rows
        ]


async def export_customers(
    sessions: async_sessionmaker[AsyncSession], out: TextIO, fmt: str = "csv"
) -> int:
    """Write every customer to `out` (CSV: one row each, custom fields as custom.KEY columns)."""
    count = 0
    async with sessions() as session, session.begin():
        if fmt == "json":
            array = _JsonArray(out)
            async for chunk in _customer_chunks(session):
                for item in chunk:
                    array.add(item)
            array.close()
            return array.count
        custom_keys = await _custom_keys(session)
        writer = csv.writer(out)
        writer.writerow([*CUSTOMER_COLUMNS, *(f"custom.{k}" for k in custom_keys)])
        async for chunk in _customer_chunks(session):
            for item in chunk:
                flat = {
                    **item,
                    "phones": JOIN.join(p["value"] for p in item["phones"]),
                    "emails": JOIN.join(e["value"] for e in item["emails"]),
                }
                custom = item["custom"]
                writer.writerow(
                    [_cell(flat[c]) for c in CUSTOMER_COLUMNS]
                    + [_cell(custom.get(k)) for k in custom_keys]
                )
                count += 1
    return count


async def export_calls(
    sessions: async_sessionmaker[AsyncSession],
    out: TextIO,
    fmt: str = "csv",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the call log (started in [since, until)) to `out`, oldest first, in the API shape."""
    from hub.models.calls import Call
    from hub.telephony.service import call_to_dict

    stmt = select(Call, Customer.name).outerjoin(Customer, Customer.id == Call.customer_id)
    if since is not None:
        stmt = stmt.where(Call.started_at >= since)
    if until is not None:
        stmt = stmt.where(Call.started_at < until)
    stmt = stmt.order_by(Call.started_at, Call.id).execution_options(yield_per=CHUNK)
    count = 0
    async with sessions() as session, session.begin():
        result = await session.stream(stmt)
        array = _JsonArray(out) if fmt == "json" else None
        writer = None if array else csv.writer(out)
        if writer is not None:
            # The header comes from the API shape itself, so an empty export still has one.
            now = datetime.now(UTC)
            blank = Call(
                linkedid="",
                direction="",
                started_at=now,
                ended_at=now,
                wait_seconds=0.0,
                talk_seconds=0.0,
                disposition="",
            )
            writer.writerow(list(call_to_dict(blank)))
        async for call, customer_name in result:
            item = call_to_dict(call, customer_name)
            if array is not None:
                array.add(item)
            elif writer is not None:
                writer.writerow([_cell(v) for v in item.values()])
            count += 1
            session.expunge(call)  # keep the identity map from growing with the whole log
        if array is not None:
            array.close()
    return count


def parse_when(text: str | None, *, end: bool = False) -> datetime | None:
    """--from/--to: an ISO date (a whole day; --to includes it) or date-time; naive means UTC."""
    if not text:
        return None
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"{text!r} is not an ISO date or date-time (e.g. 2024-05-31 or 2024-05-31T14:00+02:00)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _open_output(path: str | None, fmt: str) -> TextIO:
    if path is None or path == "-":
        return sys.stdout
    # A BOM lets Excel read the UTF-8 umlauts in a CSV file; the importer skips it.
    encoding = "utf-8-sig" if fmt == "csv" else "utf-8"
    return Path(path).open("w", encoding=encoding, newline="")


def _finish_output(out: TextIO) -> None:
    if out is sys.stdout:
        out.flush()
    else:
        out.close()


async def run_export_cli(config: Config, args: argparse.Namespace) -> int:
    """`commhub export customers|calls [--format csv|json] [-o FILE] [--from] [--to]`."""
    from hub.db import create_engine, session_factory
    from hub.migrate import upgrade

    fmt = args.format or "csv"
    if args.what != "calls" and (args.date_from or args.date_to):
        print("commhub: --from/--to apply to calls only", file=sys.stderr)
        return 2
    try:
        since = parse_when(args.date_from)
        until = parse_when(args.date_to, end=True)
    except ValidationError as err:
        print(f"commhub: {err}", file=sys.stderr)
        return 2
    engine = create_engine(config.database)
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        try:
            out = _open_output(args.output, fmt)
        except OSError as err:
            print(f"commhub: {args.output}: cannot write: {err.strerror}", file=sys.stderr)
            return 2
        try:
            if args.what == "customers":
                count = await export_customers(sessions, out, fmt)
            else:
                count = await export_calls(sessions, out, fmt, since=since, until=until)
        finally:
            _finish_output(out)
    finally:
        await engine.dispose()
    where = args.output if args.output and args.output != "-" else "stdout"
    print(f"exported {count} {args.what} to {where}", file=sys.stderr)
    return 0
