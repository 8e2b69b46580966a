"""Customer import from CSV and XLSX: column mapping, duplicate merge, a report for every row."""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import itertools
import logging
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any, TextIO, cast

from sqlalchemy import Table as SqlTable
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import Config
from hub.customers import TEXT_FIELDS, clean_tags
from hub.errors import CommhubError, ValidationError
from hub.models.base import utcnow
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.phone import normalize_email, parse_phone

log = logging.getLogger(__name__)

# Fields a column can feed; "custom:<key>" feeds a custom field, "ignore" drops the column.
FIELDS = (
    "name",
    "first_name",
    "last_name",
    "company",
    "phone",
    "email",
    "tags",
    "birthday",
    "city",
    "region",
    "source",
    "notes",
)
OUTCOMES = ("created", "updated", "merged", "rejected")
BATCH_SIZE = 500
# Core tables: the bulk writes skip the ORM (several times faster per row).
_CUSTOMERS = cast(SqlTable, Customer.__table__)
_CONTACTS = cast(SqlTable, ContactPoint.__table__)
_TAGS = cast(SqlTable, CustomerTag.__table__)

# Header names as people write them (English and German), compared after _header_key().
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "fullname", "kunde", "kundenname", "kontakt", "contact", "contactname"),
    "first_name": ("vorname", "firstname", "givenname"),
    "last_name": ("nachname", "lastname", "surname", "familyname", "familienname"),
    "company": (
        "firma",
        "company",
        "unternehmen",
        "organisation",
        "organization",
        "firmenname",
        "companyname",
    ),
    "phone": (
        "telefon",
        "phone",
        "phones",
        "telefonnummern",
        "tel",
        "telefonnummer",
        "phonenumber",
        "mobil",
        "mobile",
        "handy",
        "mobilnummer",
        "mobiltelefon",
        "mobilephone",
        "cell",
        "cellphone",
        "festnetz",
        "rufnummer",
    ),
    "email": ("email", "emails", "mail", "emailadresse", "emailaddress", "mailadresse"),
    "tags": ("tags", "tag", "schlagworte", "schlagwörter", "stichworte", "labels"),
    "birthday": ("geburtstag", "birthday", "geburtsdatum", "dateofbirth", "dob", "birthdate"),
    "city": ("stadt", "city", "ort", "wohnort", "town"),
    "region": ("region", "bundesland", "state", "province"),
    "source": ("quelle", "source", "herkunft", "leadquelle"),
    "notes": (
        "notes",
        "notizen",
        "note",
        "notiz",
        "bemerkung",
        "bemerkungen",
        "comment",
        "comments",
    ),
}
_HEADER_FIELD = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
# "Telefon privat", "Phone (work)", "E-Mail 2": a contact column's name plus a qualifier. Only
# these qualifiers, so that "E-Mail Opt-in" or "Telefonnotiz" stay custom fields.
_PREFIXES = (
    ("telefon", "phone"),
    ("phone", "phone"),
    ("tel", "phone"),
    ("mobil", "phone"),
    ("handy", "phone"),
    ("email", "email"),
    ("mail", "email"),
)
_QUALIFIERS = frozenset(
    [
        "privat",
        "private",
        "home",
        "geschäftlich",
        "geschaeftlich",
        "dienstlich",
        "business",
        "work",
        "office",
        "büro",
        "buero",
        "zentrale",
        "mobil",
        "mobile",
        "festnetz",
        "nummer",
        "number",
        "adresse",
        "address",
    ]
)
_SPLIT_PHONES = re.compile(r"[;,|\n]+")
_SPLIT_EMAILS = re.compile(r"[;,|\s]+")
_SPLIT_TAGS = re.compile(r"[;,|\n]+")


class ImportFileError(CommhubError):
    """The file cannot be read as a table, or the column mapping is unusable."""


