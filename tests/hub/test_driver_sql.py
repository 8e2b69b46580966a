"""DriverStatement: rows it writes read back exactly as rows the ORM writes, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, event, exc, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from hub.customers import create_customer
from hub.db import among, dialect_insert, insert_for
from hub.driver_sql import DriverQuery, DriverStatement
from hub.models.interactions import Interaction

TABLE: Table = Interaction.__table__  # type: ignore[assignment]
COLUMNS = [c.name for c in TABLE.c if c.name != "id"]


def _insert(dialect: Dialect) -> Any:
    return (
        dialect_insert(dialect)(TABLE)
        .values({name: bindparam(name) for name in COLUMNS})
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )


INSERT = DriverStatement(_insert)
# Fixed values in the statement, variable ones by name.
CLOSE = DriverStatement(
    lambda _dialect: (
        update(TABLE)
        .where(TABLE.c.external_id == bindparam("ext"), TABLE.c.status == "ringing")
        .values(status="missed", ended_at=bindparam("ended"), summary="")
    )
)


def row(external_id: str, customer_id: int | None, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "channel": "email",
        "external_id": external_id,
        "customer_id": customer_id,
        "direction": "outbound",
        "status": "sent",
        # Not UTC on the way in: stored as UTC, read back as the same instant.
        "occurred_at": datetime(
            2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))
        ),
        "ended_at": None,
        "user_id": None,
        "summary": "Grüße <b>&amp;</b> 'quotes' \"too\"",
        "data": {"campaign_id": 7, "to": "anna@example.test", "nested": {"ü": [1, None, True]}},
        "created_at": datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
    }
    values.update(changes)
    return values


def as_read(interaction: Interaction) -> dict[str, Any]:
    return {name: getattr(interaction, name) for name in COLUMNS}


async def read(sessions, external_id: str) -> dict[str, Any]:
    async with sessions() as session:
        found = await session.scalar(
            select(Interaction).where(Interaction.external_id == external_id)
        )
        assert found is not None, f"{external_id} was not written"
        return as_read(found)


async def test_rows_read_back_as_the_orm_writes_them(sessions):
    async with sessions() as session, session.begin():
        customer_id = (await create_customer(session, {"name": "Anna"}, "DE")).id
    async with sessions() as session, session.begin():
        await INSERT.run(session, [row("<a@x>", customer_id), row("<b@x>", None, ended_at=None)])
        await session.execute(insert_for(session)(TABLE), [row("<orm@x>", customer_id)])
    ours, orm = await read(sessions, "<a@x>"), await read(sessions, "<orm@x>")
    assert {**ours, "external_id": "<orm@x>"} == orm
    assert ours["occurred_at"] == datetime(2026, 3, 28, 23, 30, 15, 123456, tzinfo=UTC)
    assert ours["occurred_at"].tzinfo is not None
    assert ours["data"]["nested"] == {"ü": [1, None, True]}
    assert (await read(sessions, "<b@x>"))["customer_id"] is None


async def test_a_single_row_and_the_conflict_clause(sessions):
    async with sessions() as session, session.begin():
        await INSERT.run(session, [row("<one@x>", None, summary="first")])
    async with sessions() as session, session.begin():
        await INSERT.run(session, [row("<one@x>", None, summary="second")])  # already logged
        await INSERT.run(session, [])  # nothing to do, no statement
    assert (await read(sessions, "<one@x>"))["summary"] == "first"


async def test_fixed_values_and_named_ones(sessions):
    async with sessions() as session, session.begin():
        await INSERT.run(
            session,
            [row("<ring@x>", None, status="ringing"), row("<done@x>", None, status="answered")],
        )
    ended = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await CLOSE.run(session, [{"ext": "<ring@x>", "ended": ended}])
        await CLOSE.run(session, [{"ext": "<done@x>", "ended": ended}])  # not ringing: left
    closed = await read(sessions, "<ring@x>")
    assert (closed["status"], closed["ended_at"], closed["summary"]) == ("missed", ended, "")
    assert (await read(sessions, "<done@x>"))["status"] == "answered"


async def test_it_writes_in_the_sessions_transaction(sessions):
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await INSERT.run(session, [row("<gone@x>", None)])
            raise RuntimeError("roll back")
    async with sessions() as session:
        assert await session.scalar(select(Interaction.id)) is None


async def test_a_missing_parameter_is_named(sessions):
    async with sessions() as session, session.begin():
        with pytest.raises(KeyError, match="ended"):
            await CLOSE.run(session, [{"ext": "<x@x>"}])


# No conflict clause: a second row with the same id breaks the unique index.
PLAIN_INSERT = DriverStatement(
    lambda _dialect: insert(TABLE).values({name: bindparam(name) for name in COLUMNS})
)


async def test_a_driver_error_is_raised_as_sqlalchemys(sessions):
    async with sessions() as session, session.begin():
        await PLAIN_INSERT.run(session, [row("<dup@x>", None)])
    with pytest.raises(exc.IntegrityError) as raised:
        async with sessions() as session, session.begin():
            await PLAIN_INSERT.run(session, [row("<new@x>", None), row("<dup@x>", None)])
    assert "INSERT INTO interactions" in str(raised.value)
    async with sessions() as session:  # the failed statement's other row went with it
        assert (await session.scalars(select(Interaction.external_id))).all() == ["<dup@x>"]


async def test_sqlite_statements_skip_sqlalchemys_cursor(sessions, engine):
    # On SQLite the statement goes to aiosqlite itself (one trip to its thread); the other
    # drivers get exec_driver_sql, which runs SQLAlchemy's cursor events.
    seen: list[str] = []

    def spy(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", spy)
    try:
        async with sessions() as session, session.begin():
            await INSERT.run(session, [row("<spy@x>", None)])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", spy)
    through_sqlalchemy = [s for s in seen if s.startswith("INSERT INTO interactions")]
    assert len(through_sqlalchemy) == (0 if engine.dialect.driver == "aiosqlite" else 1)
    assert (await read(sessions, "<spy@x>"))["summary"] == row("", None)["summary"]


# Typed columns on the way out: a UTC datetime, JSON, a nullable id.
QUERY = DriverQuery(
    lambda dialect: (
        select(
            Interaction.external_id,
            Interaction.occurred_at,
            Interaction.data,
            Interaction.customer_id,
        )
        .where(among(Interaction.external_id, dialect, key="ids"), Interaction.status == "sent")
        .order_by(Interaction.external_id)
    )
)


async def test_a_query_reads_rows_as_the_orm_does(sessions):
    async with sessions() as session, session.begin():
        customer_id = (await create_customer(session, {"name": "Anna"}, "DE")).id
        await INSERT.run(
            session,
            [
                row("<a@x>", customer_id),
                row("<b@x>", None),
                row("<c@x>", None, status="failed"),
                row("<d@x>", customer_id, data={"to": "d@x", "ü": [1.5, None]}),
            ],
        )
    async with sessions() as session:
        got = await QUERY.rows(session, {"ids": ["<d@x>", "<a@x>", "<c@x>", "<none@x>", "<b@x>"]})
        orm = (
            await session.scalars(
                select(Interaction)
                .where(Interaction.status == "sent")
                .order_by(Interaction.external_id)
            )
        ).all()
    assert got == [(i.external_id, i.occurred_at, i.data, i.customer_id) for i in orm]
    assert [r[0] for r in got] == ["<a@x>", "<b@x>", "<d@x>"]  # <c@x> is not "sent"
    assert got[0][1] == datetime(2026, 3, 28, 23, 30, 15, 123456, tzinfo=UTC)
    assert got[2][2] == {"to": "d@x", "ü": [1.5, None]}


@pytest.mark.parametrize("count", [0, 1, 2500])
async def test_among_takes_any_number_of_values_in_one_parameter(sessions, count):
    async with sessions() as session, session.begin():
        await INSERT.run(session, [row(f"<{i}@x>", None) for i in range(0, 3000, 2)])
    wanted = [f"<{i}@x>" for i in range(count)]  # every other one exists
    async with sessions() as session:
        got = await QUERY.rows(session, {"ids": wanted})
        # The same list given as a value (not at execution) in an ORM query.
        dialect = session.get_bind().dialect
        orm = await session.scalars(
            select(Interaction.external_id).where(among(Interaction.external_id, dialect, wanted))
        )
        assert sorted(orm.all()) == sorted(r[0] for r in got)
    assert sorted(r[0] for r in got) == sorted(f"<{i}@x>" for i in range(0, count, 2))
    compiled = QUERY.compiled(dialect)
    assert compiled.sql.count("?") + compiled.sql.count("$") == 2  # the list is one parameter


def test_compiled_once_per_dialect():
    first = INSERT.compiled(sqlite.dialect())
    assert INSERT.compiled(sqlite.dialect()) is first
    pg = INSERT.compiled(postgresql.asyncpg.dialect())  # type: ignore[attr-defined]
    assert pg is not first
    assert "RETURNING" not in pg.sql  # nobody reads new ids back
    assert first.sql.count("?") == len(COLUMNS)


def test_each_driver_gets_its_own_placeholders_and_parameters():
    # Compiling needs no driver installed: psycopg's named style checks the non-positional path.
    asyncpg = CLOSE.compiled(postgresql.asyncpg.dialect())  # type: ignore[attr-defined]
    psycopg = CLOSE.compiled(postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    assert "$1" in asyncpg.sql and "%(ext)s" in psycopg.sql
    ended = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    (named,) = psycopg.parameters([{"ext": "<x@x>", "ended": ended}])
    assert named == {
        "status": "missed",
        "ended": ended,
        "summary": "",
        "ext": "<x@x>",
        "status_1": "ringing",
    }
    (positional,) = asyncpg.parameters([{"ext": "<x@x>", "ended": ended}])
    assert positional == ("missed", ended, "", "<x@x>", "ringing")
