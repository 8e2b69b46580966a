"""Gateway registry and wiring: names are unique, unknown names fail at start listing the known
ones, each gateway checks its own [sms.<name>] table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import connectors.sms
from connectors.sms import http_json, kannel, smpp
from hub.config import Config
from hub.errors import ConfigError
from hub.runtime import running_hub
from hub.sms.registry import GatewayContext, GatewayRegistry


def _factory(ctx: GatewayContext) -> Any:
    raise AssertionError("not built in this test")


def test_duplicate_names_are_refused() -> None:
    registry = GatewayRegistry()
    registry.register("kannel", _factory)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("kannel", _factory)
    with pytest.raises(ValueError, match="identifier"):
        registry.register("no spaces", _factory)


def test_every_gateway_module_registers_itself_once() -> None:
    registry = connectors.sms.register_all(GatewayRegistry())
    assert registry.names() == ["http", "kannel", "smpp"]
    connectors.sms.register_all(registry)  # idempotent
    clash = GatewayRegistry()
    clash.register("kannel", _factory)  # someone else took the name
    with pytest.raises(ValueError, match="kannel"):
        connectors.sms.register_all(clash)


def _with_sms(config: Config, gateway: str, settings: dict[str, Any]) -> Config:
    return replace(config, sms=replace(config.sms, gateway=gateway, settings={gateway: settings}))


async def test_unknown_gateway_fails_at_start_naming_the_known_ones(config: Config) -> None:
    with pytest.raises(ConfigError) as err:
        async with running_hub(_with_sms(config, "twilio", {})):
            pass
    assert "'twilio' is not a known SMS gateway" in str(err.value)
    assert "known: http, kannel, smpp" in str(err.value)


async def test_wiring_registers_the_configured_gateway(config: Config) -> None:
    cfg = _with_sms(config, "kannel", {"username": "commhub", "password": "pw"})
    async with running_hub(cfg) as hub:
        part = hub.part("sms")
        assert isinstance(part, kannel.KannelGateway)
        assert part.settings.dlr_url == "http://127.0.0.1:8080/hooks/sms/kannel/dlr"
    async with running_hub(config) as hub:  # gateway = "none"
        assert hub.part("sms") is None


async def test_smpp_wiring_comes_up_without_its_smsc(config: Config) -> None:
    from tests.conftest import free_port

    cfg = _with_sms(
        config, "smpp", {"system_id": "commhub", "port": free_port(), "reconnect_min": 0.05}
    )
    async with running_hub(cfg) as hub:
        part = hub.part("sms")
        assert isinstance(part, smpp.SmppGateway) and not part.bound


@pytest.mark.parametrize(
    ("gateway", "settings", "message"),
    [
        ("kannel", {}, "username is required"),
        ("kannel", {"username": "u", "pasword": "typo"}, "unknown key(s) in [sms.kannel]: pasword"),
        ("kannel", {"username": "u", "dlr_mask": "lots"}, "[sms.kannel]"),
        ("smpp", {}, "system_id is required"),
        ("smpp", {"system_id": "x", "concatenation": "glue"}, "udh, sar or payload"),
        ("smpp", {"system_id": "x", "window": "ten"}, "window"),
        ("http", {"url": "ftp://x"}, "http:// or https://"),
        ("http", {"url": "https://x", "report": {"statuses": {"ok": "great"}}}, "'great'"),
        ("http", {"url": "https://x", "method": "GET"}, "POST or PUT"),
    ],
)
def test_gateway_settings_are_checked(
    config: Config, gateway: str, settings: dict[str, Any], message: str
) -> None:
    module = {"kannel": kannel, "smpp": smpp, "http": http_json}[gateway]
    with pytest.raises(ConfigError) as err:
        module.create(GatewayContext(config=config, settings=settings))
    assert message in str(err.value)


def test_kannel_request_url_quotes_once_and_keeps_dlr_escapes(config: Config) -> None:
    gw = kannel.create(
        GatewayContext(
            config=replace(config, web=replace(config.web, base_url="https://hub.example/")),
            settings={"username": "commhub", "password": "p&w", "smsc": "FAKE"},
        )
    )
    from urllib.parse import parse_qs

    from hub.messaging.ports import OutgoingSms

    url = gw.request_url(OutgoingSms(to="+4915112345678", text="Привет & 100%", reference="r1"))
    query = parse_qs(url.raw_query_string)
    assert query["text"] == ["Привет & 100%"] and query["coding"] == ["2"]
    assert query["password"] == ["p&w"] and query["to"] == ["+4915112345678"]
    assert query["dlr-url"] == [
        "https://hub.example/hooks/sms/kannel/dlr?secret=test-webhook-secret&ref=r1"
        "&status=%d&answer=%A&ts=%T"
    ]
    latin = gw.request_url(OutgoingSms(to="+49151", text="Hi {x} €", reference="r2"))
    assert "coding" not in parse_qs(latin.raw_query_string)