def _header_key(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def guess_field(header: str) -> str:
    """The field a column with this header feeds: a known name, or custom:<header>."""
    text = header.strip()
    lowered = text.casefold()
    for prefix in ("custom:", "custom."):
        if lowered.startswith(prefix) and len(text) > len(prefix):
            return "custom:" + text[len(prefix) :]
    key = _header_key(text)
    if key in _HEADER_FIELD:
        return _HEADER_FIELD[key]
    for prefix, name in _PREFIXES:
        rest = key[len(prefix) :]
        if key.startswith(prefix) and (rest.isdigit() or rest in _QUALIFIERS):
            return name
    return "custom:" + text


# -- reading files -------------------------------------------------------------------------------


@dataclass
class Table:
    """A file opened for import: header names, then (row number, cells) as a spreadsheet counts."""

    columns: list[str]
    rows: Iterator[tuple[int, Sequence[Any]]]
    total: int | None  # data rows, when known up front
    description: str  # "CSV, cp1252, ';'" or "XLSX sheet 'Kunden'"
    close: Callable[[], None] = lambda: None


def _decode(data: bytes) -> tuple[str, str]:
    """Text and encoding of a CSV file: UTF-16 by BOM, else UTF-8, else Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; Latin-1 maps every byte, so this cannot fail.
        return data.decode("latin-1"), "latin-1"


def _sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: the most frequent of ; , and tab outside quotes."""
    header = text.lstrip("\r\n").split("\n", 1)[0]
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _is_blank(cells: Sequence[Any]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _header_and_rows(
    numbered: Iterator[tuple[int, Sequence[Any]]], path: Path
) -> tuple[list[str], Iterator[tuple[int, Sequence[Any]]]]:
    for _number, cells in numbered:
        if not _is_blank(cells):
            columns = [_cell_text(c) or f"column {_column_letter(i)}" for i, c in enumerate(cells)]
            rows = ((n, c) for n, c in numbered if not _is_blank(c))
            return columns, rows
    raise ImportFileError(f"{path}: the file has no header row (it is empty)")


def _open_csv(path: Path) -> Table:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImportFileError(f"{path}: cannot be read: {err.strerror}") from err
    if b"\x00" in data[:4096] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError(f"{path}: binary data, not a CSV file (save it as CSV or XLSX)")
    text, encoding = _decode(data)
    delimiter = _sniff_delimiter(text)
    try:
        # Parse everything once up front: a broken file fails before anything is written,
        # and the progress bar knows the total.
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as err:
        raise ImportFileError(f"{path}: not a readable CSV file: {err}") from err
    numbered = iter(enumerate(records, start=1))
    columns, rows = _header_and_rows(numbered, path)
    total = sum(1 for r in records if not _is_blank(r)) - 1
    shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
    return Table(columns, rows, total, f"CSV, {encoding}, delimiter {shown}")


def _open_xlsx(path: Path, sheet: str | None) -> Table:
    import zipfile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it does not read; the data is fine.
            warnings.simplefilter("ignore", UserWarning)
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as err:
        raise ImportFileError(f"{path}: not a readable XLSX file: {err}") from err
    try:
        if sheet is None:
            worksheet = workbook.worksheets[0]
        elif sheet in workbook.sheetnames:
            worksheet = workbook[sheet]
        else:
            raise ImportFileError(
                f"{path}: no sheet {sheet!r}; sheets: {', '.join(workbook.sheetnames)}"
            )
        first = worksheet.min_row if worksheet.max_row else 1
        numbered = iter(enumerate(worksheet.iter_rows(values_only=True), start=first))
        columns, rows = _header_and_rows(numbered, path)
    except BaseException:
        workbook.close()
        raise
    total = None
    if worksheet.max_row:
        # An upper bound: blank rows are skipped, so the bar may end a little early.
        total = max(0, worksheet.max_row - first)
    return Table(columns, rows, total, f"XLSX, sheet {worksheet.title!r}", workbook.close)


def open_table(path: str | Path, sheet: str | None = None) -> Table:
    """Open a CSV or XLSX file for import; ImportFileError says why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    with path.open("rb") as handle:
        magic = handle.read(8)
    suffix = path.suffix.lower()
    if suffix == ".xls" or magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(f"{path}: old Excel .xls format; save it as .xlsx or CSV")
    if suffix in (".xlsx", ".xlsm") or magic.startswith(b"PK\x03\x04"):
        return _open_xlsx(path, sheet)
    if sheet is not None:
        raise ImportFileError(f"{path}: --sheet applies to XLSX files only")
    return _open_csv(path)


# -- column mapping ------------------------------------------------------------------------------


ColumnMap = list[str | None]


def _check_field(spec: str, where: str) -> str | None:
    spec = spec.strip()
    lowered = spec.casefold()
    if lowered in ("ignore", "-", "skip"):
        return None
    if lowered in FIELDS:
        return lowered
    for prefix in ("custom:", "custom."):
        if lowered.startswith(prefix) and len(spec) > len(prefix):
            return "custom:" + spec[len(prefix) :]
    raise ImportFileError(
        f"{where}: unknown field {spec!r}; fields: {', '.join(FIELDS)}, custom:KEY, ignore"
    )


def build_mapping(columns: Sequence[str], overrides: Sequence[str] = ()) -> ColumnMap:
    """One field per column (None = ignored): guessed from the header, then --map COLUMN=FIELD."""
    mapping: ColumnMap = [guess_field(c) for c in columns]
    wanted = {c.strip().casefold(): i for i, c in reversed(list(enumerate(columns)))}
    for item in overrides:
        column, sep, spec = item.rpartition("=")
        if not sep or not column.strip():
            raise ImportFileError(f"--map {item!r}: expected COLUMN=FIELD")
        index = wanted.get(column.strip().casefold())
        if index is None:
            raise ImportFileError(
                f"--map {item!r}: no column {column.strip()!r}; columns: {', '.join(columns)}"
            )
        mapping[index] = _check_field(spec, f"--map {item!r}")
    fields = set(mapping)
    if not fields & {"name", "first_name", "last_name", "phone", "email"}:
        raise ImportFileError(
            "no column looks like a name, phone or email address (columns: "
            f"{', '.join(columns)}); name them with --map COLUMN=FIELD"
        )
    return mapping


def describe_mapping(columns: Sequence[str], mapping: ColumnMap) -> str:
    """'Name→name, Telefon→phone, Kundennr→custom:Kundennr' for the operator."""
    return ", ".join(f"{c}→{f or 'ignored'}" for c, f in zip(columns, mapping, strict=False))


# -- one row → a record --------------------------------------------------------------------------


@dataclass(slots=True)
class RowResult:
    """What happened to one row of the file."""

    row: int
    outcome: str  # created | updated | merged | rejected
    customer_id: int | None
    reason: str


@dataclass
class ImportReport:
    """Totals and the row-by-row outcome of an import."""

    rows: list[RowResult] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        """How many rows had this outcome."""
        return sum(1 for r in self.rows if r.outcome == outcome)

    @property
    def totals(self) -> dict[str, int]:
        """{"created": n, "updated": n, "merged": n, "rejected": n, "rows": n}."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in self.rows:
            counts[r.outcome] += 1
        return {**counts, "rows": len(self.rows)}

    def rejected(self) -> list[RowResult]:
        """The rejected rows, in file order."""
        return [r for r in self.rows if r.outcome == "rejected"]

    def write_csv(self, stream: TextIO) -> None:
        """The per-row report: row, outcome, customer_id, reason."""
        writer = csv.writer(stream)
        writer.writerow(["row", "outcome", "customer_id", "reason"])
        for r in self.rows:
            writer.writerow(
                [r.row, r.outcome, "" if r.customer_id is None else r.customer_id, r.reason]
            )


@dataclass
class _Record:
    row: int
    name: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # company, city, ..., birthday
    contacts: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, value) → label
    tags: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    problem: str = ""


def _cell_text(value: Any) -> str:
    """A cell as text: numbers without '.0' (phones typed as numbers), dates as ISO dates."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").strip()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == dtime(0) else value.isoformat()
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    return str(value).strip()


def _custom_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (bool, int, float)):
        return value
    return _cell_text(value)


_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y", "%d.%m.%y")


def parse_birthday(value: Any) -> date:
    """A birthday from a cell: a date, or text like 1980-04-30, 30.04.1980, 30.04.80."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _cell_text(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+", text):
        text = text[:10]
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt).date()  # noqa: DTZ007 (a date, no time)
        except ValueError:
            continue
        if fmt.endswith("%y") and parsed > utcnow().date():
            parsed = parsed.replace(year=parsed.year - 100)  # '30.04.80' is 1980, not 2080
        return parsed
    raise ValidationError(f"{text!r} is not a date", field="birthday")


