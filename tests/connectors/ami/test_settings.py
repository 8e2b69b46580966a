"""AmiSettings validation and the backoff formula (pure logic)."""

from __future__ import annotations

import pytest

from connectors.ami import AmiSettings
from connectors.ami.client import backoff_delay
from hub.errors import ConfigError


def test_from_config_converts_and_ignores_other_keys() -> None:
    settings = AmiSettings.from_config(
        {
            "host": "pbx.example",
            "port": "5038",  # environment overrides arrive as text
            "username": "hub",
            "secret": "s3cret",
            "ping_interval": "2.5",
            "originate_channel": "PJSIP/{extension}",
        }
    )
    assert settings.port == 5038 and settings.ping_interval == 2.5
    assert settings.address == "pbx.example:5038"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "change",
    [
        {"secret": ""},
        {"secret": "a\r\nAction: Logoff"},
        {"ping_timeout": 0},
        {"reconnect_max": 0.1, "reconnect_min": 1.0},
        {"event_queue_size": 0},
    ],
)
def test_bad_settings_are_config_errors(change: dict[str, object]) -> None:
    values: dict[str, object] = {"host": "h", "port": 5038, "username": "u", "secret": "s"}
    values.update(change)
    with pytest.raises(ConfigError):
        AmiSettings(**values)  # type: ignore[arg-type]


def test_from_config_bad_or_missing_values() -> None:
    with pytest.raises(ConfigError, match=r"ami\.port"):
        AmiSettings.from_config({"host": "h", "port": "fifty", "username": "u", "secret": "s"})
    with pytest.raises(ConfigError, match=r"ami\.secret is required"):
        AmiSettings.from_config({"host": "h", "port": 5038, "username": "u"})


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    top = [backoff_delay(n, 0.5, 30.0, lambda: 1.0) for n in range(10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff_delay(3, 0.5, 30.0, lambda: 0.25) == 1.0
    assert backoff_delay(10_000, 0.5, 30.0, lambda: 0.0) == 0.0
