"""Export of customers and calls (CSV and JSON), and an export → import round trip."""

from __future__ import annotations

import codecs
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.cli import build_parser
from hub.config import DatabaseConfig
from hub.customers import create_customer, customer_to_dict
from hub.db import create_engine, session_factory
from hub.errors import ValidationError
from hub.exporter import export_calls, export_customers, parse_when, run_export_cli
from hub.importer import build_mapping, import_customers, open_table
from hub.migrate import upgrade
from hub.models.calls import Call
from hub.models.customers import Customer
from hub.telephony.service import call_to_dict
from hub.users import create_user

MESSY = Path(__file__).resolve().parent.parent / "fixtures" / "import" / "messy.csv"
VOLATILE = ("id", "created_at", "updated_at", "last_contacted_at")


async def load_messy(sessions) -> None:
    table = open_table(MESSY)
    await import_customers(
        sessions, table.rows, build_mapping(table.columns), "DE", columns=table.columns
    )


async def export_text(sessions, what: str, fmt: str, **kwargs) -> str:
    out = io.StringIO()
    if what == "customers":
        await export_customers(sessions, out, fmt)
    else:
        await export_calls(sessions, out, fmt, **kwargs)
    return out.getvalue()


async def test_customers_json_is_the_api_shape(sessions):
    await load_messy(sessions)
    async with sessions() as session, session.begin():
        user = await create_user(session, "olga", "correct horse battery", "agent")
        first = await session.scalar(select(Customer).order_by(Customer.id).limit(1))
        first.owner_id = user.id
    items = json.loads(await export_text(sessions, "customers", "json"))
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)
    async with sessions() as session:
        for item in items:
            expected = customer_to_dict(await session.get(Customer, item["id"]))
            owner = item.pop("owner")
            assert item == expected
            assert owner == ("olga" if item["owner_id"] == user.id else None)
    assert len(items) == 4


async def test_customers_csv_joins_lists_and_spreads_custom_fields(sessions):
    await load_messy(sessions)
    rows = list(csv.DictReader(io.StringIO(await export_text(sessions, "customers", "csv"))))
    assert list(rows[0])[:6] == ["id", "name", "company", "phones", "emails", "tags"]
    assert list(rows[0])[-1] == "custom.Kundennr"
    juergen = next(r for r in rows if r["name"] == "Jürgen Müller")
    assert juergen["phones"] == "+4930123456; +4915123456789"
    assert juergen["emails"] == "j.mueller@example.com"
    assert juergen["tags"] == "berlin; newsletter; vip"
    assert juergen["notes"] == "Ruft gern\nmorgens an; nicht vor 8"
    assert juergen["birthday"] == "1980-04-30"
    assert juergen["custom.Kundennr"] == "K-1001"
    assert juergen["owner"] == ""
    assert datetime.fromisoformat(juergen["created_at"]).tzinfo is not None


async def test_export_then_import_round_trip(sessions, tmp_path):
    await load_messy(sessions)
    async with sessions() as session, session.begin():
        await create_customer(
            session,
            {"name": "Ohne Kontakt", "company": 'Quote "AG"; Semikolon', "custom": {"n": 3}},
            "DE",
        )
    first = await export_text(sessions, "customers", "csv")
    path = tmp_path / "export.csv"
    path.write_text(first, encoding="utf-8")
    engine = create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path}/fresh.db"))
    try:
        await upgrade(engine)
        fresh = session_factory(engine)
        table = open_table(path)
        mapping = build_mapping(
            table.columns,
            [
                "id=ignore",
                "owner=ignore",
                "created_at=ignore",
                "updated_at=ignore",
                "last_contacted_at=ignore",
            ],
        )
        report = await import_customers(fresh, table.rows, mapping, "DE", columns=table.columns)
        assert report.totals["created"] == 5 and report.totals["rejected"] == 0
        second = await export_text(fresh, "customers", "csv")
    finally:
        await engine.dispose()

    def stable(text: str) -> list[dict[str, str]]:
        return [
            {k: v for k, v in row.items() if k not in VOLATILE}
            for row in csv.DictReader(io.StringIO(text))
        ]

    assert stable(second) == stable(first)