def _to_record(
    number: int, cells: Sequence[Any], columns: Sequence[str], mapping: ColumnMap, region: str
) -> _Record:
    """Parse and normalise one row; a problem is recorded, not raised."""
    record = _Record(row=number)
    first, last, notes = "", "", []
    try:
        for index, spec in enumerate(mapping):
            if spec is None or index >= len(cells):
                continue
            raw = cells[index]
            text = _cell_text(raw)
            if not text:
                continue
            column = columns[index]
            if spec == "name":
                record.name = record.name or text
            elif spec == "first_name":
                first = first or text
            elif spec == "last_name":
                last = last or text
            elif spec == "phone":
                for part in _SPLIT_PHONES.split(text):
                    if not part.strip():
                        continue
                    try:
                        number_ = parse_phone(part, region)
                    except ValidationError:
                        raise ValidationError(
                            f"column {column!r}: {part.strip()!r} is not a phone number"
                        ) from None
                    label = "mobile" if number_.is_mobile else ""
                    record.contacts.setdefault(("phone", number_.e164), label)
            elif spec == "email":
                for part in _SPLIT_EMAILS.split(text):
                    if not part:
                        continue
                    try:
                        email = normalize_email(part)
                    except ValidationError:
                        raise ValidationError(
                            f"column {column!r}: {part!r} is not an email address"
                        ) from None
                    record.contacts.setdefault(("email", email), "")
            elif spec == "tags":
                try:
                    tags = clean_tags(_SPLIT_TAGS.split(text))
                except ValidationError as err:
                    raise ValidationError(f"column {column!r}: {err}") from None
                record.tags.extend(t for t in tags if t not in record.tags)
            elif spec == "birthday":
                try:
                    record.values["birthday"] = parse_birthday(raw)
                except ValidationError as err:
                    raise ValidationError(f"column {column!r}: {err}") from None
            elif spec == "notes":
                notes.append(text)
            elif spec.startswith("custom:"):
                record.custom.setdefault(spec[7:], _custom_value(raw))
            else:  # company, city, region, source
                limit = TEXT_FIELDS[spec]
                if len(text) > limit:
                    raise ValidationError(f"column {column!r}: longer than {limit} characters")
                record.values.setdefault(spec, text)
        if not record.name and (first or last):
            record.name = f"{first} {last}".strip()
        if len(record.name) > TEXT_FIELDS["name"]:
            raise ValidationError(f"name longer than {TEXT_FIELDS['name']} characters")
        if notes:
            record.values["notes"] = "\n".join(notes)
    except ValidationError as err:
        record.problem = str(err)
    return record


