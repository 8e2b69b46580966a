"""Customer import: messy CSV and XLSX files, merges, rejections with reasons, races, the CLI."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from hub.cli import build_parser
from hub.customers import create_customer, customer_to_dict, find_by_email, find_by_phone
from hub.importer import (
    ImportFileError,
    _ProgressBar,
    build_mapping,
    guess_field,
    import_customers,
    open_table,
    parse_birthday,
    run_import_cli,
)
from hub.models.customers import ContactPoint, Customer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "import"
MESSY = FIXTURES / "messy.csv"
COMMHUB = str(Path(sys.executable).parent / "commhub")


async def existing(sessions) -> tuple[int, int]:
    """Anna and Bernd, in the database before any import."""
    async with sessions() as session, session.begin():
        anna = await create_customer(
            session,
            {"name": "Anna Alt", "phones": ["+4930111111"], "emails": ["anna@alt.example"]},
            "DE",
        )
        bernd = await create_customer(
            session,
            {"name": "Bernd Berg", "phones": ["+4940222222"], "emails": ["bernd@berg.example"]},
            "DE",
        )
        return anna.id, bernd.id


async def run_import(sessions, path: Path, *, sheet=None, overrides=(), **kwargs):
    table = open_table(path, sheet)
    try:
        mapping = build_mapping(table.columns, overrides)
        return await import_customers(
            sessions,
            table.rows,
            mapping,
            "DE",
            columns=table.columns,
            total=table.total,
            **kwargs,
        )
    finally:
        table.close()


async def customer_by_email(sessions, email: str) -> dict:
    async with sessions() as session:
        found = await find_by_email(session, email)
        assert found is not None, email
        return customer_to_dict(found)


async def customer_count(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)


def outcomes(report) -> list[tuple[int, str, str]]:
    return [(r.row, r.outcome, r.reason) for r in report.rows]


def messy_expected(anna: int, bernd: int) -> list[tuple[int, str, str]]:
    return [
        (2, "created", ""),
        (3, "created", ""),
        (4, "merged", "same +4930123456 as row 2"),
        (5, "rejected", "column 'Telefon': 'abc' is not a phone number"),
        (6, "rejected", "name is missing"),
        (7, "updated", "existing customer matched by +4930111111"),
        (
            8,
            "rejected",
            f"+4930111111 belongs to customer {anna}; bernd@berg.example belongs to customer "
            f"{bernd} (not merging two customers; merge them first)",
        ),
        (9, "created", ""),
        (10, "merged", "same zoe@weiss.example as row 3"),
        (11, "rejected", "column 'Geburtstag': '31.02.1990' is not a date"),
        (13, "rejected", "column 'E-Mail': 'not-an-email' is not an email address"),
        (14, "updated", "existing customer matched by bernd@berg.example"),
    ]


def test_messy_csv_is_sniffed():
    table = open_table(MESSY)
    assert table.description == "CSV, cp1252, delimiter ';'"
    assert table.columns[:3] == ["Vorname", "Nachname", "Firma"]
    assert table.total == 12  # the blank line is not a row
    mapping = build_mapping(table.columns)
    assert mapping == [
        "first_name",
        "last_name",
        "company",
        "phone",
        "phone",
        "email",
        "tags",
        "birthday",
        "city",
        "notes",
        "custom:Kundennr",
    ]
    rows = list(table.rows)
    assert rows[0][0] == 2 and rows[0][1][0] == "Jürgen"
    assert rows[0][1][9] == "Ruft gern\r\nmorgens an; nicht vor 8"  # quoted, with newline and ;


@pytest.mark.parametrize("batch_size", [500, 2])
async def test_messy_csv(sessions, batch_size):
    anna, bernd = await existing(sessions)
    progress: list[tuple[int, int | None]] = []
    report = await run_import(
        sessions,
        MESSY,
        source="messe-2024",
        batch_size=batch_size,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert outcomes(report) == messy_expected(anna, bernd)
    assert report.totals == {
        "created": 3,
        "updated": 2,
        "merged": 2,
        "rejected": 5,
        "rows": 12,
    }
    assert progress[-1] == (12, 12)
    ids = {r.row: r.customer_id for r in report.rows}
    assert ids[4] == ids[2] and ids[10] == ids[3]
    assert ids[7] == anna and ids[14] == bernd
    assert all(ids[r] is None for r in (5, 6, 8, 11, 13))
    assert len({ids[2], ids[3], ids[9]}) == 3

    juergen = await customer_by_email(sessions, "j.mueller@example.com")
    assert juergen["id"] == ids[2]
    assert juergen["name"] == "Jürgen Müller"
    assert juergen["company"] == "Bäckerei Müller GmbH"
    assert juergen["phones"] == [
        {"value": "+4930123456", "label": ""},
        {"value": "+4915123456789", "label": "mobile"},
    ]
    assert juergen["tags"] == ["berlin", "newsletter", "vip"]  # row 4 added "newsletter"
    assert juergen["birthday"] == "1980-04-30"
    assert juergen["notes"] == "Ruft gern\nmorgens an; nicht vor 8"
    assert juergen["custom"] == {"Kundennr": "K-1001"}
    assert juergen["source"] == "messe-2024"

    zoe = await customer_by_email(sessions, "zoe@weiss.example")
    assert zoe["name"] == "Zoë Weiß"  # the first row's name stays
    assert zoe["notes"] == "Zweiter Eintrag"  # the duplicate row filled the empty field
    assert zoe["city"] == "Hamburg"

    a = await customer_by_email(sessions, "anna@alt.example")
    assert (a["name"], a["company"], a["city"], a["tags"]) == (
        "Anna Alt",
        "Alt & Co",
        "Berlin",
        ["bestand"],
    )
    assert a["source"] == ""  # --source is for new customers only
    b = await customer_by_email(sessions, "bernd@berg.example")
    assert b["tags"] == ["kunde"] and b["phones"] == [{"value": "+4940222222", "label": ""}]

    async with sessions() as session:
        bjoern = await find_by_phone(session, "+14155550100")
        assert bjoern is not None and bjoern.name == "Björn Bär"
        for rejected in ("hans@junk.example", "info@nameless.example", "bad@date.example"):
            assert await find_by_email(session, rejected) is None
    assert await customer_count(sessions) == 5

    # Importing the same file again creates nothing: every good row finds its customer.
    again = await run_import(sessions, MESSY, batch_size=batch_size)
    assert again.totals == {"created": 0, "updated": 5, "merged": 2, "rejected": 5, "rows": 12}
    assert await customer_count(sessions) == 5


async def test_dry_run_reports_the_same_and_changes_nothing(sessions):
    anna, bernd = await existing(sessions)
    report = await run_import(sessions, MESSY, dry_run=True, batch_size=3)
    assert report.dry_run
    assert outcomes(report) == messy_expected(anna, bernd)
    assert [r.customer_id for r in report.rows if r.outcome == "created"] == [None, None, None]
    assert await customer_count(sessions) == 2
    a = await customer_by_email(sessions, "anna@alt.example")
    assert a["company"] == "" and a["tags"] == []


def make_xlsx(path: Path) -> None:
    workbook = openpyxl.Workbook()
    info = workbook.active
    info.title = "Info"
    info.append(["Exported by", "Some CRM"])
    sheet = workbook.create_sheet("Kunden")
    sheet.append(
        [
            "Name",
            "Firma",
            "Telefon",
            "Mobil",
            "E-Mail",
            "Geburtstag",
            "Tags",
            "Kundennummer",
            "Erstkontakt",
        ]
    )
    rows = [
        # Phones typed as numbers lose their leading 0 or +; Excel may store them as floats.
        [
            "Max Mustermann",
            "ACME",
            4930123456,
            15123456789.0,
            "MAX@ACME.DE",
            datetime(1980, 4, 30),  # noqa: DTZ001 (spreadsheet cells have no time zone)
            "VIP; Kunde",
            1001,
            datetime(2024, 1, 15, 9, 30),  # noqa: DTZ001
        ],
        [
            "Erika Musterfrau",
            None,
            "+49 40 987654",
            None,
            "erika@example.de",
            "24.12.1975",
            None,
            1002,
            None,
        ],
        ["Max M.", None, None, "0151 23456789", None, None, "newsletter", None, None],
        ["Junk Phone", None, "n/a", None, "junk@example.de", None, None, None, None],
        [None, "Firma ohne Namen", "030 555555", None, None, None, None, None, None],
        ["Existing Anna", None, 4930111111, None, "bernd@berg.example", None, None, None, None],
        ["Anna Alt", None, "030 111111", None, None, datetime(1970, 1, 1), "Bestand", None, None],  # noqa: DTZ001
        [None, None, None, None, None, None, None, None, None],
        ["Erika", None, None, None, "Erika@Example.de", None, None, None, None],
    ]
    for row in rows:
        sheet.append(row)
    workbook.save(path)


async def test_xlsx(sessions, tmp_path):
    anna, bernd = await existing(sessions)
    path = tmp_path / "customers.xlsx"
    make_xlsx(path)
    with pytest.raises(ImportFileError, match="no sheet 'Kontakte'; sheets: Info, Kunden"):
        open_table(path, "Kontakte")
    first = open_table(path)  # the first sheet has no customer columns
    try:
        with pytest.raises(ImportFileError, match="no column looks like a name, phone or email"):
            build_mapping(first.columns)
    finally:
        first.close()
    report = await run_import(sessions, path, sheet="Kunden", batch_size=4)
    assert outcomes(report) == [
        (2, "created", ""),
        (3, "created", ""),
        (4, "merged", "same +4915123456789 as row 2"),
        (5, "rejected", "column 'Telefon': 'n/a' is not a phone number"),
        (6, "rejected", "name is missing"),
        (
            7,
            "rejected",
            f"+4930111111 belongs to customer {anna}; bernd@berg.example belongs to customer "
            f"{bernd} (not merging two customers; merge them first)",
        ),
        (8, "updated", "existing customer matched by +4930111111"),
        (10, "merged", "same erika@example.de as row 3"),
    ]
    assert report.totals == {"created": 2, "updated": 1, "merged": 2, "rejected": 3, "rows": 8}
    max_ = await customer_by_email(sessions, "max@acme.de")
    assert [p["value"] for p in max_["phones"]] == ["+4930123456", "+4915123456789"]
    assert max_["birthday"] == "1980-04-30"
    assert max_["tags"] == ["kunde", "newsletter", "vip"]
    assert max_["custom"] == {"Kundennummer": 1001, "Erstkontakt": "2024-01-15T09:30:00"}
    erika = await customer_by_email(sessions, "erika@example.de")
    assert erika["birthday"] == "1975-12-24" and erika["name"] == "Erika Musterfrau"
    a = await customer_by_email(sessions, "anna@alt.example")
    assert a["birthday"] == "1970-01-01" and a["tags"] == ["bestand"]
    assert await customer_count(sessions) == 4


def write_csv(path: Path, rows: list[list[str]], *, delimiter=",", encoding="utf-8") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


@pytest.mark.parametrize(
    ("delimiter", "encoding", "bom", "description"),
    [
        (",", "utf-8", b"", "CSV, utf-8, delimiter ','"),
        (";", "utf-8", codecs.BOM_UTF8, "CSV, utf-8, delimiter ';'"),
        ("\t", "utf-16-le", codecs.BOM_UTF16_LE, "CSV, utf-16, delimiter tab"),
        (";", "cp1252", b"", "CSV, cp1252, delimiter ';'"),
    ],
)
def test_csv_dialects(tmp_path, delimiter, encoding, bom, description):
    rows = [
        ["Name", "Telefon", "Straße, Hausnr."],
        ["Jörg Weiß", "030 123456", "Hauptstr. 1, Hinterhaus"],
        ["Multi\nLine", "+49 40 1", "x"],
    ]
    path = tmp_path / "x.csv"
    write_csv(path, rows, delimiter=delimiter, encoding=encoding)
    path.write_bytes(bom + path.read_bytes())
    table = open_table(path)
    assert table.description == description
    assert table.columns == rows[0]
    assert [cells for _n, cells in table.rows] == rows[1:]


def test_column_guessing_and_overrides():
    assert guess_field("E-Mail") == "email"
    assert guess_field("Telefon (privat)") == "phone"
    assert guess_field("Mobiltelefon") == "phone"
    assert guess_field("Handy") == "phone"
    assert guess_field("Schlagwörter") == "tags"
    assert guess_field("Geburtsdatum") == "birthday"
    assert guess_field("Tel. privat") == "phone"
    assert guess_field("E-Mail 2") == "email"
    assert (guess_field("phones"), guess_field("emails")) == ("phone", "email")  # our export
    assert guess_field("Phone (work)") == "phone"
    assert guess_field("E-Mail Opt-in") == "custom:E-Mail Opt-in"  # not an address column
    assert guess_field("Telefonnotiz") == "custom:Telefonnotiz"
    assert guess_field("custom.Kundennr") == "custom:Kundennr"
    assert guess_field("Lieblingsfarbe") == "custom:Lieblingsfarbe"
    columns = ["Kontaktperson", "Tel. geschäftlich", "Kommentar", "Intern"]
    mapping = build_mapping(
        columns,
        ["kontaktperson=name", "Tel. geschäftlich=phone", "Kommentar=notes", "Intern=ignore"],
    )
    assert mapping == ["name", "phone", "notes", None]
    with pytest.raises(ImportFileError, match="no column 'Fax'"):
        build_mapping(columns, ["Fax=phone"])
    with pytest.raises(ImportFileError, match="unknown field 'telefax'"):
        build_mapping(columns, ["Intern=telefax"])
    with pytest.raises(ImportFileError, match="expected COLUMN=FIELD"):
        build_mapping(columns, ["Intern"])
    with pytest.raises(ImportFileError, match="no column looks like a name, phone or email"):
        build_mapping(["Kommentar", "Intern"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1980-04-30", date(1980, 4, 30)),
        ("30.04.1980", date(1980, 4, 30)),
        ("30.04.80", date(1980, 4, 30)),  # two-digit years are in the past
        ("30/04/1980", date(1980, 4, 30)),
        ("1980-04-30 00:00:00", date(1980, 4, 30)),
        (datetime(1980, 4, 30, 0, 0), date(1980, 4, 30)),  # noqa: DTZ001 (an Excel cell)
    ],
)
def test_birthdays(value, expected):
    assert parse_birthday(value) == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "no header row"),
        ("blank.csv", b";;\r\n;;\r\n", "no header row"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old Excel .xls format"),
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "not a readable XLSX file"),
        ("binary.csv", b"\x00\x01\x02\x03" * 100, "binary data, not a CSV file"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        open_table(path)
    with pytest.raises(ImportFileError, match="no such file"):
        open_table(tmp_path / "missing.csv")


def claim(db_url: str, name: str, phone: str) -> None:
    """Another process creates a customer with this phone and commits (a real concurrent write)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database, timeout=10)
        with conn:
            cur = conn.execute(
                "INSERT INTO customers (name, company, source, city, region, notes, custom,"
                " created_at, updated_at) VALUES (?, '', '', '', '', '', '{}',"
                " '2024-01-01 00:00:00', '2024-01-01 00:00:00')",
                (name,),
            )
            conn.execute(
                "INSERT INTO contact_points (customer_id, kind, value, label) VALUES (?, 'phone', ?, '')",
                (cur.lastrowid, phone),
            )
        conn.close()
        return
    sql = (
        "WITH c AS (INSERT INTO customers (name, company, source, city, region, notes, custom,"
        f" created_at, updated_at) VALUES ('{name}', '', '', '', '', '', '{{}}', now(), now())"
        " RETURNING id) INSERT INTO contact_points (customer_id, kind, value, label)"
        f" SELECT id, 'phone', '{phone}', '' FROM c"
    )
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            url.host,
            "-p",
            str(url.port),
            "-U",
            url.username,
            "-d",
            url.database,
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        timeout=30,
    )


