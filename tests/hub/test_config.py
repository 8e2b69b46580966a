"""Configuration: defaults, env overrides, and errors that name the key and the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import load_config
from hub.errors import ConfigError
from tests.conftest import ROOT

COMMHUB = str(Path(sys.executable).parent / "commhub")


def write(tmp_path: Path, text: str, name: str = "commhub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config/commhub.toml here
    config = load_config(environ={})
    assert config.source == "<defaults>"
    assert config.database.url.startswith("sqlite+aiosqlite://")
    assert config.phone.default_region == "DE"


def test_repository_config_loads():
    config = load_config(ROOT / "config" / "commhub.toml", environ={})
    assert config.source.endswith("commhub.toml")
    assert config.web.port == 8080


def test_file_values_and_env_overrides(tmp_path):
    path = write(
        tmp_path,
        '[web]\nport = 9000\n[imap]\nmailboxes = ["INBOX"]\n'
        '[sms]\ngateway = "kannel"\n[sms.kannel]\nurl = "http://127.0.0.1:13013"\n',
    )
    config = load_config(
        path,
        environ={
            "COMMHUB_WEB_PORT": "9001",
            "COMMHUB_AMI_ENABLED": "yes",
            "COMMHUB_AMI_SECRET": "s3cret",
            "COMMHUB_IMAP_MAILBOXES": "INBOX, Support",
            "COMMHUB_CAMPAIGNS_SMS_RATE_PER_SECOND": "2.5",
        },
    )
    assert config.web.port == 9001  # env beats file
    assert config.ami.enabled is True and config.ami.secret == "s3cret"
    assert config.imap.mailboxes == ("INBOX", "Support")
    assert config.campaigns.sms_rate_per_second == 2.5
    assert config.sms.settings["kannel"] == {"url": "http://127.0.0.1:13013"}
    assert config.source == str(path)


def test_config_env_var_chooses_the_file(tmp_path):
    path = write(tmp_path, "[web]\nport = 9100\n")
    assert load_config(environ={"COMMHUB_CONFIG": str(path)}).web.port == 9100


@pytest.mark.parametrize(
    ("toml", "environ", "expected"),
    [
        ("[wbe]\nport = 1\n", {}, "unknown section [wbe]"),
        ("[web]\nprot = 1\n", {}, "unknown key [web] 'prot'"),
        ('[web]\nport = "eighty"\n', {}, "[web] port: expected a whole number, got 'eighty'"),
        ("[web]\nport = 70000\n", {}, "[web] port must be 1-65535"),
        ("web = 1\n", {}, "[web] must be a table"),
        (
            "[web]\nport = 8080\n",
            {"COMMHUB_WEB_PORT": "abc"},
            "[web] port: expected a whole number",
        ),
        ("", {"COMMHUB_AMI_ENABLED": "maybe"}, "[ami] enabled: expected true or false"),
        ("", {"COMMHUB_SMTP_TIMEOUT": "soon"}, "[smtp] timeout: expected a number"),
        ("", {"COMMHUB_AMI_ENABLED": "true"}, "[ami] secret is required"),
        ("", {"COMMHUB_PHONE_DEFAULT_REGION": "XX"}, "[phone] default_region 'XX'"),
        ("", {"COMMHUB_DATABASE_URL": "mysql://x/y"}, "[database] url must start with"),
        ("", {"COMMHUB_IMAP_SECURITY": "ssl"}, "[imap] security must be none, starttls or tls"),
        ('[runtime]\nevent_loop = "fast"\n', {}, "[runtime] event_loop must be auto, uvloop"),
        (
            '[ami]\ninternal_extension_pattern = "("\n',
            {},
            "internal_extension_pattern is not a regex",
        ),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path, toml, environ, expected):
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message


def test_unknown_env_section_is_refused():
    with pytest.raises(ConfigError, match="COMMHUB_WBE_PORT: unknown section 'wbe'"):
        load_config(environ={"COMMHUB_WBE_PORT": "1"})


def test_missing_file_named_explicitly(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: configuration file not found"):
        load_config(missing, environ={})
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(environ={"COMMHUB_CONFIG": str(missing)})


def test_bad_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, '[web]\nport = 8080\nhost = "unterminated\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert f"{path}: not valid TOML" in str(caught.value)
    assert "line 3" in str(caught.value)


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    return subprocess.run(
        [COMMHUB, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[web]\nprot = 1\n", "unknown key [web] 'prot'"),
        ("[web\n", "not valid TOML"),
        ('[database]\nurl = "mysql://x"\n', "[database] url must start with"),
    ],
)
def test_cli_prints_config_errors_without_traceback(tmp_path, toml, expected):
    bad = write(tmp_path, toml, "bad.toml")
    result = _cli("--config", str(bad), "migrate", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("commhub: ")
    assert str(bad) in result.stderr and expected in result.stderr


def test_cli_missing_config_file_and_bad_env(tmp_path):
    result = _cli("--config", str(tmp_path / "missing.toml"), "migrate", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.toml: configuration file not found" in result.stderr
    assert "Traceback" not in result.stderr
    good = write(tmp_path, f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/x.db"\n')
    result = _cli("--config", str(good), "migrate", cwd=tmp_path, env={"COMMHUB_WEB_PORT": "http"})
    assert result.returncode == 2
    assert "[web] port: expected a whole number, got 'http'" in result.stderr
    assert "Traceback" not in result.stderr