# -- planning and writing a batch -----------------------------------------------------------------

Target = int | str  # a customer id, or "row N" for a customer this import creates


@dataclass
class _Customer:
    """A customer as the import sees it: fields, contacts, tags; what changed."""

    target: Target
    values: dict[str, Any]
    custom: dict[str, Any]
    contacts: dict[tuple[str, str], str]
    tags: list[str]
    new: bool
    changed: set[str] = field(default_factory=set)
    new_contacts: list[tuple[str, str, str]] = field(default_factory=list)
    new_tags: list[str] = field(default_factory=list)

    def fill(self, record: _Record) -> None:
        """Fill empty fields from the row; union contacts and tags (never overwrite)."""
        for key, value in record.values.items():
            if self.values.get(key) in (None, ""):
                self.values[key] = value
                self.changed.add(key)
        for key, value in record.custom.items():
            if self.custom.get(key) in (None, ""):
                self.custom[key] = value
                self.changed.add("custom")
        for contact, label in record.contacts.items():
            if contact not in self.contacts:
                self.contacts[contact] = label
                self.new_contacts.append((contact[0], contact[1], label))
        for tag in record.tags:
            if tag not in self.tags:
                self.tags.append(tag)
                self.new_tags.append(tag)


_FILL = ("company", "source", "city", "region", "notes", "birthday")


