"""The shipped configuration files load: the demo defaults as they are, the production example
once its secrets are in the environment (and not before, with a message naming the key)."""

from __future__ import annotations

import pytest

from hub.config import load_config
from hub.errors import ConfigError
from tests.conftest import ROOT


def test_default_config_loads() -> None:
    config = load_config(ROOT / "config" / "commhub.toml", environ={})
    assert config.database.url.startswith("sqlite+aiosqlite://")
    assert not config.ami.enabled


def test_production_example_needs_its_secrets_from_the_environment() -> None:
    path = ROOT / "config" / "production.example.toml"
    with pytest.raises(ConfigError, match=r"production\.example\.toml: \[ami\] secret"):
        load_config(path, environ={})
    config = load_config(
        path,
        environ={
            "COMMHUB_AMI_SECRET": "s3cret",
            "COMMHUB_WEB_SECRET_KEY": "k",
            "COMMHUB_SMS_KANNEL_PASSWORD": "gw-secret",
        },
    )
    assert config.database.url.startswith("postgresql+asyncpg://")
    assert config.redis.url and config.ami.enabled and config.web.secure_cookies
    assert config.sms.gateway == "kannel"
    assert config.sms.settings["kannel"] == {
        "url": "http://kannel.internal:13013/cgi-bin/sendsms",
        "username": "commhub",
        "smsc": "",
        "password": "gw-secret",
    }


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(
        ConfigError,
        match=r"environment COMMHUB_WEB_PORT \(over .*commhub\.toml\): \[web\] port: expected a whole",
    ):
        load_config(ROOT / "config" / "commhub.toml", environ={"COMMHUB_WEB_PORT": "eighty"})
    with pytest.raises(
        ConfigError,
        match=r"environment COMMHUB_WEB_COLOUR \(over .*commhub\.toml\): unknown key \[web\] 'colour'",
    ):
        load_config(ROOT / "config" / "commhub.toml", environ={"COMMHUB_WEB_COLOUR": "blue"})
