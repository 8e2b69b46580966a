"""Online backup and restore: SQLite through its backup API, PostgreSQL through pg_dump/pg_restore.

The file's own format says which backend made it ("SQLite format 3" or pg_dump's "PGDMP"), so a
restore refuses a backup of the other kind. Both work while commhub is running."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from hub.config import Config
from hub.errors import CommhubError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
PG_BIN_ROOT = Path("/usr/lib/postgresql")


class BackupError(CommhubError):
    """A backup or restore cannot be done; the message says why and what to do."""


def backend_of_url(url: str) -> str:
    """'sqlite' or 'postgresql' for a database URL."""
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def backend_of_file(path: Path) -> str:
    """Which backend wrote a backup file, from its first bytes."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as err:
        raise BackupError(f"{path}: cannot be read: {err.strerror}") from err
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_MAGIC):
        return "postgresql"
    raise BackupError(f"{path}: not a commhub backup (neither a SQLite file nor a pg_dump archive)")


def sqlite_file(url: str) -> Path:
    """The database file of a SQLite URL."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def known_revisions() -> set[str]:
    """Every migration revision this version of commhub knows."""
    from alembic.script import ScriptDirectory

    from hub.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def check_revisions(heads: Iterable[str], path: Path) -> set[str]:
    """The backup's migration heads, if this commhub can run them; else BackupError."""
    found = set(heads)
    if not found:
        raise BackupError(f"{path}: the backup has no migration version (not a commhub database?)")
    unknown = found - known_revisions()
    if unknown:
        raise BackupError(
            f"{path}: the backup is at revision {', '.join(sorted(unknown))}, which this commhub "
            "does not know (was it made by a newer version?); refusing to restore"
        )
    return found


# -- SQLite ---------------------------------------------------------------------------------------


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            # One step (pages=-1): the copy is a single read transaction, a consistent snapshot
            # even while the app commits; in WAL mode it does not block those writers either.
            src.backup(dst)
            # A self-contained file: no -wal/-shm companions needed to read it.
            dst.execute("PRAGMA journal_mode=DELETE")
            if dst.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise BackupError(f"{target}: the copy failed its integrity check")
        finally:
            dst.close()
    except sqlite3.Error as err:
        partial.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup of {source} failed: {err}") from err
    finally:
        src.close()
    os.replace(partial, target)


def _sqlite_heads(path: Path) -> list[str]:
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise BackupError(f"{path}: cannot open: {err}") from err
    try:
        if conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise BackupError(f"{path}: the backup is damaged (integrity check failed)")
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as err:
        raise BackupError(f"{path}: not a commhub backup: {err}") from err
    finally:
        conn.close()
    return [str(r[0]) for r in rows]


def _sqlite_restore(backup: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{backup.resolve()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target, timeout=30)
        try:
            # Through the backup API, not a file copy: connections the app holds open see the
            # new content instead of a file swapped under them (and the WAL stays coherent).
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    except sqlite3.Error as err:
        raise BackupError(f"restore into {target} failed: {err}") from err
    finally:
        src.close()


# -- PostgreSQL -----------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """Path of pg_dump/pg_restore: the newest /usr/lib/postgresql/<v>/bin first, then PATH."""
    versions = []
    if PG_BIN_ROOT.is_dir():
        for entry in PG_BIN_ROOT.iterdir():
            if entry.name.isdigit() and (entry / "bin" / name).is_file():
                versions.append((int(entry.name), entry / "bin" / name))
    if versions:
        return str(max(versions)[1])
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(f"{name} not found: install the PostgreSQL client (postgresql-client-15)")


def _pg_env(url: URL) -> dict[str, str]:
    """libpq environment for the configured database (keeps the password off the command line)."""
    env = dict(os.environ)
    for key, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value is not None and value != "":
            env[key] = str(value)
    ssl = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl.lower(), ssl)
    return env