@dataclass
class _State:
    """What the import remembers between batches."""

    dry_run: bool
    # Customers this import created or updated, and the first row that did it.
    touched: dict[Target, int] = field(default_factory=dict)
    # Dry run only: contacts claimed by rows whose customers were never written.
    claimed: dict[tuple[str, str], Target] = field(default_factory=dict)


def _padded_chunks(values: Sequence[Any], most: int = 1024) -> Iterator[list[Any]]:
    """Chunks for IN (...), padded to a power of two by repeating the last value.

    Every distinct list length is a distinct SQL text, which asyncpg prepares anew (tens of ms
    with hundreds of parameters); a handful of lengths keeps the prepared statements reused."""
    for start in range(0, len(values), most):
        chunk = list(values[start : start + most])
        size = 8
        while size < len(chunk):
            size *= 2
        yield chunk + [chunk[-1]] * (size - len(chunk))


async def _owners(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Target]:
    found: dict[tuple[str, str], Target] = {}
    by_kind: dict[str, list[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, []).append(value)
    for kind, values in by_kind.items():
        for chunk in _padded_chunks(values):
            rows = await session.execute(
                select(ContactPoint.value, ContactPoint.customer_id).where(
                    ContactPoint.kind == kind, ContactPoint.value.in_(chunk)
                )
            )
            for value, customer_id in rows:
                found[(kind, value)] = customer_id
    return found


async def _load(session: AsyncSession, ids: Sequence[int]) -> dict[Target, _Customer]:
    loaded: dict[Target, _Customer] = {}
    for chunk in _padded_chunks(ids):
        rows = await session.execute(
            select(Customer.id, Customer.custom, *(getattr(Customer, k) for k in _FILL)).where(
                Customer.id.in_(chunk)
            )
        )
        for row in rows:
            loaded[row[0]] = _Customer(
                target=row[0],
                values=dict(zip(_FILL, row[2:], strict=True)),
                custom=dict(row[1] or {}),
                contacts={},
                tags=[],
                new=False,
            )
        contacts = await session.execute(
            select(ContactPoint.customer_id, ContactPoint.kind, ContactPoint.value).where(
                ContactPoint.customer_id.in_(chunk)
            )
        )
        for customer_id, kind, value in contacts:
            loaded[customer_id].contacts[(kind, value)] = ""
        tags = await session.execute(
            select(CustomerTag.customer_id, CustomerTag.tag).where(
                CustomerTag.customer_id.in_(chunk)
            )
        )
        for customer_id, tag in tags:
            loaded[customer_id].tags.append(tag)
    return loaded


def _describe(target: Target) -> str:
    return f"customer {target}" if isinstance(target, int) else f"the customer from {target}"


async def _batch(
    session: AsyncSession, records: Sequence[_Record], state: _State, source: str
) -> list[tuple[_Record, str, Target | None, str]]:
    """Decide each row's outcome, then write the batch (unless dry run)."""
    owners = await _owners(session, {k for r in records if not r.problem for k in r.contacts})
    if state.dry_run:
        for r in records:
            owners.update((k, state.claimed[k]) for k in r.contacts if k in state.claimed)
    customers = await _load(session, sorted({t for t in owners.values() if isinstance(t, int)}))
    decided: list[tuple[_Record, str, Target | None, str]] = []
    for record in records:
        if record.problem:
            decided.append((record, "rejected", None, record.problem))
            continue
        matches: dict[Target, list[str]] = {}
        for key in record.contacts:
            if key in owners:
                matches.setdefault(owners[key], []).append(key[1])
        if len(matches) > 1:
            parts = [f"{', '.join(v)} belongs to {_describe(t)}" for t, v in matches.items()]
            reason = "; ".join(parts) + " (not merging two customers; merge them first)"
            decided.append((record, "rejected", None, reason))
            continue
        if matches:
            target, via = next(iter(matches.items()))
            first_row = state.touched.get(target)
            if first_row is not None:
                outcome, reason = "merged", f"same {', '.join(via)} as row {first_row}"
            else:
                outcome, reason = "updated", f"existing customer matched by {', '.join(via)}"
            customer = customers.get(target)
            if customer is not None:  # None: created by an earlier batch of this dry run
                customer.fill(record)
        elif not record.name:
            decided.append((record, "rejected", None, "name is missing"))
            continue
        else:
            target, outcome, reason = f"row {record.row}", "created", ""
            customers[target] = _Customer(
                target=target,
                values={"source": source, **record.values},
                custom=dict(record.custom),
                contacts=dict(record.contacts),
                tags=list(record.tags),
                new=True,
            )
            customers[target].values["name"] = record.name
        state.touched.setdefault(target, record.row)
        for key in record.contacts:
            owners[key] = target
            if state.dry_run:
                state.claimed[key] = target
        decided.append((record, outcome, target, reason))
    if state.dry_run:
        return decided
    ids = await _write(session, customers)
    for placeholder, real in ids.items():
        state.touched[real] = state.touched.pop(placeholder)
    return [(r, o, ids.get(t, t) if t is not None else None, why) for r, o, t, why in decided]


async def _insert_customers(session: AsyncSession, params: list[dict[str, Any]]) -> list[int]:
    """Insert customers in a few multi-row statements; their ids in the order of `params`."""
    table = _CUSTOMERS
    if session.get_bind().dialect.name != "sqlite":
        result = await session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), params
        )
        return list(result.scalars().all())
    # SQLAlchemy inserts row by row on SQLite when asked for ordered ids (10x slower). Inside
    # our write transaction SQLite gives each new row max(rowid) + 1, so ascending ids follow
    # the VALUES order; the names returned alongside prove it for every row.
    result = await session.execute(insert(table).returning(table.c.id, table.c.name), params)
    rows: list[tuple[int, str]] = sorted((int(r[0]), str(r[1])) for r in result.all())
    if [name for _id, name in rows] != [p["name"] for p in params]:
        raise _OrderUnknown("SQLite returned new customer ids out of order")
    return [row_id for row_id, _name in rows]


