"""Configuration: a TOML file with documented defaults, overridden by COMMHUB_<SECTION>_<KEY>."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from hub.errors import ConfigError

DEFAULT_PATH = Path("config/commhub.toml")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the data lives: SQLite file by default, PostgreSQL (asyncpg) for several processes."""

    url: str = "sqlite+aiosqlite:///var/commhub.db"
    echo: bool = False
    pool_size: int = 10
    # SQLite only: how much lower than the event loop's the CPU priority of the thread that runs
    # SQLite's calls is (a nice increment, 0-19; 0 leaves it alone). See hub/db.py.
    sqlite_thread_nice: int = 10


@dataclass(frozen=True)
class WebConfig:
    """The aiohttp application."""

    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str = ""
    # Public base URL used in links that leave the building (unsubscribe, webhooks).
    base_url: str = "http://127.0.0.1:8080"
    session_hours: int = 12
    secure_cookies: bool = False


@dataclass(frozen=True)
class AmiConfig:
    """The Asterisk Manager Interface link."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "commhub"
    secret: str = ""
    ping_interval: float = 5.0
    # How an agent's own phone is rung for click-to-call; {device} and {extension} are filled in.
    originate_channel: str = "{device}"
    originate_context: str = "from-internal"
    originate_timeout: float = 30.0
    # Numbers matching this are internal extensions, everything else is outside.
    internal_extension_pattern: str = r"^\d{2,5}$"
    # Where Asterisk writes MixMonitor files, as seen from commhub; empty = recordings not served.
    recordings_dir: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    """Outgoing mail."""

    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    password: str = ""
    security: str = "none"  # none | starttls | tls
    from_address: str = "commhub@localhost"
    pool_size: int = 4
    rate_per_second: float = 0.0  # 0 = unlimited
    timeout: float = 30.0
    pipelining: bool = True  # MAIL, RCPT and DATA in one round trip when the server offers it


@dataclass(frozen=True)
class ImapConfig:
    """Incoming mail."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 143
    username: str = ""
    password: str = ""
    security: str = "none"  # none | starttls | tls
    mailboxes: tuple[str, ...] = ("INBOX",)
    poll_seconds: float = 60.0
    create_leads: bool = False
    attachments_dir: str = "var/attachments"
    backfill: bool = False  # first watch of a mailbox: also read the mail already in it


@dataclass(frozen=True)
class SmsConfig:
    """The SMS gateway and its webhook secret."""

    gateway: str = "none"  # none | kannel | smpp | http
    webhook_secret: str = ""
    sender: str = "commhub"
    create_leads: bool = False
    stop_words: tuple[str, ...] = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
    start_words: tuple[str, ...] = ("START", "UNSTOP", "SUBSCRIBE")
    cost_per_segment: float = 0.0
    stop_reply: str = (
        "You will get no more marketing messages from us. Reply START to subscribe again."
    )
    start_reply: str = "You are subscribed again. Reply STOP to opt out."
    expire_hours: float = 72.0  # an SMS sent but never reported on is "expired" after this
    # Gateway-specific settings live in [sms.<gateway>] tables, read by the connector.
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PhoneConfig:
    """Phone number handling."""

    default_region: str = "DE"


@dataclass(frozen=True)
class CampaignsConfig:
    """Bulk sending."""

    email_rate_per_second: float = 0.0
    sms_rate_per_second: float = 10.0
    email_concurrency: int = 8  # messages in flight: about twice [smtp] pool_size keeps it busy
    sms_concurrency: int = 4
    batch_size: int = 500
    max_consecutive_errors: int = 50
    tick_seconds: float = 5.0
    timezone: str = "UTC"
    lease_seconds: float = 60.0  # a claimed batch returns to pending if its worker goes silent
    journal_dir: str = "var/campaign-journal"  # per-host acknowledgement journal (crash recovery)


@dataclass(frozen=True)
class RedisConfig:
    """Optional Redis: the bus becomes pub/sub across processes."""

    url: str = ""
    # How long the AMI link's holder may be silent before another process takes it over.
    lease_seconds: float = 10.0


