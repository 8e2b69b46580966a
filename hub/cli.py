"""`commhub`: the one entry point (serve, demo, migrate, users, tokens, import/export, backup)."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from hub.config import Config, load_config
from hub.errors import CommhubError

log = logging.getLogger("commhub")


def _read_password(confirm: bool) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise CommhubError("passwords differ")
    return first


def _run(config: Config, coro: Coroutine[Any, Any, Any]) -> Any:
    from hub.eventloop import run

    return run(coro, config.runtime.event_loop)


async def _with_db(config: Config, work: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
    from hub.runtime import running_hub

    async with (
        running_hub(config, connectors=False) as hub,
        hub.sessions() as session,
        session.begin(),
    ):
        return await work(session)


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    """Bring the schema up to date."""
    from hub.db import create_engine
    from hub.migrate import current_heads, upgrade

    async def go() -> set[str]:
        engine = create_engine(config.database)
        try:
            await upgrade(engine)
            return await current_heads(engine)
        finally:
            await engine.dispose()

    heads = _run(config, go())
    print(f"database at {', '.join(sorted(heads))}")
    return 0


def cmd_user_add(args: argparse.Namespace, config: Config) -> int:
    """Add a user; the password comes from stdin."""
    from hub.users import create_user

    password = _read_password(confirm=True)

    async def work(session: Any) -> None:
        await create_user(
            session,
            args.name,
            password,
            args.role,
            extension=args.extension,
            devices=args.device or (),
            display_name=args.display_name or "",
            email=args.email,
        )

    _run(config, _with_db(config, work))
    print(f"user {args.name} ({args.role}) added")
    return 0


def cmd_token_create(args: argparse.Namespace, config: Config) -> int:
    """Print a new API token, once."""
    from hub.users import create_token

    async def work(session: Any) -> str:
        return await create_token(session, args.user, args.label or "")

    print(_run(config, _with_db(config, work)))
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Run the real thing."""
    from hub.runtime import serve

    _run(config, serve(config))
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    """Everything embedded: SQLite, demo data, PBX simulator, SMTP sink, web app."""
    from hub.demo import run_demo

    _run(config, run_demo(config, port=args.port, calls_every=args.calls_every))
    return 0


def cmd_import(args: argparse.Namespace, config: Config) -> int:
    """Import customers from CSV/XLSX."""
    from hub.importer import run_import_cli

    return int(_run(config, run_import_cli(config, args)))


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    """Export calls or customers."""
    from hub.exporter import run_export_cli

    return int(_run(config, run_export_cli(config, args)))


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    """Online backup."""
    from hub.backup import run_backup_cli

    return int(_run(config, run_backup_cli(config, args)))


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    """Restore from a backup."""
    from hub.backup import run_restore_cli

    return int(_run(config, run_restore_cli(config, args)))


def cmd_pbx_sim(args: argparse.Namespace, config: Config) -> int:
    """Run the PBX simulator."""
    from connectors.pbxsim.cli import run_pbx_sim

    _run(
        config,
        run_pbx_sim(
            listen=args.listen,
            scenario=args.scenario,
            replay=args.replay,
            rate=args.rate,
            username=args.username,
            secret=args.secret,
        ),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test)."""
    parser = argparse.ArgumentParser(prog="commhub", description=__doc__)
    parser.add_argument(
        "--config", help="TOML file (default: $COMMHUB_CONFIG or config/commhub.toml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", help="run commhub with the configured connectors").set_defaults(
        func=cmd_serve
    )
    demo = sub.add_parser("demo", help="everything embedded, with a PBX simulator placing calls")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--calls-every", type=float, default=8.0, help="seconds between demo calls")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        func=cmd_migrate
    )

    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_cmd", required=True
    )
    add = user.add_parser("add", help="add a user (password on stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["agent", "marketer", "supervisor", "admin"])
    add.add_argument("--extension")
    add.add_argument("--device", action="append", help="phone channel without -<n>, e.g. PJSIP/201")
    add.add_argument("--display-name")
    add.add_argument("--email")
    add.set_defaults(func=cmd_user_add)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    create = token.add_parser("create", help="print a new API token (shown once)")
    create.add_argument("--user", required=True)
    create.add_argument("--label")
    create.set_defaults(func=cmd_token_create)

    imp = sub.add_parser("import", help="import data").add_subparsers(
        dest="import_cmd", required=True
    )
    imp_c = imp.add_parser("customers", help="customers from CSV or XLSX")
    imp_c.add_argument("file")
    imp_c.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="map a file column to a field (name, company, phone, email, tags, ...)",
    )
    imp_c.add_argument("--source", default="", help="source to record on new customers")
    imp_c.add_argument("--sheet", help="XLSX sheet name (default: the first)")
    imp_c.add_argument("--report", help="write the row-by-row report to this CSV file")
    imp_c.add_argument("--dry-run", action="store_true", help="check the file, change nothing")
    imp_c.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="export calls or customers to stdout or a file")
    exp.add_argument("what", choices=["calls", "customers"])
    exp.add_argument("--format", choices=["csv", "json"], default="csv")
    exp.add_argument("--output", "-o", help="file (default: stdout)")
    exp.add_argument("--from", dest="date_from", help="calls from this date/time (ISO)")
    exp.add_argument("--to", dest="date_to", help="calls until this date/time (ISO)")
    exp.set_defaults(func=cmd_export)

    bak = sub.add_parser("backup", help="online backup of the database to FILE")
    bak.add_argument("file")
    bak.set_defaults(func=cmd_backup)
    res = sub.add_parser("restore", help="restore the database from FILE (replaces all data)")
    res.add_argument("file")
    res.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    res.set_defaults(func=cmd_restore)

    sim = sub.add_parser("pbx-sim", help="run the AMI-speaking PBX simulator")
    sim.add_argument("--listen", default="127.0.0.1:5038", metavar="HOST:PORT")
    group = sim.add_mutually_exclusive_group()
    group.add_argument("--scenario", help="place calls of this scenario")
    group.add_argument("--replay", metavar="TRACE", help="replay a recorded .ami or .json trace")
    sim.add_argument("--rate", type=float, help="new calls per second")
    sim.add_argument("--username", default="commhub")
    sim.add_argument("--secret", default="commhub")
    sim.set_defaults(func=cmd_pbx_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        return int(args.func(args, config))
    except CommhubError as err:
        print(f"commhub: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