class _OrderUnknown(DBAPIError):
    """The ids of a multi-row insert could not be matched to its rows: redo the batch by row."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, Exception(message))


async def _write(session: AsyncSession, customers: Mapping[Target, _Customer]) -> dict[Target, int]:
    """Insert new customers and fill existing ones in a few statements; placeholder → id."""
    now = utcnow()
    created = [c for c in customers.values() if c.new]
    ids: dict[Target, int] = {}
    if created:
        params = [
            {
                "name": c.values["name"],
                "company": c.values.get("company", ""),
                "source": c.values.get("source", ""),
                "city": c.values.get("city", ""),
                "region": c.values.get("region", ""),
                "notes": c.values.get("notes", ""),
                "birthday": c.values.get("birthday"),
                "custom": c.custom,
                "created_at": now,
                "updated_at": now,
            }
            for c in created
        ]
        new_ids = await _insert_customers(session, params)
        ids = {c.target: new_id for c, new_id in zip(created, new_ids, strict=True)}
    contacts: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    for customer in customers.values():
        customer_id = ids[customer.target] if customer.new else customer.target
        if customer.new:
            contacts += [
                {"customer_id": customer_id, "kind": k, "value": v, "label": label}
                for (k, v), label in customer.contacts.items()
            ]
            tags += [{"customer_id": customer_id, "tag": t} for t in customer.tags]
            continue
        contacts += [
            {"customer_id": customer_id, "kind": k, "value": v, "label": label}
            for k, v, label in customer.new_contacts
        ]
        tags += [{"customer_id": customer_id, "tag": t} for t in customer.new_tags]
        if customer.changed or customer.new_contacts or customer.new_tags:
            values: dict[str, Any] = {k: customer.values[k] for k in customer.changed if k in _FILL}
            if "custom" in customer.changed:
                values["custom"] = customer.custom
            await session.execute(
                update(_CUSTOMERS)
                .where(_CUSTOMERS.c.id == customer_id)
                .values(**values, updated_at=now)
            )
    if contacts:
        await session.execute(insert(_CONTACTS), contacts)
    if tags:
        await session.execute(insert(_TAGS), tags)
    return ids


# -- the import ----------------------------------------------------------------------------------

Progress = Callable[[int, int | None], None]


async def import_customers(
    sessions: async_sessionmaker[AsyncSession],
    rows: Iterable[tuple[int, Sequence[Any]]],
    mapping: ColumnMap,
    region: str,
    *,
    columns: Sequence[str] | None = None,
    source: str = "",
    dry_run: bool = False,
    progress: Progress | None = None,
    total: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Import (row number, cells) rows: create, update or merge by phone/email, reject with reason.

    Each batch commits on its own; if the database refuses a batch (e.g. another process just
    took one of its phone numbers), the batch is redone row by row so only the bad row is lost."""
    started = time.monotonic()
    names = (
        list(columns) if columns is not None else [_column_letter(i) for i in range(len(mapping))]
    )
    if len(source) > TEXT_FIELDS["source"]:
        raise ValidationError(f"source longer than {TEXT_FIELDS['source']} characters")
    report = ImportReport(dry_run=dry_run)
    state = _State(dry_run=dry_run)
    iterator = iter(rows)
    done = batches = 0
    analyze_at = 1
    while chunk := list(itertools.islice(iterator, batch_size)):
        records = [_to_record(n, cells, names, mapping, region) for n, cells in chunk]
        decided = await _run_batch(sessions, records, state, source)
        report.rows += [
            RowResult(r.row, outcome, target if isinstance(target, int) else None, reason)
            for r, outcome, target, reason in decided
        ]
        done += len(chunk)
        batches += 1
        if batches == analyze_at and not dry_run:
            analyze_at *= 4
            await _refresh_statistics(sessions)
        if progress:
            progress(done, total)
    report.seconds = time.monotonic() - started
    return report