@dataclass(frozen=True)
class RuntimeConfig:
    """How the process itself runs."""

    # auto (uvloop when installed) | uvloop | asyncio; see hub/eventloop.py
    event_loop: str = "auto"


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` names the file it came from for error messages."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    web: WebConfig = field(default_factory=WebConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    phone: PhoneConfig = field(default_factory=PhoneConfig)
    campaigns: CampaignsConfig = field(default_factory=CampaignsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    source: str = "<defaults>"


_SECTIONS = {f.name: f for f in fields(Config) if f.name != "source"}
SMS_GATEWAY_TABLES = ("kannel", "smpp", "http")
_ENV_RE = re.compile(r"^COMMHUB_([A-Z]+)_([A-Z0-9_]+)$")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's type, or explain why it cannot be."""
    text = isinstance(value, str)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text and value.lower() in ("1", "true", "yes", "on"):
            return True
        if text and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if kind == tuple[str, ...]:
        if text:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    if kind == Mapping[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _build_section(
    name: str, raw: Mapping[str, Any], source: str, from_env: Mapping[tuple[str, str], str]
) -> Any:
    """Build one section dataclass from a table, refusing keys it does not know; a value that
    came from the environment is blamed on its variable, not on the file."""
    cls: Any = _SECTIONS[name].default_factory
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        var = from_env.get((name, key))
        where = (
            f"environment {var} (over {source}): [{name}] {key}"
            if var
            else f"{source}: [{name}] {key}"
        )
        if key not in known:
            if name == "sms" and isinstance(value, dict):
                extra[key] = value  # [sms.kannel] etc.: gateway settings
                continue
            origin = f"environment {var} (over {source})" if var else source
            raise ConfigError(
                f"{origin}: unknown key [{name}] {key!r}; known keys: {', '.join(sorted(known))}"
            )
        values[key] = _coerce(value, hints[key], where)
    if extra:
        merged = dict(values.get("settings", {}))
        merged.update(extra)
        values["settings"] = merged
    return cls(**values)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (argument, then COMMHUB_CONFIG, then the default), apply env overrides."""
    env = os.environ if environ is None else environ
    chosen = path or env.get("COMMHUB_CONFIG") or None
    file = Path(chosen) if chosen else DEFAULT_PATH
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{file}: not valid TOML: {err}") from err
        except OSError as err:
            raise ConfigError(f"{file}: cannot be read: {err.strerror}") from err
        source = str(file)
    elif chosen:
        raise ConfigError(f"{file}: configuration file not found")
    else:
        source = "<defaults>"

    for section in data:
        if section not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; known: {', '.join(sorted(_SECTIONS))}"
            )
        if not isinstance(data[section], dict):
            raise ConfigError(f"{source}: [{section}] must be a table")

    from_env: dict[tuple[str, str], str] = {}
    for key, value in env.items():
        match = _ENV_RE.match(key)
        if not match:
            continue
        section, name = match.group(1).lower(), match.group(2).lower()
        if section not in _SECTIONS:
            if key != "COMMHUB_CONFIG":
                raise ConfigError(f"environment {key}: unknown section {section!r}")
            continue
        gateway, _, rest = name.partition("_")
        if section == "sms" and gateway in SMS_GATEWAY_TABLES and rest:
            # COMMHUB_SMS_KANNEL_PASSWORD → [sms.kannel] password: secrets of gateway tables.
            table = data.setdefault("sms", {}).setdefault(gateway, {})
            table[rest] = value
            continue
        data.setdefault(section, {})[name] = value
        from_env[(section, name)] = key

    sections = {
        name: _build_section(name, data.get(name, {}), source, from_env) for name in _SECTIONS
    }
    config = Config(**sections, source=source)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    """Cross-field checks that a type cannot express."""
    src = config.source
    url = config.database.url
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        raise ConfigError(
            f"{src}: [database] url must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {url.split('://')[0]!r}"
        )
    if not 0 <= config.database.sqlite_thread_nice <= 19:
        raise ConfigError(
            f"{src}: [database] sqlite_thread_nice must be 0-19, "
            f"got {config.database.sqlite_thread_nice}"
        )
    if not 0 < config.web.port < 65536:
        raise ConfigError(f"{src}: [web] port must be 1-65535, got {config.web.port}")
    try:
        re.compile(config.ami.internal_extension_pattern)
    except re.error as err:
        raise ConfigError(f"{src}: [ami] internal_extension_pattern is not a regex: {err}") from err
    if config.ami.enabled and not config.ami.secret:
        raise ConfigError(f"{src}: [ami] secret is required when [ami] enabled = true")
    from hub.eventloop import CHOICES as EVENT_LOOPS

    if config.runtime.event_loop not in EVENT_LOOPS:
        raise ConfigError(f"{src}: [runtime] event_loop must be auto, uvloop or asyncio")
    for name, value in (("smtp", config.smtp.security), ("imap", config.imap.security)):
        if value not in ("none", "starttls", "tls"):
            raise ConfigError(f"{src}: [{name}] security must be none, starttls or tls")
    import phonenumbers  # local: keeps config import light

    if config.phone.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{src}: [phone] default_region {config.phone.default_region!r} is not a region code"
        )