async def add_calls(sessions) -> tuple[datetime, int]:
    base = datetime(2024, 5, 31, 22, 0, tzinfo=UTC)
    async with sessions() as session, session.begin():
        customer = await create_customer(session, {"name": "Max", "phones": ["030 123456"]}, "DE")
        for i in range(4):
            started = base + timedelta(hours=i)
            session.add(
                Call(
                    linkedid=f"1717192800.{i}",
                    direction="inbound",
                    caller="+4930123456",
                    callee="200",
                    agent="ann" if i % 2 == 0 else None,
                    rang=["ann", "bob"],
                    answered_by=["ann"] if i % 2 == 0 else [],
                    queue="support",
                    started_at=started,
                    answered_at=started + timedelta(seconds=5) if i % 2 == 0 else None,
                    ended_at=started + timedelta(seconds=65),
                    wait_seconds=5.0,
                    talk_seconds=60.0 if i % 2 == 0 else 0.0,
                    disposition="answered" if i % 2 == 0 else "missed",
                    hangup_cause="16",
                    recording=None,
                    customer_id=customer.id if i < 3 else None,
                    transfers=[{"kind": "blind", "from": "ann", "to": "bob"}] if i == 0 else [],
                    caller_withheld=False,
                )
            )
        return base, customer.id


async def test_calls_json_and_csv_with_a_date_range(sessions):
    _base, customer_id = await add_calls(sessions)
    items = json.loads(await export_text(sessions, "calls", "json"))
    async with sessions() as session:
        calls = (await session.scalars(select(Call).order_by(Call.started_at))).all()
        assert items == [
            call_to_dict(c, "Max" if c.customer_id == customer_id else None) for c in calls
        ]
    # --from 2024-06-01 --to 2024-06-01: the calls started on that day (UTC), oldest first.
    since, until = parse_when("2024-06-01"), parse_when("2024-06-01", end=True)
    text = await export_text(sessions, "calls", "csv", since=since, until=until)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["linkedid"] for r in rows] == ["1717192800.2", "1717192800.3"]
    assert rows[0]["rang"] == "ann; bob"
    assert rows[0]["customer_name"] == "Max" and rows[1]["customer_name"] == ""
    assert rows[0]["disposition"] == "answered" and rows[1]["disposition"] == "missed"
    assert rows[0]["caller_withheld"] == "false"
    first = next(csv.DictReader(io.StringIO(await export_text(sessions, "calls", "csv"))))
    assert json.loads(first["transfers"]) == [{"kind": "blind", "from": "ann", "to": "bob"}]
    assert await export_text(sessions, "calls", "json", since=parse_when("2030-01-01")) == "[]\n"


async def test_empty_calls_csv_still_has_its_header(sessions):
    text = await export_text(sessions, "calls", "csv")
    assert text.splitlines()[0].startswith("id,linkedid,direction,caller,")


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2024-06-01", False, datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01", True, datetime(2024, 6, 2, tzinfo=UTC)),
        ("2024-06-01T14:00", False, datetime(2024, 6, 1, 14, tzinfo=UTC)),
        ("2024-06-01T14:00+02:00", False, datetime(2024, 6, 1, 12, tzinfo=UTC)),
        (None, False, None),
    ],
)
def test_parse_when(text, end, expected):
    assert parse_when(text, end=end) == expected


def test_parse_when_refuses_junk():
    with pytest.raises(ValidationError, match="not an ISO date"):
        parse_when("yesterday")


async def test_cli(config, tmp_path, capsys):
    out = tmp_path / "customers.csv"
    args = build_parser().parse_args(["export", "customers", "-o", str(out)])
    assert await run_export_cli(config, args) == 0
    assert out.read_bytes().startswith(codecs.BOM_UTF8)  # Excel reads the umlauts right
    assert "exported 0 customers to" in capsys.readouterr().err
    args = build_parser().parse_args(["export", "calls", "--format", "json"])
    assert await run_export_cli(config, args) == 0
    assert json.loads(capsys.readouterr().out) == []
    args = build_parser().parse_args(["export", "customers", "--from", "2024-01-01"])
    assert await run_export_cli(config, args) == 2
    assert "--from/--to apply to calls only" in capsys.readouterr().err
    args = build_parser().parse_args(["export", "calls", "--to", "soon"])
    assert await run_export_cli(config, args) == 2
    assert "not an ISO date" in capsys.readouterr().err
    args = build_parser().parse_args(["export", "calls", "-o", str(tmp_path / "no" / "dir.csv")])
    assert await run_export_cli(config, args) == 2
    assert "cannot write" in capsys.readouterr().err


async def test_csv_cells_that_a_spreadsheet_would_run_are_defused(sessions):
    async with sessions() as session, session.begin():
        await create_customer(
            session,
            {
                "name": '=HYPERLINK("http://evil.example","click")',
                "company": "@SUM(A1)",
                "phones": ["+4930123456"],
            },
            "DE",
        )
    rows = list(
        csv.reader(io.StringIO((await export_text(sessions, "customers", "csv")).lstrip("\ufeff")))
    )
    header, row = rows[0], rows[1]
    cells = dict(zip(header, row, strict=False))
    assert cells["name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert cells["company"] == "'@SUM(A1)"
    assert cells["phones"] == "+4930123456"  # a number, left alone