async def _refresh_statistics(sessions: async_sessionmaker[AsyncSession]) -> None:
    """PostgreSQL: ANALYZE the tables an import grows (after batch 1, 4, 16, 64, ...).

    Without it, an import into a fresh database looks up owners with plans made for an empty
    table: a sequential scan comparing each row with every value of the IN list, 100x slower
    than the unique index, and worse with every batch until autovacuum happens to analyze."""
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("ANALYZE customers, contact_points, customer_tags"))


async def _run_batch(
    sessions: async_sessionmaker[AsyncSession],
    records: Sequence[_Record],
    state: _State,
    source: str,
) -> list[tuple[_Record, str, Target | None, str]]:
    if state.dry_run:
        async with sessions() as session:
            return await _batch(session, records, state, source)
    before = dict(state.touched)
    try:
        async with sessions() as session, session.begin():
            return await _batch(session, records, state, source)
    except DBAPIError as err:
        log.info("import: batch refused (%s); retrying its rows one by one", _db_reason(err))
    state.touched = before
    decided: list[tuple[_Record, str, Target | None, str]] = []
    for record in records:
        before = dict(state.touched)
        try:
            async with sessions() as session, session.begin():
                decided += await _batch(session, [record], state, source)
        except DBAPIError as err:
            state.touched = before
            decided.append(
                (record, "rejected", None, f"database refused the row: {_db_reason(err)}")
            )
    return decided