async def test_a_phone_taken_mid_import_by_another_writer(sessions, engine, db_url, tmp_path):
    """The batch fails on the unique index, is redone row by row, and only one row is lost."""
    path = write_csv(
        tmp_path / "race.csv",
        [
            ["Name", "Telefon"],
            ["Row A", "030 123456"],
            ["Row B", "040 123456"],
            ["Row C", "0151 23456789"],
        ],
    )
    inserts = 0

    def race(conn, cursor, statement, parameters, context, executemany):
        nonlocal inserts
        if statement.startswith("INSERT INTO customers"):
            inserts += 1
            if inserts == 1:  # the batch: someone takes row A's number first
                claim(db_url, "Other X", "+4930123456")
            elif inserts == 2:  # row B's retry: someone takes its number too
                claim(db_url, "Other Y", "+4940123456")

    event.listen(engine.sync_engine, "before_cursor_execute", race)
    try:
        report = await run_import(sessions, path)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", race)
    async with sessions() as session:
        x = await find_by_phone(session, "+4930123456")
        y = await find_by_phone(session, "+4940123456")
        c = await find_by_phone(session, "+4915123456789")
    assert (x.name, y.name, c.name) == ("Other X", "Other Y", "Row C")
    assert [(r.row, r.outcome, r.customer_id) for r in report.rows] == [
        (2, "updated", x.id),
        (3, "rejected", None),
        (4, "created", c.id),
    ]
    assert report.rows[1].reason.startswith("database refused the row: ")
    assert "unique" in report.rows[1].reason.lower()
    assert await customer_count(sessions) == 3  # X, Y and C: the failed batch left nothing behind
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ContactPoint)) == 3