async def _run_tool(args: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise BackupError(f"{Path(args[0]).name} failed: {message}")
    return out.decode(errors="replace")


async def _pg_backup(url: URL, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    # pg_dump reads one repeatable-read snapshot: consistent while the app keeps writing.
    await _run_tool(
        [
            pg_tool("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "-f",
            str(partial),
        ],
        _pg_env(url),
    )
    os.replace(partial, target)


async def _pg_heads(url: URL, backup: Path) -> list[str]:
    script = await _run_tool(
        [pg_tool("pg_restore"), "--data-only", "--table=alembic_version", "-f", "-", str(backup)],
        _pg_env(url),
    )
    heads: list[str] = []
    copying = False
    for line in script.splitlines():
        if line.startswith("COPY ") and "alembic_version" in line:
            copying = True
        elif copying and line == "\\.":
            break
        elif copying and line:
            heads.append(line.strip())
    return heads


async def _pg_tables_in_backup(url: URL, backup: Path) -> set[str]:
    listing = await _run_tool([pg_tool("pg_restore"), "--list", str(backup)], _pg_env(url))
    # "215; 1259 16385 TABLE public customers postgres"
    return set(re.findall(r"^\d+; \d+ \d+ TABLE public (\S+) ", listing, flags=re.MULTILINE))


async def _pg_restore(url: URL, backup: Path) -> None:
    import asyncpg

    in_backup = await _pg_tables_in_backup(url, backup)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        live = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        # Tables of migrations newer than the backup would make the upgrade after the restore
        # fail ("already exists"); their rows cannot belong to the restored data anyway.
        for extra in sorted(live - in_backup):
            print(f"dropping table {extra} (not in the backup)", file=sys.stderr)
            await conn.execute(f'DROP TABLE IF EXISTS "{extra}" CASCADE')
    finally:
        await conn.close()
    await _run_tool(
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--dbname",
            str(url.database),
            str(backup),
        ],
        _pg_env(url),
    )


# -- command line ---------------------------------------------------------------------------------


async def backup(config: Config, target: Path) -> str:
    """Write an online backup of the configured database to `target`; returns the backend."""
    url = config.database.url
    target.parent.mkdir(parents=True, exist_ok=True)
    if backend_of_url(url) == "sqlite":
        await asyncio.to_thread(_sqlite_backup, sqlite_file(url), target)
        return "sqlite"
    await _pg_backup(make_url(url), target)
    return "postgresql"


async def inspect_backup(config: Config, path: Path) -> set[str]:
    """Check that `path` can be restored into the configured database; its migration heads."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    made_by = backend_of_file(path)
    wanted = backend_of_url(config.database.url)
    if made_by != wanted:
        raise BackupError(
            f"{path} is a {made_by} backup but the configured database ({config.source}) is {wanted}; "
            "restore it into a database of the same kind"
        )
    if made_by == "sqlite":
        heads = await asyncio.to_thread(_sqlite_heads, path)
    else:
        heads = await _pg_heads(make_url(config.database.url), path)
    return check_revisions(heads, path)


async def restore(config: Config, path: Path) -> set[str]:
    """Replace the configured database's content with the backup, then migrate; the new heads."""
    from hub.db import create_engine
    from hub.migrate import current_heads, upgrade

    await inspect_backup(config, path)
    url = config.database.url
    if backend_of_url(url) == "sqlite":
        await asyncio.to_thread(_sqlite_restore, path, sqlite_file(url))
    else:
        await _pg_restore(make_url(url), path)
    engine = create_engine(config.database)
    try:
        await upgrade(engine)  # a backup from an older commhub is brought up to this one
        return await current_heads(engine)
    finally:
        await engine.dispose()


def _ask(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _where(config: Config) -> str:
    url = make_url(config.database.url)
    return str(url.database) if url.get_backend_name() == "sqlite" else url.render_as_string()


async def run_backup_cli(config: Config, args: argparse.Namespace) -> int:
    """`commhub backup FILE`: 0 on success, 2 with a message otherwise."""
    target = Path(args.file)
    try:
        backend = await backup(config, target)
    except BackupError as err:
        print(f"commhub: {err}", file=sys.stderr)
        return 2
    size = target.stat().st_size
    print(f"backed up {backend} database {_where(config)} to {target} ({size:,} bytes)")
    return 0


async def run_restore_cli(config: Config, args: argparse.Namespace) -> int:
    """`commhub restore FILE [--yes]`: asks first; 0 done, 1 declined, 2 refused or failed."""
    path = Path(args.file)
    try:
        heads = await inspect_backup(config, path)
        if not args.yes:
            question = (
                f"Replace ALL data in {_where(config)} with {path} "
                f"(revision {', '.join(sorted(heads))})? Type yes to continue: "
            )
            if not await asyncio.to_thread(_ask, question):
                print("restore cancelled; nothing changed (--yes skips the question)")
                return 1
        now = await restore(config, path)
    except BackupError as err:
        print(f"commhub: {err}", file=sys.stderr)
        return 2
    print(f"restored {path} into {_where(config)}; database at {', '.join(sorted(now))}")
    return 0