def _db_reason(err: DBAPIError) -> str:
    text = str(err.orig) if err.orig is not None else str(err)
    return text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__


# -- command line --------------------------------------------------------------------------------


class _ProgressBar:
    """A text bar on a terminal; a log line every `every` rows when stderr is not one."""

    def __init__(self, stream: TextIO, every: int = 10_000) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self.started = time.monotonic()
        self.logged = 0

    def __call__(self, done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if not self.tty:
            if done - self.logged >= self.every:
                self.logged = done
                log.info("import: %d rows done (%.0f rows/s)", done, rate)
            return
        if total:
            share = min(done / total, 1.0)
            bar = "#" * int(share * 30)
            line = f"\r[{bar:<30}] {done:,}/{total:,} rows {share:4.0%}  {rate:,.0f} rows/s"
        else:
            line = f"\r{done:,} rows  {rate:,.0f} rows/s"
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _write_report(path: str, report: ImportReport) -> None:
    with Path(path).open("w", encoding="utf-8", newline="") as stream:
        report.write_csv(stream)


SHOW_REJECTED = 20


async def run_import_cli(config: Config, args: argparse.Namespace) -> int:
    """`commhub import customers FILE`: 0 when the file was read (even with rejected rows), else 2."""
    from hub.db import create_engine, session_factory
    from hub.migrate import upgrade

    try:
        table = open_table(args.file, args.sheet)
    except ImportFileError as err:
        print(f"commhub: {err}", file=sys.stderr)
        return 2
    try:
        try:
            mapping = build_mapping(table.columns, args.map or ())
        except ImportFileError as err:
            print(f"commhub: {args.file}: {err}", file=sys.stderr)
            return 2
        print(f"{args.file}: {table.description}", file=sys.stderr)
        print(f"columns: {describe_mapping(table.columns, mapping)}", file=sys.stderr)
        engine = create_engine(config.database)
        bar = _ProgressBar(sys.stderr)
        try:
            await upgrade(engine)
            report = await import_customers(
                session_factory(engine),
                table.rows,
                mapping,
                config.phone.default_region,
                columns=table.columns,
                source=args.source or "",
                dry_run=bool(args.dry_run),
                progress=bar,
                total=table.total,
            )
        finally:
            bar.finish()
            await engine.dispose()
    finally:
        table.close()
    totals = report.totals
    prefix = "dry run (nothing changed): " if report.dry_run else ""
    print(
        f"{prefix}{args.file}: {totals['rows']} rows: {totals['created']} created, "
        f"{totals['updated']} updated, {totals['merged']} merged, {totals['rejected']} rejected "
        f"({report.seconds:.1f} s)"
    )
    rejected = report.rejected()
    for result in rejected[:SHOW_REJECTED]:
        print(f"  row {result.row}: rejected: {result.reason}")
    if args.report:
        _write_report(args.report, report)
        print(f"row-by-row report: {args.report}")
    elif len(rejected) > SHOW_REJECTED:
        print(f"  … and {len(rejected) - SHOW_REJECTED} more; --report FILE lists every row")
    return 0
