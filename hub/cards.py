"""The screen-pop card, built on the hot path: four indexed Core queries, no ORM identity map.

A pop must reach the agent in milliseconds at 100 new calls per second. On SQLite the card is
read on a dedicated synchronous read-only connection in the event loop's thread: the four
index probes take microseconds, while handing each one to aiosqlite's worker thread (and the
implicit BEGIN/ROLLBACK) cost ~7 ms per card. On PostgreSQL the same builder runs through
asyncpg (`run_sync`), which has no thread hop."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, literal, select, union_all
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import StaticPool

from hub.customers import customer_json
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.models.interactions import Interaction, Reminder
from hub.reminders import reminder_to_dict
from hub.timeline import interaction_to_dict

_customers = Customer.__table__
_contacts = ContactPoint.__table__
_tags = CustomerTag.__table__
_interactions = Interaction.__table__
_reminders = Reminder.__table__

# Built once with bind parameters: constructing the statements per pop cost as much as running them.
_BY_PHONE = (
    select(_customers)
    .join(_contacts, _contacts.c.customer_id == _customers.c.id)
    .where(_contacts.c.kind == "phone", _contacts.c.value == bindparam("e164"))
)
_DETAILS = union_all(
    select(
        _contacts.c.kind, _contacts.c.value, _contacts.c.label, _contacts.c.id.label("ord")
    ).where(_contacts.c.customer_id == bindparam("cid")),
    select(literal("tag"), _tags.c.tag, literal(""), literal(0)).where(
        _tags.c.customer_id == bindparam("cid")
    ),
)
LAST_INTERACTIONS = 5
_RECENT = (
    select(_interactions)
    .where(_interactions.c.customer_id == bindparam("cid"))
    .order_by(_interactions.c.occurred_at.desc(), _interactions.c.id.desc())
    .limit(LAST_INTERACTIONS)
)
_OPEN_REMINDERS = (
    select(_reminders)
    .where(_reminders.c.customer_id == bindparam("cid"), _reminders.c.done_at.is_(None))
    .order_by(_reminders.c.due_at, _reminders.c.id)
    .limit(50)
)

Execute = Callable[[Any, dict[str, Any]], Any]


def build_card(execute: Execute, e164: str) -> dict[str, Any] | None:
    """The card of the customer owning this number, through any `execute(statement, params)`."""
    row = execute(_BY_PHONE, {"e164": e164}).first()
    if row is None:
        return None
    ids = {"cid": row.id}
    contacts: list[tuple[str, str, str]] = []
    tags: list[str] = []
    for kind, value, label, _ord in sorted(
        execute(_DETAILS, ids).all(), key=lambda r: (r[0] == "tag", r[3], r[1])
    ):
        if kind == "tag":
            tags.append(value)
        else:
            contacts.append((kind, value, label))
    card = customer_json(row, contacts, tags)
    card["last_interactions"] = [interaction_to_dict(r) for r in execute(_RECENT, ids)]
    card["open_reminders"] = [reminder_to_dict(r) for r in execute(_OPEN_REMINDERS, ids)]
    return card


async def card_for_phone(session: AsyncSession, e164: str) -> dict[str, Any] | None:
    """The card through an async session (any database)."""
    return await session.run_sync(lambda s: build_card(s.execute, e164))


async def customer_id_for_phone(session: AsyncSession, e164: str) -> int | None:
    """The id of the customer owning this number: one probe of the unique index."""
    found = await session.scalar(
        select(_contacts.c.customer_id).where(
            _contacts.c.kind == "phone", _contacts.c.value == e164
        )
    )
    return int(found) if found is not None else None


class CardReader:
    """Reads pop cards the fastest way the database allows (see the module docstring)."""

    def __init__(self, url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._sync: Engine | None = None
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self._sync = create_engine(
                parsed.set(drivername="sqlite"),
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            event.listen(self._sync, "connect", _read_only)

    async def card(self, e164: str) -> dict[str, Any] | None:
        """The card of the customer owning this number, or None."""
        if self._sync is None:
            async with self._sessions() as session:
                return await card_for_phone(session, e164)
        with self._sync.connect() as conn:
            return build_card(conn.execute, e164)

    def close(self) -> None:
        """Release the read connection."""
        if self._sync is not None:
            self._sync.dispose()


def _read_only(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()