async def test_cli_report_and_exit_codes(config, tmp_path, capsys):
    report_path = tmp_path / "report.csv"
    args = build_parser().parse_args(
        ["import", "customers", str(MESSY), "--source", "cli", "--report", str(report_path)]
    )
    assert await run_import_cli(config, args) == 0
    out = capsys.readouterr()
    # No Anna and Bernd beforehand: row 7 creates Anna, row 8 (her phone, Bernd's email) merges
    # into her as nobody owns that email yet, and row 14 (Bernd's email) follows it there.
    assert "12 rows: 4 created, 0 updated, 4 merged, 4 rejected" in out.out
    assert "row 6: rejected: name is missing" in out.out
    assert "columns: Vorname→first_name" in out.err
    with report_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["outcome"] for r in rows].count("created") == 4
    assert rows[0] == {"row": "2", "outcome": "created", "customer_id": "1", "reason": ""}
    assert rows[4] == {
        "row": "6",
        "outcome": "rejected",
        "customer_id": "",
        "reason": "name is missing",
    }

    dry = build_parser().parse_args(["import", "customers", str(MESSY), "--dry-run"])
    assert await run_import_cli(config, dry) == 0
    assert "dry run (nothing changed)" in capsys.readouterr().out

    bad_map = build_parser().parse_args(["import", "customers", str(MESSY), "--map", "Fax=phone"])
    assert await run_import_cli(config, bad_map) == 2
    assert "no column 'Fax'" in capsys.readouterr().err


def test_cli_subprocess(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env["COMMHUB_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    ok = subprocess.run(
        [COMMHUB, "import", "customers", str(MESSY)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 created, 0 updated, 4 merged, 4 rejected" in ok.stdout
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"PK\x03\x04junk")
    bad = subprocess.run(
        [COMMHUB, "import", "customers", str(junk)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "not a readable XLSX file" in bad.stderr and "Traceback" not in bad.stderr


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = _ProgressBar(stream)
    bar(50, 100)
    bar(100, 100)
    bar(150, None)
    bar.finish()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "50/100 rows  50%" in text and "100/100 rows 100%" in text
    assert "150 rows" in text and "rows/s" in text


def test_progress_is_a_log_line_every_n_rows_otherwise(caplog):
    stream = io.StringIO()
    bar = _ProgressBar(stream, every=10)
    with caplog.at_level(logging.INFO, logger="hub.importer"):
        for done in range(5, 30, 5):
            bar(done, 25)
        bar.finish()
    assert stream.getvalue() == ""
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "import: 10 rows done",
        "import: 20 rows done",
    ]
